/**
 * The kernel side of the Dataplane interface, run inside the netlink worker. Every namespace is reached
 * through SocketPool handles; nothing here may block on anything but netlink replies.
 */
import { writeFileSync } from 'node:fs';
import { AttrStream, FlagsNew, ifla, rt, type RtNetlinkSocket, type StreamData } from 'netlink';
import { AF_INET, AF_INET6, afOf, formatIp, maskBytes, parseCidr, parseIp, type ParsedCidr } from '../ip.js';
import { ALIAS_PREFIX, type LinkEnd, type LinkState, type NetnsSnapshot, type RouteState, type VethSpec } from '../types.js';
import { DeleteBatcher } from './batch-delete.js';
import { DataplaneError, codeOf, messageOf, type OwnedLink } from './protocol.js';
import type { NetnsHandle, PoolLog, SocketPool } from './sockets.js';

export const NLM_F_ECHO = 8;
const RTNH_F_ONLINK = 4;
const RT_TABLE_MAIN = 254;
const IFNAMSIZ = 16;
export const IFALIASZ = 256;

export function attrs(sd: StreamData): Buffer {
  const s = new AttrStream();
  s.emit(sd);
  return Buffer.concat(s.bufs);
}

export function invalid(msg: string): DataplaneError {
  return new DataplaneError(msg, 'EINVAL');
}

/** Wraps a kernel rejection with what we were doing, keeping the errno name as `code`. */
export function wrap(what: string, err: unknown): DataplaneError {
  if (err instanceof DataplaneError) return new DataplaneError(`${what}: ${err.message}`, err.code, err.errno);
  const code = codeOf(err);
  const detail = code !== 'EUNKNOWN' ? code : messageOf(err);
  return new DataplaneError(`${what}: ${detail}`, code);
}

function u32(b: Buffer | undefined): number | undefined {
  return b && b.length >= 4 ? b.readUInt32LE(0) : undefined;
}

export interface PreparedEnd {
  end: LinkEnd;
  addrs: ParsedCidr[];
  routes: Array<{ dst: ParsedCidr; via: Buffer | undefined; raw: string }>;
}

export function validateIfname(name: unknown, where: string): string {
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) >= IFNAMSIZ) {
    throw invalid(`${where}: interface name ${JSON.stringify(name)} must be 1..${IFNAMSIZ - 1} bytes`);
  }
  if (/[\s/:]/.test(name) || name === '.' || name === '..') {
    throw invalid(`${where}: interface name ${JSON.stringify(name)} contains a character the kernel refuses`);
  }
  return name;
}

export function prepareEnd(end: LinkEnd, where: string): PreparedEnd {
  if (!end || typeof end.netns !== 'string' || end.netns === '') throw invalid(`${where}: netns path missing`);
  validateIfname(end.ifname, where);
  const addrs = (end.addrs ?? []).map((a) => {
    try {
      return parseCidr(a);
    } catch (err) {
      throw invalid(`${where}: ${messageOf(err)}`);
    }
  });
  const routes = (end.routes ?? []).map((r) => {
    let dst: ParsedCidr;
    try {
      dst = parseCidr(r.prefix);
    } catch (err) {
      throw invalid(`${where}: route ${messageOf(err)}`);
    }
    let via: Buffer | undefined;
    if (r.via !== undefined && r.via !== '') {
      const gw = parseIp(r.via);
      if (!gw) throw invalid(`${where}: route ${r.prefix} via ${JSON.stringify(r.via)}: bad gateway address`);
      if (gw.family !== dst.family) throw invalid(`${where}: route ${r.prefix} via ${r.via}: address families differ`);
      via = gw.bytes;
    }
    return { dst, via, raw: r.via ? `${r.prefix} via ${r.via}` : r.prefix };
  });
  return { end, addrs, routes };
}

function vethLinkinfo(peerName: string, peerNsFd: number, mtu: number): Buffer {
  // The peer is born in its namespace (IFLA_NET_NS_FD inside VETH_INFO_PEER): moving it later costs ~20 ms.
  // It cannot be born up: the veth driver configures the peer before the pair is joined (ENOTCONN).
  const peer = Buffer.concat([rt.formatLink({}), attrs(ifla.formatLinkAttrs({ ifname: peerName, netNsFd: peerNsFd, mtu }))]);
  return attrs(ifla.formatInfo({ kind: 'veth', data: attrs(ifla.formatVethInfo({ peer })) }));
}

