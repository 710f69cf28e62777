/**
 * VXLAN numbers shared by the control plane and the data plane, kept free of netlink imports so nsmd can
 * compute a mechanism's MTU without loading the worker's code.
 */
import { parseIp } from '../ip.js';

/** IANA port for VXLAN, upstream's default (`NSM_VXLAN_PORT`); Linux's own default, 8472, predates it. */
export const VXLAN_PORT = 4789;

export const VNI_MIN = 1;
export const VNI_MAX = 0xffffff;

/**
 * Encapsulation overhead as upstream reckons it (sdk-vpp mtu/common.go): outer IPv4 20 + UDP 8 + VXLAN 8 +
 * inner Ethernet 14 = 50, plus 4 for an 802.1Q tag on the inner frame, so a tagged payload still fits.
 * Both ends must use the same numbers or they disagree on the connection's MTU.
 */
export const VXLAN_OVERHEAD_V4 = 54;
/** The same with a 40-byte IPv6 outer header. */
export const VXLAN_OVERHEAD_V6 = 74;

/** Overhead for an underlay address (the family of the outer header decides it). */
export function vxlanOverhead(underlayIp: string): number {
  const ip = parseIp(underlayIp);
  if (!ip) throw new Error(`invalid underlay address ${JSON.stringify(underlayIp)}`);
  return ip.family === 4 ? VXLAN_OVERHEAD_V4 : VXLAN_OVERHEAD_V6;
}

/** The MTU a tunnel over an underlay device of `underlayMtu` can carry without fragmenting outer packets. */
export function vxlanMtu(underlayMtu: number, underlayIp: string): number {
  return underlayMtu - vxlanOverhead(underlayIp);
}
