/**
 * The refresher's work on one nsm-cni record, done under the record's lock so that it never interleaves with
 * the plugin's ADD or DEL of the same attachment: refresh each connection, heal one nsmd lost while its pod
 * namespace lives, and close and forget the whole record once that namespace is gone.
 */
import { status } from '@grpc/grpc-js';
import type { ApiClient } from '../../../src/api/grpc.js';
import type { DeepPartial } from '../../../src/api/codec.js';
import { KernelParam, MechanismType, type Connection, type NetworkServiceRequest } from '../../../src/api/types.js';
import { firstRequest, refreshRequest, signedRequest } from '../../../src/client/nsc.js';
import type { Transport } from '../../../src/identity/transport.js';
import { messageOf, statusOf } from '../../../src/util/errors.js';
import type { Logger } from '../../../src/util/log.js';
import { LockBusyError, withAttachmentLock } from '../attachment-lock.js';
import { closeConnections } from '../mesh.js';
import { readAttachmentFile, removeAttachmentFile, writeAttachmentFile, type Attachment } from '../state.js';
import { namespaceState } from './records.js';

/**
 * How long to wait for a record ADD or DEL is working on. They hold it for a Request or Close round trip; a
 * record still busy after this is simply tried again soon.
 */
const LOCK_WAIT_MS = 1000;

export interface RecordRefreshOptions {
  api: ApiClient<'networkservice.NetworkService'>;
  transport: Transport;
  /** nsmd's URL, for Close. */
  connectTo: string;
  maxTokenLifetimeMs: number;
  /** Deadline of all the work on one record. */
  requestTimeoutMs: number;
  log: Logger;
}

export type RecordOutcome =
  /** Refreshed or healed; `failed` connections kept their previous state and want a retry. */
  | { kind: 'kept'; record: Attachment; failed: number }
  /** Its namespace is gone: connections closed, record removed. */
  | { kind: 'removed' }
  /** DEL removed it meanwhile. */
  | { kind: 'absent' }
  /** ADD or DEL holds it. */
  | { kind: 'busy' };

export async function refreshRecord(file: string, o: RecordRefreshOptions): Promise<RecordOutcome> {
  try {
    return await withAttachmentLock(file, LOCK_WAIT_MS, () => refreshLocked(file, o));
  } catch (e) {
    if (e instanceof LockBusyError) return { kind: 'busy' };
    throw e;
  }
}

async function refreshLocked(file: string, o: RecordRefreshOptions): Promise<RecordOutcome> {
  const log = o.log.child({ record: file });
  const att = await readAttachmentFile(file, log);
  if (!att) return { kind: 'absent' };
  const deadline = Date.now() + o.requestTimeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  if ((await namespaceState(att)) === 'gone') return forget(file, att, o, left(), log);

  let namespaceGone = false;
  const send = (req: DeepPartial<NetworkServiceRequest>) => signedRequest(o.api, o.transport, req, o.maxTokenLifetimeMs, left());
  const results = await Promise.all(
    att.connections.map(async (conn): Promise<{ conn: Connection; failed: boolean }> => {
      try {
        // A copy: signing rewrites the own segment's expiry, and a refused refresh must not leave that in the record.
        return { conn: await send(refreshRequest(structuredClone(conn), o.maxTokenLifetimeMs)), failed: false };
      } catch (e) {
        if (statusOf(e) !== status.NOT_FOUND) {
          logRefusal(log, conn, e, 'refresh');
          return { conn, failed: true };
        }
        // nsmd has lost the connection or what it led to (closed behind our back, expired, its endpoint gone),
        // or the namespace went away since the check above.
        if ((await namespaceState(att)) === 'gone') {
          namespaceGone = true;
          return { conn, failed: false };
        }
        try {
          const healed = await send(healRequest(conn, o.maxTokenLifetimeMs));
          log.info({ conn: conn.id, cause: messageOf(e), endpoint: healed.network_service_endpoint_name }, 'healed: nsmd had lost the connection, requested it again');
          return { conn: healed, failed: false };
        } catch (e2) {
          logRefusal(log, conn, e2, 'heal');
          return { conn, failed: true };
        }
      }
    }),
  );
  if (namespaceGone) return forget(file, att, o, left(), log);
  const record = { ...att, connections: results.map((r) => r.conn) };
  const failed = results.filter((r) => r.failed).length;
  if (failed < results.length) await writeAttachmentFile(file, record);
  log.debug({ connections: record.connections.map((c) => c.id), failed }, 'refreshed');
  return { kind: 'kept', record, failed };
}

/**
 * The first Request again, for a connection nsmd no longer has: the same id (so a DEL closes it as before),
 * service, labels, namespace and interface name, but none of the old path beyond the client's own segment and
 * no endpoint, so nsmd selects one afresh.
 */
function healRequest(conn: Connection, maxTokenLifetimeMs: number): DeepPartial<NetworkServiceRequest> {
  const params = conn.mechanism?.parameters ?? {};
  const ifname = params[KernelParam.NAME];
  return firstRequest({
    name: conn.path!.path_segments[0]!.name,
    id: conn.id,
    service: { service: conn.network_service, mechanism: conn.mechanism?.type ?? MechanismType.KERNEL, labels: conn.labels, ...(ifname ? { ifname } : {}) },
    inodeUrl: params[KernelParam.INODE_URL] ?? '',
    maxTokenLifetimeMs,
  });
}

/** A pod deleted without CNI DEL: nobody else will ever close these connections early or remove the record. */
async function forget(file: string, att: Attachment, o: RecordRefreshOptions, timeoutMs: number, log: Logger): Promise<RecordOutcome> {
  const outcome = await closeConnections(o.connectTo, o.transport, att.connections, timeoutMs, log);
  await removeAttachmentFile(file);
  log.info({ netns: att.netns, ...outcome }, 'pod namespace is gone (deleted without CNI DEL): closed its connections and removed the record');
  return { kind: 'removed' };
}

function logRefusal(log: Logger, conn: Connection, e: unknown, what: string): void {
  const code = statusOf(e);
  const fields = { conn: conn.id, code: status[code], err: messageOf(e) };
  if (code === status.PERMISSION_DENIED) {
    log.error(fields, `${what} refused: the refresher must run as nsm-cni's SPIFFE identity, which owns the connections`);
  } else {
    log.warn(fields, `${what} failed; will retry`);
  }
}
