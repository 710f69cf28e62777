import { ApiClient } from '../api/grpc.js';
import type { DeepPartial } from '../api/codec.js';
import type { ClientReadableStream } from '@grpc/grpc-js';
import type { Connection, ConnectionEvent, NetworkServiceRequest } from '../api/types.js';
import { KernelParam, MechanismCls } from '../api/types.js';
import { fromTimestamp, toTimestamp } from '../chain/elements/expire.js';
import { inodeUrlOf } from '../dataplane/netns.js';
import { messageOf } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { NsUrl } from './nsurl.js';
import { signOwnSegment } from '../identity/outgoing.js';
import type { Transport } from '../identity/transport.js';

export interface ClientOptions {
  /** NSM_NAME: the client's path segment name; connection ids are <name>-<i>. */
  name: string;
  connectTo: string;
  services: NsUrl[];
  /** Labels added to every request (NSM_LABELS), below the per-service ones. */
  labels: Record<string, string>;
  podName: string;
  nodeName: string;
  requestTimeoutMs: number;
  maxTokenLifetimeMs: number;
  transport: Transport;
  log: Logger;
  /** A path that opens the network namespace to request into (a CNI plugin's CNI_NETNS); default: this thread's. */
  netns?: string;
}

/** The client side of the mesh: requests each service into this process's namespace, refreshes, closes. */
export class MeshClient {
  private readonly api: ApiClient<'networkservice.NetworkService'>;
  private readonly inodeUrl: string;
  private readonly conns = new Map<string, Connection>();
  private refreshTimer: NodeJS.Timeout | undefined;
  private readonly monitorApi: ApiClient<'connection.MonitorConnection'>;
  private monitor: ClientReadableStream<ConnectionEvent> | undefined;
  private monitorRetry: NodeJS.Timeout | undefined;
  private refreshNow: (() => void) | undefined;

  constructor(private readonly o: ClientOptions) {
    this.api = new ApiClient('networkservice.NetworkService', o.connectTo, o.transport);
    this.monitorApi = new ApiClient('connection.MonitorConnection', o.connectTo, o.transport);
    this.inodeUrl = inodeUrlOf(o.netns ?? '/proc/thread-self/ns/net');
  }

  connections(): Connection[] {
    return [...this.conns.values()];
  }

  /** Requests every service in order; if one fails, the ones already made are closed, so a failed start leaves nothing behind. */
  async requestAll(): Promise<Connection[]> {
    try {
      for (let i = 0; i < this.o.services.length; i++) {
        const id = `${this.o.name}-${i}`;
        const conn = await this.request(this.initialRequest(id, this.o.services[i]!));
        this.conns.set(id, conn);
      }
    } catch (e) {
      await this.closeAll();
      throw e;
    }
    return this.connections();
  }

  private initialRequest(id: string, svc: NsUrl): DeepPartial<NetworkServiceRequest> {
    const labels: Record<string, string> = { ...this.o.labels, ...svc.labels };
    if (this.o.podName && !('podName' in labels)) labels.podName = this.o.podName;
    if (this.o.nodeName && !('nodeName' in labels)) labels.nodeName = this.o.nodeName;
    return firstRequest({ name: this.o.name, id, service: { ...svc, labels }, inodeUrl: this.inodeUrl, maxTokenLifetimeMs: this.o.maxTokenLifetimeMs });
  }

  private request(req: DeepPartial<NetworkServiceRequest>): Promise<Connection> {
    return signedRequest(this.api, this.o.transport, req, this.o.maxTokenLifetimeMs, this.o.requestTimeoutMs);
  }

  /**
   * Re-requests the connections when a third of the shortest remaining life on their paths has passed (as
   * upstream's client does with the path's expiries, which tokens may have made shorter than the configured
   * lifetime), so that one failed refresh still leaves time to retry.
   */
  startRefresh(): void {
    const delay = () => {
      const now = Date.now();
      const shortest = Math.min(this.o.maxTokenLifetimeMs, ...[...this.conns.values()].map((c) => earliestExpiry(c) - now));
      return Math.max(100, shortest / 3);
    };
    let running = false;
    let again = false;
    const tick = async () => {
      clearTimeout(this.refreshTimer);
      if (running) {
        again = true;
        return;
      }
      running = true;
      for (const [id, conn] of this.conns) {
        try {
          this.conns.set(id, await this.request(refreshRequest(conn, this.o.maxTokenLifetimeMs)));
        } catch (e) {
          this.o.log.warn({ conn: id, err: messageOf(e) }, 'refresh failed; will retry');
        }
      }
      running = false;
      if (this.refreshNow === undefined) return;
      if (again) {
        again = false;
        void tick();
        return;
      }
      this.refreshTimer = setTimeout(() => void tick(), delay());
    };
    this.refreshNow = () => void tick();
    this.refreshTimer = setTimeout(() => void tick(), delay());
    this.watchConnections();
  }