export class Ops {
  /** Shared with the VXLAN operations so their deletes join the same per-namespace batches. */
  readonly deleter = new DeleteBatcher();

  constructor(
    private readonly pool: SocketPool,
    private readonly log: PoolLog,
  ) {}

  private async withNs<T>(path: string, fn: (h: NetnsHandle) => Promise<T>): Promise<T> {
    const h = this.pool.acquire(path);
    try {
      return await fn(h);
    } finally {
      this.pool.release(h);
    }
  }

  async createVeth(spec: VethSpec): Promise<void> {
    if (!spec || typeof spec.connId !== 'string' || spec.connId === '') throw invalid('createVeth: connId missing');
    if (!Number.isInteger(spec.mtu) || spec.mtu < 68 || spec.mtu > 65535) {
      throw invalid(`createVeth ${spec.connId}: mtu ${spec.mtu} must be an integer in 68..65535`);
    }
    const alias = `${ALIAS_PREFIX}${spec.connId}`;
    if (Buffer.byteLength(alias) >= IFALIASZ) throw invalid(`createVeth ${spec.connId}: connId too long for a link alias (${IFALIASZ - 1} bytes with prefix)`);
    const client = prepareEnd(spec.client, `createVeth ${spec.connId} client`);
    const endpoint = prepareEnd(spec.endpoint, `createVeth ${spec.connId} endpoint`);
    const what = `createVeth ${spec.connId} (${client.end.ifname} in ${client.end.netns} <-> ${endpoint.end.ifname} in ${endpoint.end.netns})`;

    let c: NetnsHandle | undefined;
    let e: NetnsHandle | undefined;
    try {
      try {
        c = this.pool.acquire(client.end.netns);
        e = this.pool.acquire(endpoint.end.netns);
      } catch (err) {
        throw wrap(what, err);
      }
      const ce = c;
      const ee = e;
      let reply;
      try {
        reply = await ce.request((s) =>
          s.newLink(
            {},
            { ifname: client.end.ifname, mtu: spec.mtu, linkinfo: vethLinkinfo(endpoint.end.ifname, ee.fd, spec.mtu) },
            // ECHO returns the new device; its IFLA_LINK is the peer's ifindex, saving a lookup per end.
            { flags: FlagsNew.CREATE | FlagsNew.EXCL | NLM_F_ECHO },
          ),
        );
      } catch (err) {
        throw wrap(`${what}: create veth`, err);
      }
      let cIdx = reply[0]?.data.index;
      let eIdx = u32(reply[0]?.attrs.link);
      try {
        if (!cIdx) cIdx = await indexOf(ce, client.end.ifname);
        if (!eIdx) eIdx = await indexOf(ee, endpoint.end.ifname);
        // Both ends' requests go out back to back and are awaited once: one round trip instead of many.
        enableIpv6(ce, client);
        enableIpv6(ee, endpoint);
        const steps = [...this.configure(ce, client, cIdx, alias), ...this.configure(ee, endpoint, eIdx, alias)];
        await settle(steps);
      } catch (err) {
        const failure = wrap(what, err);
        try {
          // Deleting one end removes both.
          await this.deleter.delete(ce, cIdx ? { index: cIdx } : { ifname: client.end.ifname });
        } catch (rbErr) {
          this.log('error', 'rollback of half-made veth failed', { connId: spec.connId, err: messageOf(rbErr) });
          throw new DataplaneError(`${failure.message}; rollback also failed: ${messageOf(rbErr)}`, failure.code, failure.errno);
        }
        throw failure;
      }
    } finally {
      if (c) this.pool.release(c);
      if (e) this.pool.release(e);
    }
  }

