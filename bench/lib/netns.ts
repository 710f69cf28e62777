/**
 * Network namespaces for benches. Every one is named `nsmb-<4 hex>-<name>`: `nsmb-` marks it as a bench
 * namespace, the hex tag is fresh per run so concurrent runs (and the test suite's `nsmt-` ones) are left
 * alone. Each tag records its process id under /run/nsmesh-bench, so a later run can remove what a
 * SIGKILLed run left behind without touching a live run's namespaces.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const BENCH_PREFIX = 'nsmb-';
const OWNER_DIR = '/run/nsmesh-bench';

export interface Netns {
  name: string;
  path: string;
}

async function listNetns(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  return stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n !== '');
}

function ownerAlive(tag: string): boolean {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(`${OWNER_DIR}/${tag}`, 'utf8'));
  } catch {
    return false;
  }
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes namespaces of bench runs whose process is gone; returns their names. */
export async function sweepStale(): Promise<string[]> {
  const removed: string[] = [];
  for (const n of await listNetns()) {
    const m = /^nsmb-([0-9a-f]{4})-/.exec(n);
    if (!m || ownerAlive(m[1]!)) continue;
    await run('ip', ['netns', 'del', n]).catch(() => undefined);
    removed.push(n);
  }
  if (fs.existsSync(OWNER_DIR)) {
    for (const t of fs.readdirSync(OWNER_DIR)) if (!ownerAlive(t)) fs.rmSync(`${OWNER_DIR}/${t}`, { force: true });
  }
  return removed;
}

export class BenchNamespaces {
  readonly tag = randomBytes(2).toString('hex');
  readonly prefix = `${BENCH_PREFIX}${this.tag}-`;

  constructor() {
    fs.mkdirSync(OWNER_DIR, { recursive: true });
    fs.writeFileSync(`${OWNER_DIR}/${this.tag}`, String(process.pid));
  }

  async create(name: string): Promise<Netns> {
    const full = `${this.prefix}${name}`;
    await run('ip', ['netns', 'add', full]);
    await run('ip', ['-n', full, 'link', 'set', 'lo', 'up']);
    return { name: full, path: `/var/run/netns/${full}` };
  }

  /** Deletes every namespace carrying this run's tag, including ones a crashed step created. */
  async cleanup(): Promise<string[]> {
    const ours = (await listNetns().catch(() => [] as string[])).filter((n) => n.startsWith(this.prefix));
    for (const n of ours) await run('ip', ['netns', 'del', n]).catch(() => undefined);
    fs.rmSync(`${OWNER_DIR}/${this.tag}`, { force: true });
    return ours;
  }
}

/** Interface names in `ns` other than lo. */
export async function linksIn(ns: Netns): Promise<string[]> {
  const { stdout } = await run('ip', ['-j', '-n', ns.name, 'link', 'show'], { maxBuffer: 64 << 20 });
  return (JSON.parse(stdout) as { ifname: string }[]).map((l) => l.ifname).filter((n) => n !== 'lo');
}