  /**
   * A connection nsmd reports DOWN (its endpoint left, a tunnel's process died) is refreshed at once rather than
   * at the next period: nsmd heals a refresh whose endpoint is gone onto another endpoint, keeping id and interface.
   */
  private watchConnections(): void {
    if (!this.refreshNow) return;
    const ids = [...this.conns.keys()];
    const stream = this.monitorApi.stream('MonitorConnections', { path_segments: ids.map((id) => ({ id })) });
    this.monitor = stream;
    stream.on('data', (e: ConnectionEvent) => {
      if (e.type !== 'UPDATE') return;
      const down = Object.values(e.connections).filter((c) => c.state === 'DOWN');
      if (down.length === 0) return;
      this.o.log.info({ conns: down.map((c) => c.path?.path_segments[0]?.id) }, 'connection DOWN; refreshing now');
      this.refreshNow?.();
    });
    stream.on('error', () => {
      // Cancelled by closeAll, or nsmd restarting: watch again while refreshing is still wanted.
      if (this.monitor !== stream || !this.refreshNow) return;
      this.monitorRetry = setTimeout(() => this.watchConnections(), 1000);
    });
  }

  private stopRefresh(): void {
    this.refreshNow = undefined;
    clearTimeout(this.refreshTimer);
    clearTimeout(this.monitorRetry);
    const m = this.monitor;
    this.monitor = undefined;
    m?.cancel();
  }

  async closeAll(): Promise<void> {
    this.stopRefresh();
    const results = await Promise.allSettled(
      [...this.conns.values()].map((c) => this.api.unary('Close', c, { timeoutMs: this.o.requestTimeoutMs })),
    );
    results.forEach((r, i) => {
      if (r.status === 'rejected') this.o.log.warn({ err: messageOf(r.reason) }, `close of connection ${i} failed`);
    });
    this.conns.clear();
  }

  dispose(): void {
    this.stopRefresh();
    this.api.close();
    this.monitorApi.close();
    this.o.transport.close();
  }
}

/**
 * The first Request for one service: only the client's own path segment (`name`, `id`), and the KERNEL
 * mechanism naming the client's namespace by inode and the interface it wants.
 */
export function firstRequest(o: { name: string; id: string; service: NsUrl; inodeUrl: string; maxTokenLifetimeMs: number }): DeepPartial<NetworkServiceRequest> {
  const svc = o.service;
  return {
    connection: {
      id: o.id,
      network_service: svc.service,
      labels: svc.labels,
      path: { index: 0, path_segments: [{ name: o.name, id: o.id, expires: toTimestamp(Date.now() + o.maxTokenLifetimeMs) }] },
    },
    mechanism_preferences: [
      {
        cls: MechanismCls.LOCAL,
        type: svc.mechanism,
        parameters: { [KernelParam.INODE_URL]: o.inodeUrl, ...(svc.ifname ? { [KernelParam.NAME]: svc.ifname } : {}) },
      },
    ],
  };
}

/**
 * The Request that refreshes `conn`, the connection as nsmd last returned it (the client's view): same id,
 * path and mechanism, the client's own segment asking for another full lifetime. Updates `conn` in place.
 */
export function refreshRequest(conn: Connection, maxTokenLifetimeMs: number): DeepPartial<NetworkServiceRequest> {
  conn.path!.path_segments[0]!.expires = toTimestamp(Date.now() + maxTokenLifetimeMs);
  return { connection: conn, mechanism_preferences: conn.mechanism ? [conn.mechanism] : [] };
}

/** Signs the client's own path segment for nsmd (its SPIFFE ID as the TLS handshake showed it) and sends the Request. */
export async function signedRequest(
  api: ApiClient<'networkservice.NetworkService'>,
  transport: Transport,
  req: DeepPartial<NetworkServiceRequest>,
  maxTokenLifetimeMs: number,
  timeoutMs: number,
): Promise<Connection> {
  const metadata = await signOwnSegment(transport, api, req.connection!, maxTokenLifetimeMs, timeoutMs);
  return api.unary('Request', req, { timeoutMs, metadata });
}

/** The earliest expiry on the connection's path: the tokens of later hops may end sooner than the client asked. */
export function earliestExpiry(conn: Connection): number {
  return Math.min(...(conn.path?.path_segments.map((s) => fromTimestamp(s.expires) ?? Infinity) ?? []));
}
