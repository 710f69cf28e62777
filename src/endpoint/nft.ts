import { execa } from 'execa';

const NFT_TIMEOUT_MS = 5000;

/** nft in this process's namespace, or — for tests and demos that look from outside — in a named one. */
async function nft(args: string[], o: { netns?: string; input?: string } = {}): Promise<string> {
  const cmd = o.netns ? ['ip', ['netns', 'exec', o.netns, 'nft', ...args]] as const : ['nft', args] as const;
  const r = await execa(cmd[0], [...cmd[1]], { reject: false, timeout: NFT_TIMEOUT_MS, ...(o.input !== undefined ? { input: o.input } : { stdin: 'ignore' as const }) });
  if (r.exitCode !== 0 || r.timedOut) {
    const why = r.timedOut ? `took over ${NFT_TIMEOUT_MS} ms` : String(r.stderr).trim() || `exit code ${r.exitCode}`;
    throw new Error(`nft ${args.join(' ')}: ${why}`);
  }
  return String(r.stdout);
}

/**
 * Replaces one table atomically: creating it first makes the delete valid on a first run, and nft applies the
 * whole file as one transaction, so no packet ever sees the table missing or half written.
 */
export async function replaceNftTable(family: string, table: string, body: string, o: { netns?: string } = {}): Promise<void> {
  await nft(['-f', '-'], { ...o, input: `table ${family} ${table} {\n}\ndelete table ${family} ${table}\ntable ${family} ${table} {\n${body}}\n` });
}

export interface NftCounter {
  name: string;
  packets: number;
  bytes: number;
}

/** The named counters of a table. */
export async function readNftCounters(family: string, table: string, o: { netns?: string } = {}): Promise<NftCounter[]> {
  const out = JSON.parse(await nft(['-j', 'list', 'counters', 'table', family, table], o)) as { nftables: { counter?: NftCounter }[] };
  return out.nftables.flatMap((e) => (e.counter ? [{ name: e.counter.name, packets: e.counter.packets, bytes: e.counter.bytes }] : []));
}
