import type { EndpointElement } from './endpoint.js';
import { overlapWith, routesOutside } from './prefixes.js';
import type { EndpointRequestState } from './state.js';

/**
 * Hands the client routes to what lies behind this endpoint (an intranet behind a VPN gateway, say) in
 * src_routes, which nsmd installs on the client's side with this endpoint's address as next hop. Routes
 * that overlap the client's excluded_prefixes — prefixes it already uses — are left out, and so is any such
 * route already on the connection (a refresh after the client excluded more).
 */
export function handRoutes(prefixesOf: (st: EndpointRequestState) => string[]): EndpointElement {
  return {
    name: 'hand-routes',
    request(st, next) {
      const ip = st.request.connection.context?.ip_context;
      if (!ip) throw new Error('hand-routes runs after point-to-point addressing');
      const { handed, dropped } = routesOutside(prefixesOf(st), ip.excluded_prefixes);
      if (dropped.length) st.log.warn({ dropped }, "routes overlapping the client's excluded prefixes are not handed out");
      ip.src_routes = ip.src_routes.filter((r) => !overlapWith(r.prefix, ip.excluded_prefixes));
      const have = new Set(ip.src_routes.map((r) => r.prefix));
      for (const prefix of handed) if (!have.has(prefix)) ip.src_routes.push({ prefix, nextHop: '' });
      return next.request(st);
    },
    close: (st, next) => next.close(st),
  };
}
