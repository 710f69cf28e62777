/**
 * WireGuard numbers shared by the control plane and the data plane, kept free of process and socket code
 * so nsmd can compute a mechanism's MTU and ports without loading the backend.
 */
import { parseIp } from '../ip.js';

/** Upstream's base port for WIREGUARD (src_port/dst_port); per-connection ports count up from here. */
export const WG_PORT = 51820;

/** Upstream's PersistentKeepalive, seconds: keeps NAT/conntrack state and lets a dead peer show in handshake age. */
export const WG_KEEPALIVE_SEC = 10;

/**
 * Overhead as upstream reckons it (sdk-vpp mtu/common.go): outer IPv4 20 + UDP 8 + WireGuard data header 16
 * + Poly1305 tag 16 = 60. Both ends must use the same numbers or they disagree on the connection's MTU.
 */
export const WG_OVERHEAD_V4 = 60;
/** The same with a 40-byte IPv6 outer header. */
export const WG_OVERHEAD_V6 = 80;

/** Overhead for an underlay address (the family of the outer header decides it). */
export function wgOverhead(underlayIp: string): number {
  const ip = parseIp(underlayIp);
  if (!ip) throw new Error(`invalid underlay address ${JSON.stringify(underlayIp)}`);
  return ip.family === 4 ? WG_OVERHEAD_V4 : WG_OVERHEAD_V6;
}

/**
 * The MTU a tunnel over an underlay device of `underlayMtu` can carry without fragmenting outer packets.
 * It is a multiple of 16 for a 1500 underlay (1440/1420), so WireGuard's padding of the plaintext to 16
 * bytes never pushes a full-size packet over the underlay MTU.
 */
export function wgMtu(underlayMtu: number, underlayIp: string): number {
  return underlayMtu - wgOverhead(underlayIp);
}
