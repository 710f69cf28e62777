/**
 * Network namespace identity. Upstream NSM names a namespace by `inode://<st_dev>/<st_ino>` of its nsfs
 * file, because a path (/proc/PID/ns/net) is only meaningful inside the sender's mount and PID view,
 * while dev+ino identify the namespace itself. We translate such URLs back to a path we can open.
 */
import { statSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';

/** A netns URL that is not `inode://<dev>/<ino>` with decimal numbers. */
export class BadInodeUrlError extends Error {
  readonly code = 'EBADINODEURL';
  constructor(readonly url: string, reason: string) {
    super(`bad netns inode URL ${JSON.stringify(url)}: ${reason} (expected inode://<dev>/<ino>, decimal)`);
    this.name = 'BadInodeUrlError';
  }
}

/** No path on this host opens the namespace with that dev+ino (it is gone, or lives in another PID view). */
export class NetnsNotFoundError extends Error {
  readonly code = 'ENETNSNOTFOUND';
  constructor(readonly url: string) {
    super(`no network namespace with ${url} found under /var/run/netns or /proc/*/ns/net`);
    this.name = 'NetnsNotFoundError';
  }
}

export interface NetnsId {
  /** Decimal strings: st_ino of nsfs files exceeds 2^31 and we never do arithmetic on them. */
  dev: string;
  ino: string;
}

const INODE_URL = /^inode:\/\/(\d{1,20})\/(\d{1,20})$/;

export function isInodeUrl(s: string): boolean {
  return s.startsWith('inode:');
}

export function parseInodeUrl(url: string): NetnsId {
  if (typeof url !== 'string') throw new BadInodeUrlError(String(url), 'not a string');
  if (!url.startsWith('inode://')) throw new BadInodeUrlError(url, 'scheme must be inode://');
  const m = INODE_URL.exec(url);
  if (!m) throw new BadInodeUrlError(url, 'dev and ino must be decimal numbers separated by /');
  // Strip leading zeros so ids compare equal to what stat() formats.
  return { dev: BigInt(m[1] as string).toString(), ino: BigInt(m[2] as string).toString() };
}

export function formatInodeUrl(id: NetnsId): string {
  return `inode://${id.dev}/${id.ino}`;
}

/** Identity of whatever namespace `path` opens. bigint stat because st_dev can exceed 2^53 in theory. */
export function netnsIdOf(path: string): NetnsId {
  const st = statSync(path, { bigint: true });
  return { dev: st.dev.toString(), ino: st.ino.toString() };
}

export function inodeUrlOf(path: string): string {
  return formatInodeUrl(netnsIdOf(path));
}

async function idOfAsync(path: string): Promise<string | undefined> {
  try {
    const st = await stat(path, { bigint: true });
    return `${st.dev}/${st.ino}`;
  } catch {
    return undefined; // vanished process or unmounted netns: just not a candidate
  }
}

function idOfSync(path: string): string | undefined {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}/${st.ino}`;
  } catch {
    return undefined;
  }
}

const CACHE_MAX = 4096;
const cache = new Map<string, string>();

async function scan(want: string): Promise<string | undefined> {
  // Named namespaces first: their paths stay valid while the namespace lives, unlike a PID's.
  const named = await readdir('/var/run/netns').catch(() => [] as string[]);
  for (const n of named) {
    const p = `/var/run/netns/${n}`;
    if ((await idOfAsync(p)) === want) return p;
  }
  const pids = (await readdir('/proc')).filter((d) => /^\d+$/.test(d));
  // Batches keep the miss path quick on a busy node without opening thousands of stats at once.
  for (let i = 0; i < pids.length; i += 64) {
    const batch = pids.slice(i, i + 64).map((pid) => `/proc/${pid}/ns/net`);
    const ids = await Promise.all(batch.map(idOfAsync));
    const hit = ids.indexOf(want);
    if (hit !== -1) return batch[hit];
  }
  return undefined;
}

/**
 * A path that opens the namespace named by `url`. Cached paths are re-checked with stat because PIDs
 * and netns names get reused; a stale entry falls through to a full scan.
 */
export async function resolveInodeUrl(url: string): Promise<string> {
  const id = parseInodeUrl(url);
  const want = `${id.dev}/${id.ino}`;
  const cached = cache.get(want);
  if (cached !== undefined) {
    // One stat of a /proc or /var/run/netns entry takes microseconds; done synchronously it saves a
    // thread-pool round trip on every Request.
    if (idOfSync(cached) === want) return cached;
    cache.delete(want);
  }
  const found = await scan(want);
  if (found === undefined) throw new NetnsNotFoundError(formatInodeUrl(id));
  if (cache.size >= CACHE_MAX) {
    // Map iterates in insertion order, so this drops the oldest entry; pods come and go.
    const oldest = cache.keys().next().value;
    if (oldest !== undefined) cache.delete(oldest);
  }
  cache.set(want, found);
  return found;
}

/** Accepts either a path or an inode URL wherever the data plane takes a namespace. */
export async function netnsPath(netns: string): Promise<string> {
  return isInodeUrl(netns) ? resolveInodeUrl(netns) : netns;
}
