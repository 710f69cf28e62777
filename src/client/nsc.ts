import { ApiClient } from '../api/grpc.js';
import type { DeepPartial } from '../api/codec.js';
import type { Connection, NetworkServiceRequest } from '../api/types.js';
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

  constructor(private readonly o: ClientOptions) {
    this.api = new ApiClient('networkservice.NetworkService', o.connectTo, o.transport);
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
    return {
      connection: {
        id,
        network_service: svc.service,
        labels,
        path: { index: 0, path_segments: [{ name: this.o.name, id, expires: toTimestamp(Date.now() + this.o.maxTokenLifetimeMs) }] },
      },
      mechanism_preferences: [
        {
          cls: MechanismCls.LOCAL,
          type: svc.mechanism,
          parameters: { [KernelParam.INODE_URL]: this.inodeUrl, ...(svc.ifname ? { [KernelParam.NAME]: svc.ifname } : {}) },
        },
      ],
    };
  }

  /** Signs the client's own path segment for nsmd (its SPIFFE ID as the TLS handshake showed it). */
  private async request(req: DeepPartial<NetworkServiceRequest>): Promise<Connection> {
    const metadata = await signOwnSegment(this.o.transport, this.api, req.connection!, this.o.maxTokenLifetimeMs, this.o.requestTimeoutMs);
    return this.api.unary('Request', req, { timeoutMs: this.o.requestTimeoutMs, metadata });
  }

  /**
   * Re-requests the connections when a third of the shortest remaining life on their paths has passed (as
   * upstream's client does with the path's expiries, which tokens may have made shorter than the configured
   * lifetime), so that one failed refresh still leaves time to retry.
   */
  startRefresh(): void {
    const delay = () => {
      const now = Date.now();
      const left = [...this.conns.values()].flatMap((c) => c.path?.path_segments.map((s) => fromTimestamp(s.expires) ?? Infinity) ?? []);
      const shortest = Math.min(this.o.maxTokenLifetimeMs, ...left.map((t) => t - now));
      return Math.max(100, shortest / 3);
    };
    const tick = async () => {
      for (const [id, conn] of this.conns) {
        const path = conn.path!;
        path.path_segments[0]!.expires = toTimestamp(Date.now() + this.o.maxTokenLifetimeMs);
        try {
          this.conns.set(id, await this.request({ connection: conn, mechanism_preferences: conn.mechanism ? [conn.mechanism] : [] }));
        } catch (e) {
          this.o.log.warn({ conn: id, err: messageOf(e) }, 'refresh failed; will retry');
        }
      }
      this.refreshTimer = setTimeout(() => void tick(), delay());
    };
    this.refreshTimer = setTimeout(() => void tick(), delay());
  }

  async closeAll(): Promise<void> {
    clearTimeout(this.refreshTimer);
    const results = await Promise.allSettled(
      [...this.conns.values()].map((c) => this.api.unary('Close', c, { timeoutMs: this.o.requestTimeoutMs })),
    );
    results.forEach((r, i) => {
      if (r.status === 'rejected') this.o.log.warn({ err: messageOf(r.reason) }, `close of connection ${i} failed`);
    });
    this.conns.clear();
  }

  dispose(): void {
    clearTimeout(this.refreshTimer);
    this.api.close();
    this.o.transport.close();
  }
}
