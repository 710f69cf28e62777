import { createHash } from 'node:crypto';
import type { ClientReadableStream } from '@grpc/grpc-js';
import { ApiClient } from '../api/grpc.js';
import type { DeepPartial } from '../api/codec.js';
import { KernelParam, MechanismCls, MechanismType, type Connection, type ConnectionEvent, type NetworkServiceRequest } from '../api/types.js';
import { remaining } from '../chain/types.js';
import { inodeUrlOf } from '../dataplane/netns.js';
import { signOwnSegment } from '../identity/outgoing.js';
import type { Transport } from '../identity/transport.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { messageOf, statusOf, status, unavailable } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { EndpointControl, EndpointElement } from './endpoint.js';
import { hostPrefix, routesOutside } from './prefixes.js';

export interface PassthroughOptions {
  /** This endpoint's name: its path segment, by which it watches its onward connections on nsmd's monitor. */
  name: string;
  /** nsmd's local API, where onward Requests go. */
  connectTo: string;
  transport: Transport;
  /** Labels of each onward Request: what the network service's source selectors see. */
  labels: Record<string, string>;
  /** Start of the onward interfaces' names (1–6 characters [a-z0-9]), distinct from the client-facing ones. */
  interfacePrefix: string;
  /** Prefixes this endpoint uses itself (its client-facing addresses): the next hop must hand out none that overlap. */
  ownPrefixes: string[];
  maxTokenLifetimeMs: number;
  log: Logger;
}

/** The onward side of one client connection. */
export interface OnwardLink {
  /** The onward connection as nsmd returned it (at this endpoint's path index). */
  connection: Connection;
  /** nsmd's segment id of the onward connection: the id nsmd's monitor reports it under. */
  nsmdId: string;
  /** This endpoint's end of the onward link. */
  ifname: string;
  /** The next hop's addresses on the onward link. */
  peerAddrs: string[];
  /** Prefixes reachable through the onward link for this client (outside the client's excluded prefixes). */
  prefixes: string[];
}

const RETRY_MS = 1000;
const CLOSE_TIMEOUT_MS = 5000;

/**
 * A passthrough hop (a firewall, say): for each client connection it requests a network service onward
 * from nsmd, continuing the client's Connection.path — it presents the incoming path plus its own segment,
 * signed for nsmd — so nsmd authorises the onward Request by the client's path and the client's
 * connection lists every hop: client → nsmd → this endpoint → nsmd → next endpoint. Closing either side
 * closes the other: a Close from the client closes the onward connection; an onward connection that nsmd
 * deletes (its endpoint went away, it expired) closes the client's; DOWN and UP are passed back as they come.
 *
 * Several clients share this endpoint's namespace, where nsmd installs each onward connection's routes. A
 * route to the same prefix through a second onward link would clash with the first, so the onward
 * Request excludes the prefixes already routed here; what the next hop then leaves out is still reachable
 * through it, and the link records those prefixes for the endpoint to route per client.
 */
