/**
 * The one interface between the control plane and the kernel. nsmd plumbs through it; tests use the
 * read-back half (`snapshot`) to check what the kernel really holds.
 */

/** A route to program next to an interface; `via` absent means a link-scope route. */
export interface RouteSpec {
  prefix: string; // CIDR, v4 or v6
  via?: string; // gateway address, installed with the onlink flag
}

/** One end of a point-to-point link, in one network namespace. */
export interface LinkEnd {
  /** A path that opens the namespace: /var/run/netns/NAME or /proc/PID/ns/net. */
  netns: string;
  ifname: string; // ≤ 15 characters
  addrs: string[]; // CIDR, e.g. 169.254.0.1/32
  routes: RouteSpec[];
}

export interface VethSpec {
  /** Written into the link alias of both ends, so a restarted nsmd can find what it built. */
  connId: string;
  mtu: number;
  client: LinkEnd;
  endpoint: LinkEnd;
}

/**
 * One node's end of a VXLAN tunnel for a remote (cross-node) connection. The device sits in the pod's
 * namespace with the connection's addresses, but its UDP socket lives in `underlayNetns`, so the outer
 * packets use the node's addresses and routes. Each node creates its own end; the two must agree on `vni`
 * and `port`, and each names the other's underlay address as `remoteIp`.
 */
export interface VxlanEnd {
  /** Written into the link alias (`nsmesh:<connId>`), as for veth. */
  connId: string;
  /** Namespace holding the underlay (where the UDP socket lives): the node's network namespace. */
  underlayNetns: string;
  /** Underlay addresses of this node and of the peer node; v4 or v6, both of the same family. */
  localIp: string;
  remoteIp: string;
  /** 1..16777215. Unique per underlay namespace, port and address family: the kernel refuses a second device (EEXIST). */
  vni: number;
  /** UDP destination port, also the port this end listens on; default 4789. */
  port?: number;
  /** The pod end: the VXLAN device itself, its addresses and routes. */
  end: LinkEnd;
  /** Of the device in the pod: at most the underlay's MTU minus the encapsulation (see vxlan/mtu.ts). */
  mtu: number;
}

export interface LinkState {
  ifname: string;
  index: number;
  kind: string | undefined;
  alias: string | undefined;
  mtu: number;
  up: boolean;
  addrs: string[]; // CIDR
}

export interface RouteState {
  prefix: string; // CIDR
  via: string | undefined;
  ifname: string | undefined;
}

export interface NetnsSnapshot {
  links: LinkState[];
  routes: RouteState[]; // main table, v4 and v6, excluding kernel-made local/multicast routes
}

export interface Dataplane {
  /**
   * Creates the veth pair with each end born in its own namespace, then sets MTU, addresses, routes and
   * brings both up. All or nothing: on any failure whatever was created is removed before it rejects.
   */
  createVeth(spec: VethSpec): Promise<void>;
  /** Removes the pair (deleting one end removes both). Idempotent: a missing link or namespace is success. */
  deleteVeth(end: { netns: string; ifname: string }): Promise<void>;
  /**
   * Creates the VXLAN device born in `spec.end.netns` with its UDP socket in `spec.underlayNetns`, then
   * sets alias, addresses, routes and brings it up. All or nothing, like createVeth. A name taken in the pod
   * namespace, or a VNI already used on that port in the underlay namespace, rejects with EEXIST.
   */
  createVxlan(spec: VxlanEnd): Promise<void>;
  /** Removes this node's end of a tunnel (the pod-side device). Idempotent, like deleteVeth. */
  deleteVxlan(end: { netns: string; ifname: string }): Promise<void>;
  /**
   * MTU of the device that holds `ip` (a local address) or that routes towards it, in `netns`, lowered to
   * the route's MTU metric when one is set. Tunnel MTU = this − encapsulation overhead.
   */
  underlayMtu(netns: string, ip: string): Promise<number>;
  /** Whether a link of that name exists in the namespace. */
  linkExists(netns: string, ifname: string): Promise<boolean>;
  /** What the kernel holds in a namespace: links (with alias, MTU, addresses) and routes. */
  snapshot(netns: string): Promise<NetnsSnapshot>;
  /** Deletes every link whose alias marks it as belonging to a connection not in `keep`; returns their names. */
  sweep(netns: string, keep: (connId: string) => boolean): Promise<string[]>;
  /** Releases sockets (they would keep deleted namespaces alive) and workers. */
  close(): Promise<void>;
}

/** Link alias prefix that marks devices nsmesh created: `nsmesh:<connection id>`. */
export const ALIAS_PREFIX = 'nsmesh:';
