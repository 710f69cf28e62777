/**
 * Network namespaces for integration tests (run as root).
 *
 * Every namespace is named `nsmt-<tag>-<name>`: `nsmt-` marks it as an nsmesh test namespace so stale
 * ones can be found, and `tag` (t + 4 hex, fresh per test file) keeps concurrent runs apart. Interface
 * names should embed `tag` too (`${tag}c0` is 7 characters, well under the 15 limit).
 *
 * Importing this module registers an afterAll that deletes this file's namespaces, failed tests or not.
 * sweepStale() removes namespaces left by earlier runs that died, and never those of a live run: each
 * tag records its process id under /run/nsmesh-test.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execa, type Result } from 'execa';
import { afterAll } from 'vitest';

export const TEST_PREFIX = 'nsmt-';
export const tag = `t${randomBytes(2).toString('hex')}`;

const OWNER_DIR = '/run/nsmesh-test';
mkdirSync(OWNER_DIR, { recursive: true });
writeFileSync(`${OWNER_DIR}/${tag}`, String(process.pid));

export interface Netns {
  /** Name as `ip netns` knows it. */
  name: string;
  /** Path that opens it, as the Dataplane takes it. */
  path: string;
}

const mine = new Set<string>();

function nsOf(ns: Netns | string): string {
  return typeof ns === 'string' ? ns : ns.name;
}

export async function createNetns(name: string): Promise<Netns> {
  const full = `${TEST_PREFIX}${tag}-${name}`;
  await execa('ip', ['netns', 'add', full]);
  mine.add(full);
  await execa('ip', ['-n', full, 'link', 'set', 'lo', 'up']);
  return { name: full, path: `/var/run/netns/${full}` };
}

export async function deleteNetns(ns: Netns | string): Promise<void> {
  const name = nsOf(ns);
  await execa('ip', ['netns', 'del', name], { reject: false });
  mine.delete(name);
}

/** Runs `cmd` inside the namespace; rejects on a non-zero exit unless `reject: false`. */
export async function execIn(ns: Netns | string, cmd: string[], opts: { reject?: boolean } = {}): Promise<Result> {
  const [file, ...args] = cmd;
  if (!file) throw new Error('execIn: empty command');
  return execa('ip', ['netns', 'exec', nsOf(ns), file, ...args], { reject: opts.reject ?? true });
}

/** One echo request with a 2 s deadline; true when a reply came back. */
export async function ping(fromNs: Netns | string, addr: string): Promise<boolean> {
  const v6 = addr.includes(':');
  const r = await execIn(fromNs, ['ping', v6 ? '-6' : '-4', '-c', '1', '-W', '2', '-q', addr], { reject: false });
  return r.exitCode === 0;
}

async function listNetns(): Promise<string[]> {
  const r = await execa('ip', ['netns', 'list'], { reject: false });
  return String(r.stdout)
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n !== '');
}

/** Deletes every namespace this file's tag created, including ones created outside createNetns. */
export async function cleanupNetns(): Promise<void> {
  const ours = (await listNetns()).filter((n) => n.startsWith(`${TEST_PREFIX}${tag}-`));
  for (const n of new Set([...ours, ...mine])) await deleteNetns(n);
  rmSync(`${OWNER_DIR}/${tag}`, { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function ownerAlive(t: string): boolean {
  try {
    const pid = Number(readFileSync(`${OWNER_DIR}/${t}`, 'utf8'));
    return Number.isInteger(pid) && pid > 0 && alive(pid);
  } catch {
    return false;
  }
}

/** Removes test namespaces whose run is over (its process is gone); returns their names. */
export async function sweepStale(): Promise<string[]> {
  const removed: string[] = [];
  for (const n of await listNetns()) {
    const m = new RegExp(`^${TEST_PREFIX}(t[0-9a-f]{4})-`).exec(n);
    if (!m || m[1] === tag || ownerAlive(m[1] as string)) continue;
    await execa('ip', ['netns', 'del', n], { reject: false });
    removed.push(n);
  }
  for (const t of readdirSync(OWNER_DIR)) {
    if (t !== tag && !ownerAlive(t)) rmSync(`${OWNER_DIR}/${t}`, { force: true });
  }
  return removed;
}

afterAll(cleanupNetns);
