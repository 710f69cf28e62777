/**
 * Worker-side pool of rtnetlink sockets, one per network namespace. A netlink socket talks to the
 * namespace it was created in, and the netlink package has no setns, so this thread enters the target
 * namespace just long enough to create the socket and then returns. Must only be used from the worker:
 * setns() moves the calling thread, and doing it on the main thread would move the daemon.
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { getSystemErrorName } from 'node:util';
import koffi from 'koffi';
import { createRtNetlink, type RtNetlinkSocket } from 'netlink';
import { Limiter } from './limiter.js';
import { DataplaneError, codeOf, messageOf } from './protocol.js';

const CLONE_NEWNET = 0x40000000;
// 4 MiB is rmem_max here; the default 208 KiB overflows under a few hundred queued replies.
const SOCKET_BUFFER = 4 << 20;

type SetNs = (fd: number, nstype: number) => number;

export interface NetnsHandle {
  /** `dev/ino` of the namespace: paths are aliases, this is the identity. */
  readonly key: string;
  readonly path: string;
  /** An fd on the namespace, valid while the handle is held; used for IFLA_NET_NS_FD. */
  readonly fd: number;
  request<T>(fn: (s: RtNetlinkSocket) => Promise<T>): Promise<T>;
  /** For dump requests (getLinks, getAddresses, getRoutes): waits until the socket is otherwise idle. */
  dump<T>(fn: (s: RtNetlinkSocket) => Promise<T>): Promise<T>;
  /** Runs synchronous code (e.g. sysctl writes through /proc/sys/net) with this thread inside the namespace. */
  inside<T>(fn: () => T): T;
}

interface Entry extends NetnsHandle {
  sock: RtNetlinkSocket;
  limiter: Limiter;
  users: number;
  lastUsed: number;
  dead: boolean;
}

export type PoolLog = (level: 'debug' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

export class SocketPool {
  private readonly setns: SetNs;
  private readonly selfFd: number;
  private readonly entries = new Map<string, Entry>();
  private readonly sweepTimer: NodeJS.Timeout;
  private broken: string | undefined;
  private closed = false;

  constructor(
    private readonly opts: { idleMs: number; maxInFlight: number },
    private readonly log: PoolLog,
  ) {
    this.setns = koffi.load('libc.so.6').func('int setns(int, int)') as unknown as SetNs;
    // The namespace the worker was born in, to come back to after every excursion.
    this.selfFd = openSync('/proc/thread-self/ns/net', 'r');
    this.sweepTimer = setInterval(() => this.closeIdle(), Math.max(50, Math.floor(opts.idleMs / 2)));
    this.sweepTimer.unref();
  }

  /**
   * Opens `path`, finds or creates the socket for that namespace and pins it until `release`.
   * Rejects with code ENOENT when the path does not exist and EINVAL when it is not a network namespace.
   */
  acquire(path: string): NetnsHandle {
    if (this.broken) throw new DataplaneError(this.broken, 'EIO');
    // Late continuations of cancelled calls must not reopen sockets once the worker is shutting down.
    if (this.closed) throw new DataplaneError('dataplane is closed', 'ECLOSED');
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      throw new DataplaneError(`netns ${path}: ${messageOf(err)}`, codeOf(err));
    }
    let keep = false;
    try {
      const st = fstatSync(fd, { bigint: true });
      const key = `${st.dev}/${st.ino}`;
      const hit = this.entries.get(key);
      if (hit && !hit.dead) {
        hit.users++;
        hit.lastUsed = performance.now();
        return hit;
      }
      const sock = this.openSocketIn(fd, path);
      const entry = this.makeEntry(key, path, fd, sock);
      keep = true;
      this.entries.set(key, entry);
      entry.users++;
      return entry;
    } finally {
      if (!keep) closeSync(fd);
    }
  }

  release(h: NetnsHandle): void {
    const e = h as Entry;
    e.users--;
    e.lastUsed = performance.now();
    if (e.dead && e.users === 0) this.dispose(e);
  }

  /** Closes every socket and namespace fd. Must run before the worker exits: an open socket crashes teardown. */
  closeAll(): void {
    this.closed = true;
    clearInterval(this.sweepTimer);
    for (const e of this.entries.values()) this.dispose(e);
    this.entries.clear();
  }

  openKeys(): string[] {
    return [...this.entries.keys()];
  }

  private closeIdle(): void {
    const now = performance.now();
    for (const e of this.entries.values()) {
      // An idle socket is closed so a namespace deleted by its owner is really freed (the socket pins it).
      if (e.users === 0 && now - e.lastUsed >= this.opts.idleMs) {
        this.entries.delete(e.key);
        this.dispose(e);
      }
    }
  }

  private dispose(e: Entry): void {
    if (this.entries.get(e.key) === e) this.entries.delete(e.key);
    try {
      e.sock.socket.close();
    } catch (err) {
      this.log('warn', 'closing netlink socket failed', { netns: e.path, err: messageOf(err) });
    }
    try {
      closeSync(e.fd);
    } catch {
      // already closed; nothing holds the namespace any more either way
    }
  }

  private enter(fd: number, path: string): void {
    if (this.setns(fd, CLONE_NEWNET) !== 0) {
      const errno = koffi.errno();
      const code = safeErrnoName(errno);
      const hint = code === 'EINVAL' ? ' (not a network namespace)' : '';
      throw new DataplaneError(`netns ${path}: setns: ${code}${hint}`, code, errno);
    }
  }

  private leave(): void {
    if (this.setns(this.selfFd, CLONE_NEWNET) !== 0) {
      // Staying in a foreign namespace would silently aim every later socket at it; refuse all further work.
      this.broken = `netlink worker could not return to its own netns: ${safeErrnoName(koffi.errno())}`;
      this.log('error', this.broken);
      throw new DataplaneError(this.broken, 'EIO');
    }
  }

  private openSocketIn(fd: number, path: string): RtNetlinkSocket {
    this.enter(fd, path);
    try {
      return createRtNetlink({ recvBufferSize: SOCKET_BUFFER, sendBufferSize: SOCKET_BUFFER });
    } finally {
      this.leave();
    }
  }

  private makeEntry(key: string, path: string, fd: number, sock: RtNetlinkSocket): Entry {
    const limiter = new Limiter(this.opts.maxInFlight);
    const run = <T>(fn: (s: RtNetlinkSocket) => Promise<T>, exclusive: boolean): Promise<T> =>
      limiter.run(() => {
        // Checked when the slot is granted, not when queued: the socket may have died or closed meanwhile.
        if (entry.dead || this.closed) return Promise.reject(new DataplaneError(`netlink socket for ${path} is closed`, 'ECLOSED'));
        return fn(sock);
      }, exclusive);
    const entry: Entry = {
      key,
      path,
      fd,
      sock,
      limiter,
      users: 0,
      lastUsed: performance.now(),
      dead: false,
      request: (fn) => run(fn, false),
      dump: (fn) => run(fn, true),
      inside: (fn) => {
        this.enter(fd, path);
        try {
          return fn();
        } finally {
          this.leave();
        }
      },
    };
    // Without a listener an async socket error would be thrown from the poll handler and kill the worker.
    sock.socket.on('error', (err) => {
      this.log('error', 'netlink socket error; dropping it', { netns: path, err: messageOf(err) });
      entry.dead = true;
      if (this.entries.get(key) === entry) this.entries.delete(key);
      if (entry.users === 0) this.dispose(entry);
    });
    return entry;
  }
}

function safeErrnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return `errno ${errno}`;
  }
}