export class Passthrough {
  private readonly api: ApiClient<'networkservice.NetworkService'>;
  private readonly monitorApi: ApiClient<'connection.MonitorConnection'>;
  private readonly inodeUrl = inodeUrlOf('/proc/self/ns/net');
  /** By the client connection's id at this endpoint (its segment id). */
  private readonly links = new Map<string, OnwardLink>();
  /** Prefixes nsmd routed in this namespace through an onward link, and the client connection that owns it. */
  private readonly routedHere = new Map<string, string>();
  /** Prefixes each next-hop endpoint handed out, by endpoint name. */
  private readonly handedBy = new Map<string, Set<string>>();
  /** Initial onward Requests one at a time: each must see the routes the previous one installed. */
  private readonly onwardMutex = new KeyedMutex();
  private control: EndpointControl | undefined;
  private stream: ClientReadableStream<ConnectionEvent> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly o: PassthroughOptions) {
    this.api = new ApiClient('networkservice.NetworkService', o.connectTo, o.transport);
    this.monitorApi = new ApiClient('connection.MonitorConnection', o.connectTo, o.transport);
  }

  linkOf(id: string): OnwardLink | undefined {
    return this.links.get(id);
  }

  element(control: EndpointControl): EndpointElement {
    this.control = control;
    return {
      name: 'passthrough',
      request: async (st, next) => {
        const conn = st.request.connection;
        const prev = this.links.get(conn.id);
        const link = prev ? await this.refresh(conn, prev, st) : await this.onwardMutex.run('onward', () => this.establish(conn, st));
        const index = conn.path!.index;
        // The client sees the whole chain: its path continues with the onward connection's hops.
        conn.path!.path_segments = [...conn.path!.path_segments.slice(0, index + 1), ...link.connection.path!.path_segments.slice(index + 1)];
        try {
          return await next.request(st);
        } catch (e) {
          if (!prev) await this.closeOnward(conn.id, st.log);
          throw e;
        }
      },
      close: async (st, next) => {
        // Independent of each other: the onward Close (a veth delete on nsmd's side) need not hold up this side's.
        const [, own] = await Promise.allSettled([this.closeOnward(st.record.id, st.log), next.close(st)]);
        if (own.status === 'rejected') throw own.reason;
      },
    };
  }

  private onwardIfname(id: string): string {
    const p = this.o.interfacePrefix;
    return p + createHash('sha256').update(id).digest('hex').slice(0, 14 - p.length);
  }

  private async establish(conn: Connection, st: Parameters<EndpointElement['request']>[0]): Promise<OnwardLink> {
    const ip = conn.context!.ip_context!;
    const routedElsewhere = [...this.routedHere.keys()];
    const req: DeepPartial<NetworkServiceRequest> = {
      connection: {
        id: conn.id,
        network_service: conn.network_service,
        labels: this.o.labels,
        payload: conn.payload,
        path: structuredClone(conn.path!),
        context: {
          ip_context: {
            excluded_prefixes: [...new Set([...ip.excluded_prefixes, ...this.o.ownPrefixes, ...routedElsewhere])],
            // The next hop routes the client's addresses back through this endpoint.
            dst_routes: ip.src_ip_addrs.map((a) => ({ prefix: hostPrefix(a), nextHop: '' })),
          },
        },
      },
      mechanism_preferences: [
        { cls: MechanismCls.LOCAL, type: MechanismType.KERNEL, parameters: { [KernelParam.NAME]: this.onwardIfname(conn.id), [KernelParam.INODE_URL]: this.inodeUrl } },
      ],
    };
    let res: Connection;
    try {
      res = await this.send(req, st);
    } catch (e) {
      throw unavailable(`the onward request for "${conn.network_service}" (labels ${JSON.stringify(this.o.labels)}) failed: ${messageOf(e)}`);
    }
    const link = this.linkFrom(res, ip.excluded_prefixes, routedElsewhere);
    for (const p of answeredPrefixes(res)) this.routedHere.set(p, conn.id);
    this.links.set(conn.id, link);
    this.watch();
    st.log.info({ onward: link.connection.network_service_endpoint_name, ifname: link.ifname, prefixes: link.prefixes }, 'onward connection up');
    return link;
  }

  private async refresh(conn: Connection, prev: OnwardLink, st: Parameters<EndpointElement['request']>[0]): Promise<OnwardLink> {
    const index = conn.path!.index;
    const path = structuredClone(conn.path!);
    // nsmd knows the onward connection by the segments after ours, as it returned them.
    path.path_segments = [...path.path_segments.slice(0, index + 1), ...prev.connection.path!.path_segments.slice(index + 1)];
    const res = await this.send(
      { connection: { ...prev.connection, path }, mechanism_preferences: prev.connection.mechanism ? [prev.connection.mechanism] : [] },
      st,
    );
    const link = { ...prev, connection: res };
    this.links.set(conn.id, link);
    return link;
  }

  private async send(req: DeepPartial<NetworkServiceRequest>, st: { deadline: number }): Promise<Connection> {
    const metadata = await signOwnSegment(this.o.transport, this.api, req.connection!, this.o.maxTokenLifetimeMs, remaining(st));
    return this.api.unary('Request', req, { timeoutMs: remaining(st), metadata });
  }

  /** What the onward answer means here: nsmd's segment, the link's ends, and the prefixes behind it. */
  private linkFrom(res: Connection, clientExcluded: string[], routedElsewhere: string[]): OnwardLink {
    const index = res.path!.index;
    const handed = answeredPrefixes(res);
    const endpoint = res.network_service_endpoint_name;
    const known = this.handedBy.get(endpoint) ?? new Set<string>();
    for (const p of handed) known.add(p);
    this.handedBy.set(endpoint, known);
    // Prefixes this Request excluded only because another link routes them: the same endpoint serves them here too.
    const alsoBehind = routedElsewhere.filter((p) => known.has(p));
    return {
      connection: res,
      nsmdId: res.path!.path_segments[index + 1]?.id ?? '',
      ifname: res.mechanism?.parameters[KernelParam.NAME] ?? this.onwardIfname(res.id),
      peerAddrs: res.context?.ip_context?.dst_ip_addrs ?? [],
      prefixes: routesOutside([...new Set([...handed, ...alsoBehind])], clientExcluded).handed,
    };
  }

  private async closeOnward(id: string, log: Logger): Promise<void> {
    const link = this.links.get(id);
    if (!link) return;
    this.forget(id);
    try {
      await this.api.unary('Close', link.connection, { timeoutMs: CLOSE_TIMEOUT_MS });
    } catch (e) {
      // Already gone on nsmd's side (it told us so, or it expired there): nothing left to close.
      if (statusOf(e) !== status.NOT_FOUND) log.warn({ err: messageOf(e) }, 'closing the onward connection failed; it ends at its expiry');
    }
  }

  private forget(id: string): void {
    this.links.delete(id);
    for (const [p, owner] of this.routedHere) if (owner === id) this.routedHere.delete(p);
  }

  /** Follows the onward connections on nsmd's monitor, from the first one on, reconnecting when the stream breaks. */
  private watch(): void {
    if (this.stream || this.stopped || this.retry) return;
    const stream = this.monitorApi.stream('MonitorConnections', { path_segments: [{ name: this.o.name }] });
    this.stream = stream;
    stream.on('data', (e: ConnectionEvent) => this.onEvent(e));
    const broken = (why: string) => {
      if (this.stream !== stream || this.stopped) return;
      this.stream = undefined;
      this.o.log.warn({ err: why, connections: this.links.size }, "lost nsmd's monitor stream; the client connections are DOWN until it is back");
      for (const id of this.links.keys()) this.control?.setState(id, 'DOWN');
      this.retry = setTimeout(() => {
        this.retry = undefined;
        if (this.links.size) this.watch();
      }, RETRY_MS);
    };
    stream.on('error', (e: unknown) => broken(messageOf(e)));
    stream.on('end', () => broken('stream ended'));
  }

  private onEvent(e: ConnectionEvent): void {
    for (const c of Object.values(e.connections)) {
      const id = [...this.links].find(([, l]) => l.nsmdId === c.id)?.[0];
      if (id === undefined) continue;
      if (e.type === 'DELETE') {
        this.forget(id);
        this.control?.close(id, 'its onward connection was closed').catch((err: unknown) => this.o.log.warn({ conn: id, err: messageOf(err) }, 'close failed'));
      } else {
        this.control?.setState(id, c.state === 'DOWN' ? 'DOWN' : 'UP');
      }
    }
  }

  /** Stops watching nsmd; the onward connections themselves are closed with their client connections. */
  close(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.stream?.cancel();
    this.api.close();
    this.monitorApi.close();
  }
}

/** The routes an onward answer hands this endpoint (which nsmd installed here), besides the link's own peer address. */
function answeredPrefixes(res: Connection): string[] {
  const ip = res.context?.ip_context;
  const peer = new Set((ip?.dst_ip_addrs ?? []).map(hostPrefix));
  return (ip?.src_routes ?? []).map((r) => r.prefix).filter((p) => !peer.has(p));
}