  /** Sends alias+up, addresses and routes for one end without waiting; the caller settles them. */
  configure(h: NetnsHandle, p: PreparedEnd, index: number, alias: string): Step[] {
    const { ifname } = p.end;
    const steps: Step[] = [];
    steps.push({
      what: `set alias and up on ${ifname}`,
      p: h.request((s) => s.setLink({ index, flags: { up: true }, change: { up: true } }, { ifalias: alias })),
    });
    for (const a of p.addrs) {
      const v6 = a.family === 6;
      const flags = v6 ? { nodad: true as const, permanent: true as const } : { permanent: true as const };
      steps.push({
        what: `add address ${formatIp(a.bytes)}/${a.prefixLen} to ${ifname}`,
        p: h.request((s) =>
          s.newAddress(
            { family: afOf(a.family), prefixlen: a.prefixLen, flags, scope: 0, index },
            { local: a.bytes, address: a.bytes, flags },
            { flags: FlagsNew.CREATE | FlagsNew.EXCL },
          ),
        ),
      });
    }
    for (const r of p.routes) {
      steps.push({
        what: `add route ${r.raw} dev ${ifname}`,
        p: h.request((s) =>
          s.newRoute(
            {
              family: afOf(r.dst.family),
              dstLen: r.dst.prefixLen,
              table: RT_TABLE_MAIN,
              protocol: 'STATIC',
              scope: r.via ? 'UNIVERSE' : 'LINK',
              type: 'UNICAST',
              flags: r.via ? { __unknown: RTNH_F_ONLINK } : {},
            },
            {
              dst: maskBytes(r.dst.bytes, r.dst.prefixLen),
              oif: index,
              ...(r.via ? { gateway: r.via } : {}),
            },
            { flags: FlagsNew.CREATE | FlagsNew.EXCL },
          ),
        ),
      });
    }
    return steps;
  }

  async deleteVeth(netns: string, ifname: string): Promise<void> {
    validateIfname(ifname, 'deleteVeth');
    let h: NetnsHandle;
    try {
      h = this.pool.acquire(netns);
    } catch (err) {
      if (codeOf(err) === 'ENOENT') return; // the namespace is gone and took the link with it
      throw wrap(`deleteVeth ${ifname}`, err);
    }
    try {
      await this.deleter.delete(h, { ifname });
    } catch (err) {
      throw wrap(`deleteVeth ${ifname} in ${netns}`, err);
    } finally {
      this.pool.release(h);
    }
  }

  async linkExists(netns: string, ifname: string): Promise<boolean> {
    validateIfname(ifname, 'linkExists');
    let h: NetnsHandle;
    try {
      h = this.pool.acquire(netns);
    } catch (err) {
      if (codeOf(err) === 'ENOENT') return false;
      throw wrap(`linkExists ${ifname}`, err);
    }
    try {
      await h.request((s) => s.getLink({}, { ifname }));
      return true;
    } catch (err) {
      if (codeOf(err) === 'ENODEV') return false;
      throw wrap(`linkExists ${ifname} in ${netns}`, err);
    } finally {
      this.pool.release(h);
    }
  }

  async snapshot(netns: string): Promise<NetnsSnapshot> {
    try {
      return await this.withNs(netns, async (h) => {
        const [links, addrs, routes] = await Promise.all([
          h.dump((s) => s.getLinks()),
          h.dump((s) => s.getAddresses()),
          h.dump((s) => s.getRoutes({ family: 0 })),
        ]);
        const byIndex = new Map<number, LinkState>();
        const out: LinkState[] = [];
        for (const l of links) {
          const index = l.data.index ?? 0;
          const st: LinkState = {
            ifname: l.attrs.ifname ?? '',
            index,
            kind: l.attrs.linkinfo ? ifla.parseInfo(l.attrs.linkinfo).kind : undefined,
            alias: l.attrs.ifalias || undefined,
            mtu: l.attrs.mtu ?? 0,
            up: !!l.data.flags?.up,
            addrs: [],
          };
          byIndex.set(index, st);
          out.push(st);
        }
        for (const a of addrs) {
          const bytes = a.attrs.local ?? a.attrs.address;
          if (!bytes) continue;
          const link = byIndex.get(a.data.index ?? -1);
          if (!link) continue;
          // The kernel's own fe80::/64 per up interface is noise to anyone comparing against a spec.
          if (a.data.family === AF_INET6 && a.data.scope === 253 && a.data.prefixlen === 64 && bytes[0] === 0xfe && ((bytes[1] as number) & 0xc0) === 0x80) continue;
          link.addrs.push(`${formatIp(bytes)}/${a.data.prefixlen ?? 0}`);
        }
        const rs: RouteState[] = [];
        for (const r of routes) {
          const table = r.attrs.table ?? r.data.table;
          if (table !== RT_TABLE_MAIN) continue;
          const type = r.data.type;
          if (type === 'LOCAL' || type === 'BROADCAST' || type === 'MULTICAST') continue;
          const family = r.data.family;
          const dst = r.attrs.dst ?? Buffer.alloc(family === AF_INET ? 4 : 16);
          const prefix = `${formatIp(dst)}/${r.data.dstLen ?? 0}`;
          if (family === AF_INET6 && r.data.protocol === 'KERNEL' && prefix === 'fe80::/64') continue;
          rs.push({
            prefix,
            via: r.attrs.gateway ? formatIp(r.attrs.gateway) : undefined,
            ifname: r.attrs.oif !== undefined ? byIndex.get(r.attrs.oif)?.ifname : undefined,
          });
        }
        return { links: out, routes: rs };
      });
    } catch (err) {
      throw wrap(`snapshot ${netns}`, err);
    }
  }

