import type * as grpc from '@grpc/grpc-js';
import { unary } from '../api/grpc.js';
import type { Connection, Empty, NetworkServiceRequest } from '../api/types.js';
import { validateRequest } from '../api/validate.js';
import type { Chain } from '../chain/types.js';
import { deadlineExceeded, notFound } from '../util/errors.js';
import { TurnGate } from '../util/turn-gate.js';
import type { Logger } from '../util/log.js';
import type { ConnectionStore } from './connection-store.js';
import type { Transport } from '../identity/transport.js';
import { callerOf } from '../identity/caller.js';
import type { NsmdCloseState, NsmdRequestState } from './chain/state.js';

export interface NetworkServiceServerOptions {
  chain: Chain<NsmdRequestState, NsmdCloseState>;
  store: ConnectionStore;
  requestTimeoutMs: number;
  transport: Transport;
  log: Logger;
}

/**
 * Request chains started per turn of the event loop. Each does ≈0.5 ms of synchronous work before its first
 * wait; a burst of a thousand started together would hold the loop for half a second, so the rest start in
 * the next turns, in arrival order, keeping their deadlines.
 */
const STARTS_PER_TURN = 32;

/** The gRPC edge of networkservice.NetworkService: validates, applies a deadline, runs the chain. */
export function networkServiceHandlers(o: NetworkServiceServerOptions): grpc.UntypedServiceImplementation {
  const admission = new TurnGate(STARTS_PER_TURN);
  return {
    Request: unary<NetworkServiceRequest, Connection>(async (req, call) => {
      validateRequest(req);
      const deadline = Math.min(Date.now() + o.requestTimeoutMs, deadlineOf(call));
      const log = o.log.child({ conn: req.connection.id, service: req.connection.network_service });
      const caller = callerOf(o.transport, call as grpc.ServerUnaryCall<unknown, unknown>);
      await admission.enter();
      if (Date.now() >= deadline) throw deadlineExceeded(`Request ${req.connection.id} waited past its deadline to start (a burst of Requests is started ${STARTS_PER_TURN} at a time)`);
      const conn = await o.chain.request({ request: req, deadline, log, refresh: false, ...(caller ? { caller } : {}) });
      log.debug({ endpoint: conn.network_service_endpoint_name }, 'connected');
      return conn;
    }),
    Close: unary<Connection, Empty>(async (conn, call) => {
      const record = o.store.lookup(conn);
      if (!record) throw notFound(`no connection with id "${conn.id}" is known to this nsmd (already closed or expired?)`);
      const deadline = Math.min(Date.now() + o.requestTimeoutMs, deadlineOf(call));
      const caller = callerOf(o.transport, call as grpc.ServerUnaryCall<unknown, unknown>);
      await o.chain.close({ connection: conn, record, deadline, log: o.log.child({ conn: record.id }), ...(caller ? { caller } : {}) });
      return {};
    }),
  };
}

function deadlineOf(call: grpc.ServerUnaryCall<unknown, unknown>): number {
  const d = call.getDeadline();
  if (d instanceof Date) return d.getTime();
  return Number.isFinite(d) && d > 0 ? d : Infinity;
}
