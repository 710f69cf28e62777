import { ApiClient } from '../../api/grpc.js';
import { MechanismCls, MechanismType, type Connection, type Mechanism } from '../../api/types.js';
import { remaining, type Element } from '../../chain/types.js';
import { signOwnSegment } from '../../identity/outgoing.js';
import type { Transport } from '../../identity/transport.js';
import { failedPrecondition, messageOf } from '../../util/errors.js';
import { VxlanParam, WireguardParam } from './client-mechanism.js';
import { ENCRYPTION_LABEL, targetOf, type Routing } from './routing.js';
import type { NsmdCloseState, NsmdRequestState } from './state.js';
import type { WireguardOffer, WireguardTunnels } from './wireguard-tunnels.js';
import { connectionFromDomain, connectionToDomain, domainOf } from '../../interdomain/names.js';

type NetworkServiceClient = ApiClient<'networkservice.NetworkService'>;

/** One channel per endpoint URL, reused across Requests so that no Request pays for a connection setup. */
export class EndpointClients {
  private readonly clients = new Map<string, NetworkServiceClient>();

  constructor(private readonly transport: Transport) {}

  get(url: string): NetworkServiceClient {
    let c = this.clients.get(url);
    if (!c) {
      c = new ApiClient('networkservice.NetworkService', url, this.transport);
      this.clients.set(url, c);
    }
    return c;
  }

