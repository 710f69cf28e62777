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
