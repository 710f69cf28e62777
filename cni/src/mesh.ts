/**
 * The plugin's conversations with the node's nsmd beyond what MeshClient does: its identity, closing the
 * connections of an earlier ADD, and asking whether nsmd still has them. nsm-cni-refresher shares them.
 */
import { status } from '@grpc/grpc-js';
import { existsSync } from 'node:fs';
import { ApiClient, parseSocketUrl } from '../../src/api/grpc.js';
import type { Connection, ConnectionEvent } from '../../src/api/types.js';
import { openTransport, type Transport } from '../../src/identity/transport.js';
import { isServiceError, messageOf, statusOf } from '../../src/util/errors.js';
import type { Logger } from '../../src/util/log.js';
import type { NetConf } from './config.js';
import { CniCode, CniError } from './errors.js';

/**
 * Fails at once when nsmd's unix socket is not there (nsmd not running, or not started yet on this node):
 * otherwise the call would wait its whole deadline for a connection that cannot come.
 */
export function requireNsmdSocket(nsmSocket: string): void {
  const addr = parseSocketUrl(nsmSocket);
  if (addr.kind === 'unix' && !existsSync(addr.path!)) {
    throw new CniError(CniCode.TRY_AGAIN_LATER, `nsmd's socket ${addr.path} does not exist: is nsmd running on this node?`, 'set nsmSocket in the network configuration if nsmd listens elsewhere');
  }
}

/** An SVID from the Workload API, or plaintext when the configuration says `insecure` (labs only). */
export async function openIdentity(conf: NetConf, timeoutMs: number, log: Logger): Promise<Transport> {
  try {
    return await openTransport({ insecure: conf.insecure, workloadApi: conf.spiffeEndpointSocket, timeoutMs, component: 'nsm-cni', log });
  } catch (e) {
    // The node's SPIRE agent may still be starting: the runtime should retry the same call.
    throw new CniError(CniCode.TRY_AGAIN_LATER, messageOf(e), 'set spiffeEndpointSocket in the network configuration, or insecure: true for a lab');
  }
}

/** A failure talking to nsmd, as a CNI error: nsmd not (yet) answering is worth a retry, a refusal is not. */
export function meshFailure(e: unknown, what: string, nsmSocket: string): CniError {
  if (e instanceof CniError) return e;
  const code = statusOf(e);
  const details = isServiceError(e) ? `gRPC status ${status[code]}` : '';
  if (code === status.UNAVAILABLE || code === status.DEADLINE_EXCEEDED) {
    return new CniError(CniCode.TRY_AGAIN_LATER, `${what}: nsmd at ${nsmSocket} did not answer: ${messageOf(e)}`, details);
  }
  return new CniError(CniCode.MESH_REQUEST_FAILED, `${what}: ${messageOf(e)}`, details);
}

/** Connection ids by what Close found: closed now, already gone from nsmd, or not closed (nsmd will expire those). */
export interface CloseOutcome {
  closed: string[];
  gone: string[];
  failed: string[];
}

/** Closes each connection; one nsmd no longer knows is already closed. Failures are logged, never thrown. */
export async function closeConnections(nsmSocket: string, transport: Transport, conns: Connection[], timeoutMs: number, log: Logger): Promise<CloseOutcome> {
  const api = new ApiClient('networkservice.NetworkService', nsmSocket, transport);
  const out: CloseOutcome = { closed: [], gone: [], failed: [] };
  try {
    const results = await Promise.allSettled(conns.map((c) => api.unary('Close', c, { timeoutMs })));
    results.forEach((r, i) => {
      const id = conns[i]!.id;
      if (r.status === 'fulfilled') out.closed.push(id);
      else if (statusOf(r.reason) === status.NOT_FOUND) out.gone.push(id);
      else {
        out.failed.push(id);
        log.warn({ conn: id, err: messageOf(r.reason) }, 'close failed; nsmd will close the connection when it expires');
      }
    });
    return out;
  } finally {
    api.close();
  }
}

/**
 * nsmd's current view of one connection, looked up on the monitor stream by the plugin's own path segment
 * (its name and id), so nothing is refreshed or changed by looking. Undefined when nsmd does not have it.
 */
export async function monitoredConnection(nsmSocket: string, transport: Transport, conn: Connection, timeoutMs: number): Promise<Connection | undefined> {
  const own = conn.path?.path_segments[0];
  if (!own) return undefined;
  const api = new ApiClient('connection.MonitorConnection', nsmSocket, transport);
  const stream = api.stream('MonitorConnections', { path_segments: [{ name: own.name, id: own.id }] }, { timeoutMs });
  try {
    for await (const event of stream) {
      // The first event is the initial state transfer: everything that matches, now.
      return Object.values((event as ConnectionEvent).connections)[0];
    }
    return undefined;
  } finally {
    stream.cancel();
    api.close();
  }
}
