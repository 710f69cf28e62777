import type { NetworkServiceEndpoint } from '../../api/types.js';
import { unavailable } from '../../util/errors.js';
import type { LocalEndpoints } from '../local-endpoints.js';
import type { AddressMap } from '../../interdomain/address-map.js';
import type { Target } from './state.js';

/** How this nsmd reaches endpoints: its own published URL, its tunnel address, and the local endpoints' sockets. */
export interface Routing {
  /** This nsmd's remote URL, as published for its local endpoints in a shared registry; undefined on a single node. */
  ownUrl: string | undefined;
  /** This node's underlay address for tunnels. */
  tunnelIp: string | undefined;
  vxlanPort: number;
  /** Remote mechanisms this node offers and accepts, in order of preference (NSM_MECHANISM_PRIORITY). */
  mechanisms: RemoteMechanism[];
  /** Remote mechanisms offered to endpoints of other domains (NSM_INTERDOMAIN_MECHANISM_PRIORITY). */
  interdomainMechanisms: RemoteMechanism[];
  /** This node's addresses as other domains reach them (NSM_MAP_IP_FILE). */
  addressMap: AddressMap;
  /** A WireGuard key older than this is replaced at the connection's next refresh (NSM_WIREGUARD_KEY_MAX_AGE). */
  wireguardKeyMaxAgeMs: number;
  localEndpoints: LocalEndpoints;
}

export type RemoteMechanism = 'VXLAN' | 'WIREGUARD';

/** A client that labels its Request `encryption: required` gets WireGuard or an error, never plaintext. */
export const ENCRYPTION_LABEL = 'encryption';

/** An endpoint published with our own URL is local (its real socket is in LocalEndpoints); unix:// is local; tcp:// is a peer nsmd. */
export function targetOf(ep: NetworkServiceEndpoint, r: Routing): Target {
  if (r.ownUrl && ep.url === r.ownUrl) {
    const url = r.localEndpoints.get(ep.name);
    if (!url) throw unavailable(`endpoint "${ep.name}" is registered through this nsmd but its socket is not known yet (it re-registers within its renewal period)`);
    return { kind: 'local', url };
  }
  if (ep.url.startsWith('unix://') || ep.url.startsWith('/')) return { kind: 'local', url: ep.url };
  return { kind: 'remote', url: ep.url };
}
