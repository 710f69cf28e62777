/**
 * The WireGuard end of a remote connection, kept apart from the Dataplane interface until nsmd uses it.
 *
 * Names. A wireguard-go instance is known by the name it created its TUN under: that is also its UAPI
 * socket's name, and /var/run/wireguard is one directory for the whole machine (all network namespaces
 * share the mount namespace). So `ifname` must be unique per machine, not just per namespace, and carries
 * the backend's prefix so stale instances can be recognised after a crash (wgIfname() derives one from the
 * connection id and the underlay namespace). `end.ifname` is the name the pod sees: the TUN is renamed to it
 * while it moves into the pod. The UAPI keeps answering under `ifname` after the rename.
 */
import type { KeyObject } from 'node:crypto';
import type { LinkEnd } from '../types.js';

export interface WireguardPeer {
  /** base64, as the mechanism's dst_public_key / src_public_key. */
  publicKey: string;
  /** The peer node's underlay address and its listen port: `ip:port` or `[ipv6]:port` (see formatEndpoint). */
  endpoint: string;
  /** What may arrive from and be sent to the peer; upstream uses 0.0.0.0/0 and ::/0 (one peer per device). */
  allowedIps: string[];
}

export interface WireguardEnd {
  /** Written into the link alias (`nsmesh:<connId>`), as for veth and VXLAN. */
  connId: string;
  /** Node-side and UAPI name, unique per machine, starting with the backend's prefix; derived when absent. */
  ifname?: string;
  /** Where wireguard-go runs and its UDP socket lives: the node's namespace (path or inode URL). */
  underlayNetns: string;
  /** From a PortAllocator of that node; the peer's endpoint names this port. */
  listenPort: number;
  /** Prefer a KeyObject: a Buffer in a spec that someone logs or serialises leaks the key. Not kept after create. */
  privateKey: KeyObject | Buffer;
  peer: WireguardPeer;
  /** Seconds; default 10 as upstream. 0 disables. */
  keepaliveSec?: number;
  /** The pod end: namespace, final interface name, addresses and routes. */
  end: LinkEnd;
  /** Of the device in the pod: at most the underlay's MTU minus 60 (IPv4) / 80 (IPv6), see mtu.ts. */
  mtu: number;
}

export type WireguardState = 'starting' | 'up' | 'stopping';

/** What the backend knows about one running end; nothing secret. */
export interface WireguardEndInfo {
  connId: string;
  ifname: string;
  podIfname: string;
  /** Resolved paths. */
  underlayNetns: string;
  netns: string;
  listenPort: number;
  /** wireguard-go's pid; undefined only while it is being spawned. */
  pid: number | undefined;
  state: WireguardState;
  startedAt: Date;
}

/**
 * A wireguard-go that died on its own (killed, crashed, or its TUN vanished with the pod's namespace).
 * The end is gone by the time this runs: device, process and socket. `code`/`signal` as Node reports them.
 */
export type WireguardExitListener = (connId: string, code: number | null, signal: NodeJS.Signals | null) => void;

export interface CleanupReport {
  /** Instances whose nsmd is gone, now killed. */
  killed: Array<{ pid: number; ifname: string }>;
  /** Instances of a still-running nsmd (another node on this machine), left alone. */
  spared: Array<{ pid: number; ifname: string }>;
  /** Socket files nobody served any more, now removed. */
  removedSockets: string[];
}
