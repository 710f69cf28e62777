import type { Policy } from '../../identity/policy.js';
import { checkIncomingPath, issueToken } from '../../identity/path-tokens.js';
import { toTimestamp } from './expire.js';
import type { Transport } from '../../identity/transport.js';
import { permissionDenied } from '../../util/errors.js';
import type { BaseCloseState, BaseRequestState, Element } from '../types.js';
import type { Path } from '../../api/types.js';

function signForCaller(transport: Transport, path: Path, caller: string): void {
  const own = path.path_segments[path.index]!;
  const prev = path.path_segments[path.index - 1]!;
  const t = issueToken(transport.svid()!, caller, Infinity, prev.expires!.seconds * 1000);
  own.token = t.token;
  own.expires = toTimestamp(t.expires);
}

export interface AuthorizeOptions<R, C> {
  transport: Transport;
  policy?: Policy;
  /** Identities allowed to act on any connection (operators' tools). */
  isAdmin?: (spiffeId: string) => boolean;
  /** The owner of the connection a refresh refers to. */
  ownerOfExisting: (st: R) => string | undefined;
  /** The owner of the connection being closed. */
  ownerOfClosing: (st: C) => string | undefined;
  /** The last hop signs its own segment for the caller, as upstream's server does; a hop that forwards signs it for the next hop instead. */
  signOwnSegment: boolean;
}

/**
 * Trust nobody by default. A Request must come over mutual TLS with a path token the caller signed for us,
 * on a path whose tokens are all valid, unexpired and chained; the policy must allow the path's origin the
 * service; a refresh must come from the identity that made the connection. Close is authorised by the
 * caller's TLS identity alone (the connection's owner), not by its token, so that a client whose token has
 * expired can still clean up — upstream leaks interfaces exactly there.
 */
export function authorize<R extends BaseRequestState, C extends BaseCloseState>(o: AuthorizeOptions<R, C>): Element<R, C> {
  return {
    name: 'authorize',
    async request(st, next) {
      if (!o.transport.secure) return next.request(st);
      const caller = st.caller;
      if (!caller) throw permissionDenied('the caller presented no verified X.509-SVID');
      const conn = st.request.connection;
      const self = o.transport.svid()!.spiffeId;
      const origin = checkIncomingPath(conn.path!, conn.path!.index, caller.token, caller.peer, self, o.transport.bundles());
      const who = caller.peer.spiffeId;
      const existingOwner = o.ownerOfExisting(st);
      if (existingOwner && existingOwner !== who && !o.isAdmin?.(who)) {
        throw permissionDenied(`connection ${conn.id} belongs to ${existingOwner}; ${who} may not refresh it`);
      }
      const d = o.policy?.decide('request', origin, conn.network_service);
      if (d && !d.allowed) {
        st.log.warn({ peer: who, origin, service: conn.network_service, rule: d.reason }, 'request denied by policy');
        throw permissionDenied(`${origin} may not request network service "${conn.network_service}": ${d.reason}`);
      }
      st.owner = existingOwner ?? who;
      if (o.signOwnSegment) signForCaller(o.transport, conn.path!, who);
      return next.request(st);
    },
    async close(st, next) {
      if (o.transport.secure && st.caller) {
        const who = st.caller.peer.spiffeId;
        const owner = o.ownerOfClosing(st);
        if (owner && owner !== who && !o.isAdmin?.(who)) {
          st.log.warn({ peer: who, owner }, 'close denied');
          throw permissionDenied(`connection ${st.connection.id} belongs to ${owner}; ${who} may not close it`);
        }
      }
      return next.close(st);
    },
  };
}
