/**
 * Reads the links of a container's network namespace (name, index, MAC, addresses) for the CNI result and
 * for CHECK. The plugin is a short-lived process doing one thing at a time, so unlike nsmd it enters the
 * namespace on its main thread, just long enough to open one rtnetlink socket there, and comes straight
 * back; the socket stays bound to the namespace it was born in.
 */
import { closeSync, openSync } from 'node:fs';
import koffi from 'koffi';
import { createRtNetlink, type RtNetlinkSocket } from 'netlink';
import { formatIp } from '../../src/dataplane/ip.js';
import { CniCode, CniError } from './errors.js';

const CLONE_NEWNET = 0x40000000;

export interface ContainerLink {
  ifname: string;
  index: number;
  /** aa:bb:cc:dd:ee:ff, or undefined for links without a hardware address (lo). */
  mac: string | undefined;
  alias: string | undefined;
  /** CIDR, e.g. 169.254.0.2/32. */
  addrs: string[];
}

/** The namespace path does not open: the container is gone, which the spec has its own code for. */
const netnsGone = (netns: string, cause: string) => new CniError(CniCode.CONTAINER_UNKNOWN, `network namespace ${netns} cannot be opened: ${cause}`);

let setns: ((fd: number, nstype: number) => number) | undefined;

function enter(fd: number): void {
  setns ??= koffi.load('libc.so.6').func('int setns(int, int)') as unknown as (fd: number, nstype: number) => number;
  if (setns(fd, CLONE_NEWNET) !== 0) throw new Error(`setns: errno ${koffi.errno()}`);
}

function openSocketIn(netns: string): RtNetlinkSocket {
  let target: number;
  try {
    target = openSync(netns, 'r');
  } catch (e) {
    throw netnsGone(netns, (e as Error).message);
  }
  const self = openSync('/proc/thread-self/ns/net', 'r');
  try {
    try {
      enter(target);
    } catch (e) {
      throw netnsGone(netns, `${(e as Error).message} (is it a network namespace?)`);
    }
    try {
      return createRtNetlink();
    } finally {
      // Staying in the container's namespace would aim whatever follows at it: the invocation must fail.
      enter(self);
    }
  } finally {
    closeSync(self);
    closeSync(target);
  }
}

export async function readLinks(netns: string): Promise<ContainerLink[]> {
  const sock = openSocketIn(netns);
  try {
    // One dump at a time: replies of two dumps on one socket interleave and break the multipart parse.
    const links = await sock.getLinks();
    const addrs = await sock.getAddresses();
    const byIndex = new Map<number, ContainerLink>();
    for (const l of links) {
      const index = l.data.index ?? 0;
      const mac = l.attrs.address && l.attrs.address.length === 6 && l.attrs.address.some((b) => b !== 0) ? formatMac(l.attrs.address) : undefined;
      byIndex.set(index, { ifname: l.attrs.ifname ?? '', index, mac, alias: l.attrs.ifalias || undefined, addrs: [] });
    }
    for (const a of addrs) {
      const bytes = a.attrs.local ?? a.attrs.address;
      const link = byIndex.get(a.data.index ?? -1);
      if (bytes && link) link.addrs.push(`${formatIp(bytes)}/${a.data.prefixlen ?? 0}`);
    }
    return [...byIndex.values()];
  } finally {
    sock.socket.close();
  }
}

function formatMac(b: Buffer): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