  /** Drops the channel of an endpoint that went away. */
  forget(url: string): void {
    this.clients.get(url)?.close();
    this.clients.delete(url);
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

/**
 * What nsmd offers a peer nsmd, in NSM_MECHANISM_PRIORITY order (NSM_INTERDOMAIN_MECHANISM_PRIORITY towards
 * another domain, with this node's address as that domain reaches it): VXLAN from this node's tunnel
 * address, and WireGuard with a fresh public key and listen port (the private key stays here). A client that
 * requires encryption is offered WireGuard only, so a peer that cannot do it refuses rather than falling back.
 */
function remoteOffer(r: Routing, encrypted: boolean, wireguard: () => WireguardOffer, interdomain: boolean): { prefs: Mechanism[]; offer?: WireguardOffer } {
  if (!r.tunnelIp) throw failedPrecondition('this nsmd has no tunnel address for remote endpoints: set NSM_TUNNEL_IP or NSM_REMOTE_LISTEN_ON');
  const offered = interdomain ? r.interdomainMechanisms : r.mechanisms;
  const setting = interdomain ? 'NSM_INTERDOMAIN_MECHANISM_PRIORITY' : 'NSM_MECHANISM_PRIORITY';
  const types = encrypted ? offered.filter((m) => m === 'WIREGUARD') : offered;
  if (types.length === 0) {
    throw failedPrecondition(
      `encryption is required (label ${ENCRYPTION_LABEL}=required, from the client or the service's match metadata) but this node offers no WIREGUARD mechanism (${setting}=${offered.join(',')})`,
    );
  }
  const srcIp = interdomain ? r.addressMap.external(r.tunnelIp) : r.tunnelIp;
  let offer: WireguardOffer | undefined;
  const prefs = types.map((t): Mechanism => {
    const base = { [VxlanParam.SRC_IP]: srcIp };
    if (t === 'VXLAN') return { cls: MechanismCls.REMOTE, type: MechanismType.VXLAN, parameters: { ...base, [VxlanParam.SRC_PORT]: String(r.vxlanPort) } };
    offer = wireguard();
    return {
      cls: MechanismCls.REMOTE,
      type: MechanismType.WIREGUARD,
      parameters: { ...base, [VxlanParam.SRC_PORT]: String(offer.port), [WireguardParam.SRC_PUBLIC_KEY]: offer.publicKey },
    };
  });
  return { prefs, ...(offer ? { offer } : {}) };
}

/**
 * The chain's last hop: forwards the Request to the selected endpoint — on this node, or through the nsmd of
 * its node, in this domain or another — and Close to whichever it went to. Another domain gets the names as
 * it knows them (without `@domain`), and its answer is given back with `@domain` appended.
 * With identity, nsmd signs its own path segment for the endpoint (audience: the endpoint's SPIFFE ID as
 * its TLS handshake showed it), never outliving the caller's token.
 */
export function connect(
  clients: EndpointClients,
  closeTimeoutMs: number,
  transport: Transport,
  maxTokenLifetimeMs: number,
  dialTimeoutMs: number,
  routing: Routing,
  wireguard: () => WireguardTunnels,
): Element<NsmdRequestState, NsmdCloseState> {
  return {
    name: 'connect',
    async request(st) {
      const conn = st.request.connection;
      const target = targetOf(st.endpoint!, routing);
      const domain = domainOf(st.endpoint!.name);
      if (st.incomingTunnel && target.kind === 'remote') {
        throw failedPrecondition(`endpoint "${st.endpoint!.name}" is not on this node; a Request from another node must name an endpoint of this node`);
      }
      st.target = target;
      const client = clients.get(target.url);
      // A dead endpoint must cost one dial timeout, not the whole Request's deadline.
      const metadata = await signOwnSegment(transport, client, conn, maxTokenLifetimeMs, Math.min(dialTimeoutMs, remaining(st)));
      // What the endpoint already gave this connection; nothing when the connection is being healed onto another.
      const previous = st.healFrom ? undefined : st.existing?.endpoint.connection;
      let prefs: Mechanism[] = [{ cls: MechanismCls.LOCAL, type: MechanismType.KERNEL, parameters: {} }];
      if (target.kind === 'remote') {
        if (previous?.mechanism) {
          prefs = [previous.mechanism];
          const tunnel = st.existing?.dataplane.tunnel;
          if (previous.mechanism.type === MechanismType.WIREGUARD && tunnel && Date.now() - (tunnel.keyBornAt ?? 0) >= routing.wireguardKeyMaxAgeMs) {
            // Rotation rides on the refresh: the peer sees a new src_public_key on a connection it knows,
            // answers with a new key of its own, and both ends swap keys in place.
            st.wireguardRekey = wireguard().rekeyOffer(tunnel.port);
            prefs = [{ ...previous.mechanism, parameters: { ...previous.mechanism.parameters, [WireguardParam.SRC_PUBLIC_KEY]: st.wireguardRekey.publicKey } }];
          }
        } else {
          const o = remoteOffer(routing, conn.labels[ENCRYPTION_LABEL] === 'required', () => wireguard().offer(), domain !== undefined);
          prefs = o.prefs;
          if (o.offer) st.wireguardOffer = o.offer;
        }
      }
      const downstream = {
        ...conn,
        // The endpoint keeps its own interface and addresses across refreshes.
        mechanism: st.wireguardRekey ? prefs[0]! : (previous?.mechanism ?? null),
        context: previous?.context ?? (st.healFrom ? withoutAddresses(conn.context) : conn.context),
      };
      const res = await client.unary(
        'Request',
        { connection: domain ? connectionToDomain(downstream) : downstream, mechanism_preferences: prefs },
        { timeoutMs: remaining(st), metadata },
      );
      // Kept as the next hop knows it: refreshes and Close go back to it in its own names.
      st.endpointConnection = structuredClone(res);
      if (domain) connectionFromDomain(res, domain);
      return res;
    },
    async close(st) {
      const { url, connection } = st.record.endpoint;
      try {
        await clients.get(url).unary('Close', connection, { timeoutMs: Math.min(closeTimeoutMs, Math.max(1, remaining(st))) });
      } catch (e) {
        // The endpoint may be gone; its side dies with it and the local side is already removed.
        st.log.warn({ endpoint: st.record.endpoint.name, err: messageOf(e) }, 'endpoint did not confirm Close');
      }
    },
  };
}

/** The client's context minus what the endpoint it leaves had handed out: the new endpoint allocates its own. */
function withoutAddresses(ctx: Connection['context']): Connection['context'] {
  if (!ctx?.ip_context) return ctx;
  return { ...ctx, ip_context: { ...ctx.ip_context, src_ip_addrs: [], dst_ip_addrs: [], src_routes: [], dst_routes: [] } };
}