  /** Links whose alias marks them as ours, for sweep. A missing namespace owns nothing. */
  async listOwned(netns: string): Promise<OwnedLink[]> {
    let h: NetnsHandle;
    try {
      h = this.pool.acquire(netns);
    } catch (err) {
      if (codeOf(err) === 'ENOENT') return [];
      throw wrap(`sweep ${netns}`, err);
    }
    try {
      const links = await h.dump((s) => s.getLinks());
      const owned: OwnedLink[] = [];
      for (const l of links) {
        const alias = l.attrs.ifalias;
        if (alias && alias.startsWith(ALIAS_PREFIX) && l.data.index) {
          owned.push({ ifname: l.attrs.ifname ?? '', index: l.data.index, connId: alias.slice(ALIAS_PREFIX.length) });
        }
      }
      return owned;
    } catch (err) {
      throw wrap(`sweep ${netns}`, err);
    } finally {
      this.pool.release(h);
    }
  }

  /** Deletes by ifindex, so a link recreated under the same name since listOwned is left alone. */
  async deleteLinks(netns: string, links: Array<{ ifname: string; index: number }>): Promise<string[]> {
    let h: NetnsHandle;
    try {
      h = this.pool.acquire(netns);
    } catch (err) {
      if (codeOf(err) === 'ENOENT') return links.map((l) => l.ifname);
      throw wrap(`sweep ${netns}`, err);
    }
    try {
      // A link already gone (e.g. the peer of one deleted earlier in this sweep) counts as deleted.
      const results = await Promise.allSettled(links.map((l) => this.deleter.delete(h, { index: l.index, ifname: l.ifname })));
      const failures: string[] = [];
      results.forEach((r, i) => {
        if (r.status === 'rejected') failures.push(`${links[i]?.ifname}: ${codeOf(r.reason)}`);
      });
      if (failures.length) throw new DataplaneError(`sweep ${netns}: could not delete ${failures.join(', ')}`, 'EIO');
      return links.map((l) => l.ifname);
    } finally {
      this.pool.release(h);
    }
  }
}

export function enableIpv6(h: NetnsHandle, p: PreparedEnd): void {
  if (!p.addrs.some((a) => a.family === 6) && !p.routes.some((r) => r.dst.family === 6)) return;
  const { ifname } = p.end;
  // /proc/sys/net shows the namespace of the calling thread, so the write happens setns'd into it.
  try {
    h.inside(() => writeFileSync(`/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`, '0'));
  } catch (err) {
    throw new DataplaneError(`enable IPv6 on ${ifname}: ${messageOf(err)}`, codeOf(err));
  }
}

export interface Step {
  what: string;
  p: Promise<unknown>;
}

export async function settle(steps: Step[]): Promise<void> {
  // allSettled: a rollback must not start while later requests of the batch are still queued.
  const results = await Promise.allSettled(steps.map((s) => s.p));
  const i = results.findIndex((r) => r.status === 'rejected');
  if (i !== -1) throw wrap((steps[i] as Step).what, (results[i] as PromiseRejectedResult).reason);
}

export async function indexOf(h: NetnsHandle, ifname: string): Promise<number> {
  const [l] = await h.request((s: RtNetlinkSocket) => s.getLink({}, { ifname }));
  const idx = l?.data.index;
  if (!idx) throw new DataplaneError(`link ${ifname} vanished right after creation`, 'ENODEV');
  return idx;
}
