import type { IPContext } from '../../api/types.js';
import type { RouteSpec, VethSpec } from '../../dataplane/types.js';
import type { PlumbedEnd } from '../connection-store.js';

const isV6 = (cidr: string) => cidr.includes(':');
const hostPrefix = (addr: string) => `${addr.split('/')[0]}/${isV6(addr) ? 128 : 32}`;

/**
 * Upstream's kernel programming: the client gets src_ip_addrs, a link route to each endpoint address and
 * src_routes via the endpoint; the endpoint side mirrors it with dst_* and routes via the client.
 */
export function vethSpecFor(connId: string, mtu: number, client: PlumbedEnd, endpoint: PlumbedEnd, ip: IPContext | null): VethSpec {
  const src = ip?.src_ip_addrs ?? [];
  const dst = ip?.dst_ip_addrs ?? [];
  return {
    connId,
    mtu,
    client: { netns: client.netns, ifname: client.ifname, addrs: src, routes: routesFor(dst, ip?.src_routes ?? []) },
    endpoint: { netns: endpoint.netns, ifname: endpoint.ifname, addrs: dst, routes: routesFor(src, ip?.dst_routes ?? []) },
  };
}

/** Link routes to each peer address, then the connection's routes via the peer (same family). */
export function routesFor(peerAddrs: string[], routes: { prefix: string; nextHop: string }[]): RouteSpec[] {
  const out = new Map<string, RouteSpec>();
  for (const a of peerAddrs) out.set(hostPrefix(a), { prefix: hostPrefix(a) });
  for (const r of routes) {
    if (out.has(r.prefix)) continue;
    const via = r.nextHop || peerAddrs.find((a) => isV6(a) === isV6(r.prefix))?.split('/')[0];
    out.set(r.prefix, via ? { prefix: r.prefix, via } : { prefix: r.prefix });
  }
  return [...out.values()];
}
