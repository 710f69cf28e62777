import type { Connection, NetworkServiceEndpoint } from '../../api/types.js';
import type { BaseCloseState, BaseRequestState } from '../../chain/types.js';
import type { ConnectionRecord, PlumbedEnd, PlumbedPath } from '../connection-store.js';
import type { WireguardOffer } from './wireguard-tunnels.js';

/** Where the Request goes next: an endpoint on this node (its own socket) or the nsmd of the endpoint's node. */
export interface Target {
  kind: 'local' | 'remote';
  url: string;
}

/** What nsmd's Request chain fills in as it goes; each field names the element that sets it. */
export interface NsmdRequestState extends BaseRequestState {
  /** begin: the live record when this Request is a refresh. */
  existing?: ConnectionRecord;
  /** expire: when the connection lapses unless refreshed. */
  expiresAt?: number;
  /** client-mechanism: a local client's namespace and interface (KERNEL). */
  clientEnd?: PlumbedEnd;
  /**
   * client-mechanism: whether the client's interface name is already taken, asked of the kernel while the
   * Request travels on; plumb refuses before building anything if it is.
   */
  clientNameTaken?: Promise<boolean>;
  /** other-domain-caller: the caller is another domain's nsmd, so this node's tunnel address is given as outsiders reach it. */
  fromOtherDomain?: boolean;
  /** incoming-mechanism: a remote node's tunnel offer (VXLAN or WireGuard). */
  incomingTunnel?: { type: 'VXLAN' | 'WIREGUARD'; srcIp: string; srcPort: number; srcPublicKey?: string };
  /** connect: the WireGuard key and port this node offered the next node, until plumb uses or releases them. */
  wireguardOffer?: WireguardOffer;
  /** connect: on a refresh whose WireGuard key is older than allowed, the new key (same port) this node offered. */
  wireguardRekey?: WireguardOffer;
  /** incoming-mechanism: MTU the client asked for, if any. */
  mtu?: number;
  /** discover: on a refresh whose endpoint left the registry, that endpoint's name; the connection is healed onto another. */
  healFrom?: string;
  /** discover: on a refresh, the other endpoints selection would give, asked for if the connection's own fails. */
  alternatives?: () => Promise<NetworkServiceEndpoint[]>;
  /** discover: endpoints eligible for this Request, in selection order. */
  candidates?: NetworkServiceEndpoint[];
  /** select: the endpoint being tried. */
  endpoint?: NetworkServiceEndpoint;
  /** connect: where it was sent. */
  target?: Target;
  /** connect: the connection as the next hop returned it. */
  endpointConnection?: Connection;
  /** plumb: what was built on this node. */
  plumbed?: PlumbedPath;
}

export interface NsmdCloseState extends BaseCloseState {
  readonly record: ConnectionRecord;
}
