/**
 * Messages between the main thread and the netlink worker. Errors cross as plain data because structured
 * clone drops custom properties such as `code`; the main side rebuilds a DataplaneError from them.
 */
import { getSystemErrorName } from 'node:util';
import type { NetnsSnapshot, VethSpec, VxlanEnd } from '../types.js';

export interface OwnedLink {
  ifname: string;
  index: number;
  connId: string;
}

export type Call =
  | { op: 'createVeth'; spec: VethSpec }
  | { op: 'deleteVeth'; netns: string; ifname: string }
  | { op: 'linkExists'; netns: string; ifname: string }
  | { op: 'snapshot'; netns: string }
  | { op: 'listOwned'; netns: string }
  | { op: 'deleteLinks'; netns: string; links: Array<{ ifname: string; index: number }> }
  | { op: 'createVxlan'; spec: VxlanEnd }
  | { op: 'deleteVxlan'; netns: string; ifname: string }
  | { op: 'underlayMtu'; netns: string; ip: string }
  | { op: 'stats' }
  | { op: 'close' };

export interface Results {
  createVeth: void;
  deleteVeth: void;
  linkExists: boolean;
  snapshot: NetnsSnapshot;
  listOwned: OwnedLink[];
  deleteLinks: string[];
  createVxlan: void;
  deleteVxlan: void;
  underlayMtu: number;
  stats: WorkerStats;
  close: void;
}

export interface WorkerStats {
  /** Namespace keys (`dev/ino`) that currently have an open netlink socket. */
  openSockets: string[];
}

export type Request = Call & { id: number };

/**
 * Sent from the main thread's process 'exit' handler, which cannot await: the worker closes its sockets
 * and flips `exitFlag` while the main thread blocks in Atomics.wait. An exiting process that tears down
 * a worker with an open netlink socket segfaults.
 */
export interface ExitNow {
  op: 'exitNow';
}

export interface WireError {
  name: string;
  message: string;
  code: string;
  errno?: number;
}

export type WorkerMessage =
  | { kind: 'ready' }
  | { kind: 'reply'; id: number; ok: true; value: unknown }
  | { kind: 'reply'; id: number; ok: false; error: WireError }
  | { kind: 'log'; level: 'debug' | 'info' | 'warn' | 'error'; msg: string; fields?: Record<string, unknown> };

export interface WorkerConfig {
  socketIdleMs: number;
  maxInFlight: number;
  /** Int32 slot set to 1 by the worker once its sockets are closed after ExitNow. */
  exitFlag: SharedArrayBuffer;
}

/** What every data plane rejection is: `code` is an errno name (EEXIST, ENOENT, …) or EINVAL for bad specs. */
export class DataplaneError extends Error {
  readonly code: string;
  readonly errno: number | undefined;
  constructor(message: string, code: string, errno?: number) {
    super(message);
    this.name = 'DataplaneError';
    this.code = code;
    this.errno = errno;
  }
}

/** The netlink package only says "Request rejected: EEXIST"; recover the errno name from that. */
export function codeOf(err: unknown): string {
  if (err && typeof err === 'object') {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && code !== '') return code;
    const msg = (err as { message?: unknown }).message;
    if (typeof msg === 'string') {
      const m = /Request rejected: (E[A-Z0-9]+|-?\d+)/.exec(msg);
      if (m) {
        const c = m[1] as string;
        if (/^-?\d+$/.test(c)) {
          try {
            return getSystemErrorName(-Math.abs(Number(c)));
          } catch {
            return 'EUNKNOWN';
          }
        }
        return c;
      }
    }
  }
  return 'EUNKNOWN';
}

export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

export function toWire(err: unknown): WireError {
  if (err instanceof DataplaneError) {
    return { name: err.name, message: err.message, code: err.code, ...(err.errno !== undefined ? { errno: err.errno } : {}) };
  }
  const errno = err && typeof err === 'object' ? (err as { errno?: unknown }).errno : undefined;
  return {
    name: err instanceof Error ? err.name : 'Error',
    message: messageOf(err),
    code: codeOf(err),
    ...(typeof errno === 'number' ? { errno } : {}),
  };
}

export function fromWire(w: WireError): DataplaneError {
  const e = new DataplaneError(w.message, w.code, w.errno);
  return e;
}
