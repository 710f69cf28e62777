/**
 * One writer at a time per attachment record: nsm-cni's ADD and DEL and nsm-cni-refresher all read a record,
 * talk to nsmd about its connections and then rewrite or remove it. Without a lock a refresh that started
 * before a DEL could re-create the connections DEL had just closed, and write the record back after DEL
 * removed it. The lock is flock(2) on `<record>.lock`: the kernel drops it when its holder dies, so a plugin
 * killed by the runtime's timeout never leaves an attachment locked.
 */
import fs from 'node:fs';
import path from 'node:path';
import koffi from 'koffi';

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;
/** How often a busy lock is tried again; holders keep it for one Request or Close round trip, a few ms. */
const RETRY_MS = 10;

type Flock = (fd: number, operation: number) => number;
let flock: Flock | undefined;

export class LockBusyError extends Error {}

function tryLock(fd: number, lockPath: string): boolean {
  flock ??= koffi.load('libc.so.6').func('int flock(int, int)') as unknown as Flock;
  if (flock(fd, LOCK_EX | LOCK_NB) === 0) return true;
  const errno = koffi.errno();
  if (errno === EWOULDBLOCK) return false;
  throw new Error(`flock ${lockPath}: errno ${errno}`);
}

/**
 * Runs `fn` holding the lock of the record `file`, waiting at most `timeoutMs` for it (LockBusyError after).
 * The holder removes the lock file before letting go, so nothing but records stays in dataDir; a waiter that
 * then wins the lock of the removed file notices and locks the current one instead.
 */
export async function withAttachmentLock<T>(file: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  const lockPath = `${file}.lock`;
  const deadline = Date.now() + timeoutMs;
  await fs.promises.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  for (;;) {
    const fh = await fs.promises.open(lockPath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    try {
      while (!tryLock(fh.fd, lockPath)) {
        if (Date.now() >= deadline) throw new LockBusyError(`${file} stayed locked by another nsm-cni or nsm-cni-refresher for ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, RETRY_MS));
      }
      const mine = await fh.stat();
      const current = await fs.promises.stat(lockPath).catch(() => undefined);
      if (current?.ino !== mine.ino || current.dev !== mine.dev) continue;
      try {
        return await fn();
      } finally {
        await fs.promises.rm(lockPath, { force: true });
      }
    } finally {
      // Closing the last descriptor releases the flock.
      await fh.close();
    }
  }
}
