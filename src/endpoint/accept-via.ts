import { decodeToken } from '../identity/token.js';
import { permissionDenied } from '../util/errors.js';
import { globMatcher } from '../util/glob.js';
import type { EndpointElement } from './endpoint.js';

/**
 * Lets a connection in only when the hop that called this endpoint's nsmd is one of `spiffeIds` (globs): a
 * VPN gateway behind a firewall refuses a client that asks nsmd for it directly. A source selector's label
 * is the client's to set; the path is not — nsmd writes into its caller's segment the token it verified
 * against that caller's certificate, and this endpoint's authorize has verified nsmd. That is the segment
 * two before this endpoint's own, so the caller of nsmd must be on the same node as the gateway's nsmd.
 * Needs identity: in insecure mode there are no tokens and everything is refused.
 */
export function acceptOnlyVia(spiffeIds: string[]): EndpointElement {
  const allowed = globMatcher(spiffeIds);
  return {
    name: 'accept-only-via',
    request(st, next) {
      const path = st.request.connection.path!;
      const via = path.path_segments[path.index - 2];
      let sub: string | undefined;
      try {
        sub = via?.token ? decodeToken(via.token).sub : undefined;
      } catch {
        sub = undefined;
      }
      if (!sub || !allowed(sub)) {
        throw permissionDenied(
          `this endpoint accepts connections only through ${spiffeIds.join(', ')}; this one reached nsmd from ${sub ?? `"${via?.name ?? 'nobody'}", with no verified token`}`,
        );
      }
      return next.request(st);
    },
    close: (st, next) => next.close(st),
  };
}
