/**
 * Network namespaces for benches. Every one is named `nsmb-<4 hex>-<name>`: `nsmb-` marks it as a bench
 * namespace, the hex tag is fresh per run so concurrent runs (and the test suite's `nsmt-` ones) are left
 * alone. Each tag records its process id (and its children's) under /run/nsmesh-bench, so a later run
 * can remove what a SIGKILLed run left behind without touching a live run's.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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

/** The owner file: the run's pid on the first line, then the pids of the processes it started. */
function ownerPids(tag: string): number[] {
  try {
    return fs.readFileSync(`${OWNER_DIR}/${tag}`, 'utf8').split('\n').map(Number).filter((p) => Number.isInteger(p) && p > 0);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Only processes still running our build: a recorded pid may have been reused since. */
function killIfOurs(pid: number): void {
  try {
    if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('/dist/')) process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * Removes what runs that died without cleaning up left behind: their processes (a live nsmd would keep
 * the namespaces' veths alive through its netlink sockets), namespaces and temp directories.
 */
export async function sweepStale(): Promise<string[]> {
  const namespaces = await listNetns();
  const tags = new Set([
    ...namespaces.map((n) => /^nsmb-([0-9a-f]{4})-/.exec(n)?.[1]).filter((t): t is string => t !== undefined),
    ...(fs.existsSync(OWNER_DIR) ? fs.readdirSync(OWNER_DIR) : []),
  ]);
  const removed: string[] = [];
  for (const tag of tags) {
    const [owner, ...children] = ownerPids(tag);
    if (owner !== undefined && alive(owner)) continue;
    children.forEach(killIfOurs);
    for (const n of namespaces.filter((x) => x.startsWith(`${BENCH_PREFIX}${tag}-`))) {
      const { stdout } = await run('ip', ['netns', 'pids', n]).catch(() => ({ stdout: '' }));
      stdout.split('\n').map(Number).filter((p) => p > 0).forEach(killIfOurs);
      await run('ip', ['netns', 'del', n]).catch(() => undefined);
      removed.push(n);
    }
    for (const d of fs.readdirSync(os.tmpdir()).filter((x) => x.startsWith(`nsmesh-bench-${tag}-`))) {
      fs.rmSync(path.join(os.tmpdir(), d), { recursive: true, force: true });
    }
    fs.rmSync(`${OWNER_DIR}/${tag}`, { force: true });
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

  /** Records a child's pid so that a later run can stop it if this one is killed outright. */
  adopt(pid: number | undefined): void {
    if (pid) fs.appendFileSync(`${OWNER_DIR}/${this.tag}`, `\n${pid}`);
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
