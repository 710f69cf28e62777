import type { Connection, NetworkServiceRequest } from '../api/types.js';
import type { Logger } from '../util/log.js';
import type { SpiffePeer } from '../identity/tls.js';

/** Who called, as the gRPC edge verified it (mutual TLS) and the path token it sent. Absent in insecure mode. */
export interface Caller {
  peer: SpiffePeer;
  token: string | undefined;
}

/**
 * State every chain carries. A chain's elements read and fill named, typed fields of the state object
 * passed to them (never a hidden context map), so what each element needs is visible in its signature.
 */
export interface BaseRequestState {
  readonly request: NetworkServiceRequest & { connection: Connection };
  /** Epoch milliseconds by which the whole Request must be answered. */
  readonly deadline: number;
  readonly log: Logger;
  /** True when this Request refreshes a connection this hop already holds. */
  refresh: boolean;
  readonly caller?: Caller;
  /** authorize: the SPIFFE ID that owns this connection (the caller that made it). */
  owner?: string;
}

export interface BaseCloseState {
  readonly connection: Connection;
  readonly deadline: number;
  readonly log: Logger;
  /** Absent when this hop closes on its own (expiry, shutdown). */
  readonly caller?: Caller;
}

export interface Chain<R extends BaseRequestState, C extends BaseCloseState> {
  request(st: R): Promise<Connection>;
  close(st: C): Promise<void>;
}

/**
 * One step of a chain. Request and Close are handled symmetrically: what Request builds, Close undoes.
 * `next` is the rest of the chain, both halves: an element whose own work fails after next.request
 * succeeded undoes the downstream with next.close.
 */
export interface Element<R extends BaseRequestState, C extends BaseCloseState> {
  readonly name: string;
  request(st: R, next: Chain<R, C>): Promise<Connection>;
  close(st: C, next: Chain<R, C>): Promise<void>;
}

/** Joins elements so that each calls the next; the last one's `next` is the tail. */
export function compose<R extends BaseRequestState, C extends BaseCloseState>(
  elements: Element<R, C>[],
  tail: Chain<R, C> = { request: async (st) => st.request.connection, close: async () => {} },
): Chain<R, C> {
  return elements.reduceRight<Chain<R, C>>(
    (next, el) => ({
      request: (st) => el.request(st, next),
      close: (st) => el.close(st, next),
    }),
    tail,
  );
}

/** Milliseconds left before the state's deadline (never negative). */
export function remaining(st: { deadline: number }): number {
  return Math.max(0, st.deadline - Date.now());
}
