/** VXLAN links built by hand with iproute2, and what `ip -d` says about any VXLAN device, mesh-built or not. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Netns } from './netns.js';
import type { UnderlayHost } from './underlay.js';

const run = promisify(execFile);

export interface HandVxlanEnd {
  /** Where the device's UDP socket lives and its outer packets are routed: its "link net". */
  node: UnderlayHost;
  /** Where the device itself lives, with the address. */
  pod: Netns;
  ifname: string;
  addr: string;
}

/**
 * Both ends of a point-to-point VXLAN link, each made the way nsmd makes its ends: created from the node
 * namespace with `netns <pod>`, so the device is born in the pod while the kernel keeps the node as its
 * link net; remote = the other node, no learning (nsmd sets learning off), no `dev`; a /32 address and a
 * link route to the peer's /32, as nsmd programs a connection's addresses.
 */
export async function createHandVxlan(vni: number, port: number, mtu: number, a: HandVxlanEnd, b: HandVxlanEnd): Promise<void> {
  for (const [me, peer] of [[a, b], [b, a]] as const) {
    await run('ip', [
      '-n', me.node.name, 'link', 'add', me.ifname, 'mtu', String(mtu), 'netns', me.pod.name,
      'type', 'vxlan', 'id', String(vni), 'local', me.node.ip, 'remote', peer.node.ip, 'dstport', String(port), 'nolearning',
    ]);
    await run('ip', ['-n', me.pod.name, 'addr', 'add', `${me.addr}/32`, 'dev', me.ifname]);
    await run('ip', ['-n', me.pod.name, 'link', 'set', me.ifname, 'up']);
    await run('ip', ['-n', me.pod.name, 'route', 'add', `${peer.addr}/32`, 'dev', me.ifname]);
  }
}

export interface VxlanLink {
  ifname: string;
  mtu: number;
  vni: number;
  /** linkinfo.info_data as `ip -d -j` prints it. */
  info: Record<string, unknown>;
  /** The device-level settings that bear on throughput (queueing, segmentation and aggregation sizes). */
  device: Record<string, unknown>;
}

/** Besides the tunnel's own attributes, what `ip -d -j` shows of a device that can change what it carries. */
const DEVICE_KEYS = ['qdisc', 'txqlen', 'num_tx_queues', 'num_rx_queues', 'gso_max_size', 'gso_max_segs', 'tso_max_size', 'tso_max_segs', 'gro_max_size'] as const;

export async function vxlanLinks(ns: Netns): Promise<VxlanLink[]> {
  const { stdout } = await run('ip', ['-d', '-j', '-n', ns.name, 'link', 'show', 'type', 'vxlan'], { maxBuffer: 64 << 20 });
  return (JSON.parse(stdout || '[]') as ({ ifname: string; mtu: number; linkinfo: { info_data: Record<string, unknown> } } & Record<string, unknown>)[]).map((l) => ({
    ifname: l.ifname,
    mtu: l.mtu,
    vni: Number(l.linkinfo.info_data.id),
    info: l.linkinfo.info_data,
    device: Object.fromEntries(DEVICE_KEYS.map((k) => [k, l[k]])),
  }));
}

/**
 * How two devices' settings differ, ignoring what must differ between two tunnels (VNI, and the addresses
 * when the ends face other ways): anything listed makes the throughput comparison less like for like.
 */
export function vxlanDifferences(x: VxlanLink, y: VxlanLink): string[] {
  const out: string[] = [];
  if (x.mtu !== y.mtu) out.push(`mtu ${x.mtu} vs ${y.mtu}`);
  for (const [xs, ys] of [[x.info, y.info], [x.device, y.device]] as const) {
    for (const k of new Set([...Object.keys(xs), ...Object.keys(ys)])) {
      if (k === 'id') continue;
      const a = JSON.stringify(xs[k]);
      const b = JSON.stringify(ys[k]);
      if (a !== b) out.push(`${k} ${a ?? '(unset)'} vs ${b ?? '(unset)'}`);
    }
  }
  return out;
}
