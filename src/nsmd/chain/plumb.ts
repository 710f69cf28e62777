import { randomInt } from 'node:crypto';
import { KernelParam, MechanismCls, MechanismType } from '../../api/types.js';
import type { Connection, IPContext } from '../../api/types.js';
import type { Element } from '../../chain/types.js';
import type { Dataplane } from '../../dataplane/types.js';
import { parseIp } from '../../dataplane/ip.js';
import { NetnsNotFoundError, resolveInodeUrl } from '../../dataplane/netns.js';
import { VNI_MAX, vxlanMtu } from '../../dataplane/vxlan/mtu.js';
import { codeOf } from '../../dataplane/veth/protocol.js';
import { internal, invalidArgument, messageOf, unavailable } from '../../util/errors.js';
import type { ConnectionStore, PlumbedEnd, PlumbedPath, Tunnel } from '../connection-store.js';
import { VxlanParam, WireguardParam } from './client-mechanism.js';
import { wgMtu } from '../../dataplane/wireguard/mtu.js';
import type { WireguardTunnels } from './wireguard-tunnels.js';
import type { Routing } from './routing.js';
import type { NsmdCloseState, NsmdRequestState } from './state.js';
import { routesFor, vethSpecFor } from './veth-spec.js';

/** nsmd's own namespace: the node's, where tunnels' UDP sockets live. */
const NODE_NETNS = '/proc/self/ns/net';
const MTU_CACHE_MS = 10_000;
/** A VNI another tunnel of this node already uses: the peer picks again on a fresh Request. */
const VNI_ATTEMPTS = 3;

/**
 * Builds this node's part of the data path once the next hop has answered (namespaces and addresses are
 * known only then), and removes it on Close:
 * - a local client and a local endpoint: one veth pair, each end born in its namespace;
 * - a local client and an endpoint on another node: this node's tunnel end (VXLAN, or WireGuard with the
 *   key offered by connect), in the client's namespace;
 * - another node's client and a local endpoint: this node's tunnel end in the endpoint's namespace — VXLAN
 *   with a VNI this node chooses, or WireGuard with a key pair and port made here, built before the
 *   requesting node builds its own (the responder first, so the first handshake needs no retry).
 * If plumbing fails, the downstream side of the connection is closed again.
 */
export function plumb(
  dataplane: Dataplane,
  store: ConnectionStore,
  routing: Routing,
  defaultMtu: number,
  wireguard: () => WireguardTunnels,
): Element<NsmdRequestState, NsmdCloseState> {
  const removeEnd = (connId: string, path: PlumbedPath) => removeDevice(dataplane, wireguard, connId, path);
  const replaceOld = async (st: NsmdRequestState) => {
    if (st.existing) await removeEnd(st.existing.id, st.existing.dataplane);
  };
  // The underlay's MTU changes rarely; asking the kernel on every Request costs a worker round trip.
  const mtuCache = new Map<string, { mtu: number; at: number }>();
  const underlayMtu = async (ip: string): Promise<number> => {
    const hit = mtuCache.get(ip);
    if (hit && Date.now() - hit.at < MTU_CACHE_MS) return hit.mtu;
    const mtu = await dataplane.underlayMtu(NODE_NETNS, ip);
    mtuCache.set(ip, { mtu, at: Date.now() });
    return mtu;
  };
  const build = async (st: NsmdRequestState, res: Connection): Promise<PlumbedPath> => {
    const connId = st.request.connection.id;
    const ip = res.context?.ip_context ?? null;
    if (st.incomingTunnel) {
      // Another node's client: this node's tunnel end goes into the local endpoint's namespace.
      const ep = await kernelEndOf(res, st.endpoint!.name);
      const inc = st.incomingTunnel;
      const localIp = routing.tunnelIp!;
      // Another domain reaches this node at its outside address (NAT address map); its own nodes at localIp.
      const dstIp = st.fromOtherDomain ? routing.addressMap.external(localIp) : localIp;
      const podEnd = { netns: ep.netns, ifname: ep.ifname, addrs: ip?.dst_ip_addrs ?? [], routes: routesFor(ip?.src_ip_addrs ?? [], ip?.dst_routes ?? []) };
      const common = { [VxlanParam.SRC_IP]: inc.srcIp, [VxlanParam.DST_IP]: dstIp, [VxlanParam.SRC_PORT]: String(inc.srcPort) };
      if (inc.type === 'WIREGUARD') {
        const mtu = Math.min(st.mtu ?? Infinity, wgMtu(await underlayMtu(localIp), localIp));
        const old = st.existing?.dataplane.tunnel;
        const tunnel: Tunnel = { type: 'WIREGUARD', localIp, remoteIp: inc.srcIp, vni: 0, port: old?.port ?? 0, peerPort: inc.srcPort, keyBornAt: old?.keyBornAt };
        const known = st.existing?.connection.mechanism?.parameters;
        let publicKey = known?.[WireguardParam.DST_PUBLIC_KEY];
        const peer = { publicKey: inc.srcPublicKey!, ip: inc.srcIp, port: inc.srcPort };
        if (!old || !(await unchanged(dataplane, st, { mtu, local: ep, tunnel }, ip))) {
          await replaceOld(st);
          const own = wireguard().offer();
          try {
            await wireguard().create(connId, NODE_NETNS, own, peer, podEnd, mtu);
          } catch (e) {
            wireguard().release(own);
            throw e;
          }
          tunnel.port = own.port;
          tunnel.keyBornAt = Date.now();
          publicKey = own.publicKey;
        } else if (known?.[WireguardParam.SRC_PUBLIC_KEY] !== inc.srcPublicKey) {
          // The requesting node rotated its key: rotate ours with it, so both ends change in one step each.
          const own = wireguard().rekeyOffer(tunnel.port);
          await wireguard().rekey(connId, own, peer);
          tunnel.keyBornAt = Date.now();
          publicKey = own.publicKey;
        }
        res.mechanism = {
          cls: MechanismCls.REMOTE,
          type: MechanismType.WIREGUARD,
          parameters: {
            ...common, [VxlanParam.DST_PORT]: String(tunnel.port), [VxlanParam.MTU]: String(mtu),
            [WireguardParam.SRC_PUBLIC_KEY]: inc.srcPublicKey!, [WireguardParam.DST_PUBLIC_KEY]: publicKey!,
          },
        };
        return { mtu, local: ep, tunnel };
      }
      const tunnel: Tunnel = {
        type: 'VXLAN',
        localIp,
        remoteIp: inc.srcIp,
        vni: st.existing?.dataplane.tunnel?.vni ?? chooseVni(store, inc.srcIp, localIp),
        port: inc.srcPort || routing.vxlanPort,
      };
      const mtu = Math.min(st.mtu ?? Infinity, vxlanMtu(await underlayMtu(localIp), localIp));
      const plumbed = { mtu, local: ep, tunnel };
      if (!(await unchanged(dataplane, st, plumbed, ip))) {
        await replaceOld(st);
        await dataplane.createVxlan({ connId, underlayNetns: NODE_NETNS, localIp, remoteIp: inc.srcIp, vni: tunnel.vni, port: tunnel.port, mtu, end: podEnd });
      }
      res.mechanism = {
        cls: MechanismCls.REMOTE,
        type: MechanismType.VXLAN,
        parameters: { ...common, [VxlanParam.DST_PORT]: String(tunnel.port), [VxlanParam.VNI]: String(tunnel.vni), [VxlanParam.MTU]: String(mtu) },
      };
      return plumbed;
    }
    const client = st.clientEnd!;
    if (st.target!.kind === 'remote') {
      // The endpoint is on another node, whose nsmd chose the mechanism and built its end already.
      const p = res.mechanism?.parameters ?? {};
      const remoteIp = p[VxlanParam.DST_IP] ?? '';
      const type = res.mechanism?.type;
      if ((type !== MechanismType.VXLAN && type !== MechanismType.WIREGUARD) || !parseIp(remoteIp)) {
        throw internal(`the nsmd at ${st.target!.url} answered without a usable VXLAN or WIREGUARD mechanism`);
      }
      const mtu = Math.min(st.mtu ?? Infinity, Number(p[VxlanParam.MTU]) || defaultMtu);
      const podEnd = { netns: client.netns, ifname: client.ifname, addrs: ip?.src_ip_addrs ?? [], routes: routesFor(ip?.dst_ip_addrs ?? [], ip?.src_routes ?? []) };
      if (type === MechanismType.WIREGUARD) {
        const peerPort = Number(p[VxlanParam.DST_PORT]);
        const old = st.existing?.dataplane.tunnel;
        const tunnel: Tunnel = { type: 'WIREGUARD', localIp: routing.tunnelIp!, remoteIp, vni: 0, port: old?.port ?? st.wireguardOffer?.port ?? 0, peerPort, keyBornAt: old?.keyBornAt };
        const plumbed = { mtu, local: client, tunnel };
        const peer = { publicKey: p[WireguardParam.DST_PUBLIC_KEY] ?? '', ip: remoteIp, port: peerPort };
        const rekey = st.wireguardRekey;
        st.wireguardRekey = undefined;
        if (!old || !(await unchanged(dataplane, st, plumbed, ip))) {
          const offer = st.wireguardOffer ?? rekey;
          if (!offer) throw internal('a WireGuard answer came back for a Request that offered no WireGuard key');
          await replaceOld(st);
          await wireguard().create(connId, NODE_NETNS, offer, peer, podEnd, mtu);
          st.wireguardOffer = undefined;
          tunnel.keyBornAt = Date.now();
        } else if (rekey) {
          // The peer answers with the key it now expects from us (and its own, new or not): switch this end to match.
          if (p[WireguardParam.SRC_PUBLIC_KEY] !== rekey.publicKey) {
            throw internal(`the nsmd at ${st.target!.url} did not take this node's rotated WireGuard key`);
          }
          await wireguard().rekey(connId, rekey, peer);
          tunnel.keyBornAt = Date.now();
        }
        return plumbed;
      }
      if (st.wireguardOffer) {
        // The peer chose VXLAN: the WireGuard key and port offered alongside are not needed.
        wireguard().release(st.wireguardOffer);
        st.wireguardOffer = undefined;
      }
      const vni = Number(p[VxlanParam.VNI]);
      if (!Number.isInteger(vni)) throw internal(`the nsmd at ${st.target!.url} answered VXLAN without a VNI`);
      const tunnel: Tunnel = { type: 'VXLAN', localIp: routing.tunnelIp!, remoteIp, vni, port: Number(p[VxlanParam.DST_PORT]) || routing.vxlanPort };
      const plumbed = { mtu, local: client, tunnel };
      if (!(await unchanged(dataplane, st, plumbed, ip))) {
        await replaceOld(st);
        await dataplane.createVxlan({ connId, underlayNetns: NODE_NETNS, localIp: tunnel.localIp, remoteIp, vni, port: tunnel.port, mtu, end: podEnd });
      }
      return plumbed;
    }
    const ep = await kernelEndOf(res, st.endpoint!.name);
    const mtu = st.mtu ?? st.existing?.dataplane.mtu ?? defaultMtu;
    const plumbed = { mtu, local: client, peer: ep };
    if (!(await unchanged(dataplane, st, plumbed, ip))) {
      await replaceOld(st);
      await dataplane.createVeth(vethSpecFor(connId, mtu, client, ep, ip));
    }
    return plumbed;
  };

  return {
    name: 'plumb',
    async request(st, next) {
      for (let attempt = 1; ; attempt++) {
        const res = await next.request(st);
        try {
          if (await st.clientNameTaken) {
            const c = st.clientEnd!;
            throw invalidArgument(`interface "${c.ifname}" already exists in the client namespace ${c.inodeUrl}: choose another name`);
          }
          const plumbed = await build(st, res);
          st.plumbed = plumbed;
          res.state = 'UP';
          if (res.context) res.context.MTU = plumbed.mtu;
          return res;
        } catch (e) {
          st.log.warn({ endpoint: st.endpoint!.name, err: messageOf(e) }, 'plumbing failed; closing the downstream side');
          if (st.wireguardOffer) {
            wireguard().release(st.wireguardOffer);
            st.wireguardOffer = undefined;
          }
          await next
            .close({ connection: res, deadline: st.deadline, log: st.log, record: provisional(st, res) })
            .catch((err: unknown) => st.log.warn({ err: messageOf(err) }, 'closing the downstream side failed too'));
          // Only a VNI clash on this node is worth another try: the peer chooses a new VNI for a new Request.
          const vniClash = st.target?.kind === 'remote' && !st.existing && codeOf(e) === 'EEXIST' && attempt < VNI_ATTEMPTS;
          if (!vniClash) throw e;
        }
      }
    },
    async close(st, next) {
      // This node's device and the next hop's side are independent: removing them at once halves a remote
      // Close, whose deletes (≈20 ms each in the kernel) would otherwise run one node after the other.
      const [local, downstream] = await Promise.allSettled([removeEnd(st.record.id, st.record.dataplane), next.close(st)]);
      if (local.status === 'rejected') throw local.reason;
      if (downstream.status === 'rejected') throw downstream.reason;
    },
  };
}

function provisional(st: NsmdRequestState, res: Connection) {
  return {
    id: st.request.connection.id,
    clientId: st.request.connection.id,
    connection: res,
    endpoint: { name: st.endpoint!.name, url: st.target?.url ?? st.endpoint!.url, connection: st.endpointConnection ?? res },
    dataplane: { mtu: 0, local: st.clientEnd ?? { netns: '', inodeUrl: '', ifname: '' } },
    expiresAt: st.expiresAt ?? Date.now(),
  };
}

/** A refresh that changes nothing touches nothing in the kernel. */
async function unchanged(dataplane: Dataplane, st: NsmdRequestState, now: PlumbedPath, ip: IPContext | null): Promise<boolean> {
  const old = st.existing?.dataplane;
  if (!old) return false;
  return (
    JSON.stringify({ ...old, local: { ...old.local, netns: '' }, peer: old.peer && { ...old.peer, netns: '' } }) ===
      JSON.stringify({ ...now, local: { ...now.local, netns: '' }, peer: now.peer && { ...now.peer, netns: '' } }) &&
    JSON.stringify(st.existing!.endpoint.connection.context?.ip_context) === JSON.stringify(ip) &&
    (await dataplane.linkExists(now.local.netns, now.local.ifname))
  );
}

/**
 * This node's VNI for a tunnel another node asked for: upstream's rule (random, even when the client's
 * address sorts first, odd otherwise), and unused by every tunnel of this node — the kernel allows one
 * device per VNI and port in a namespace, whoever the peer is.
 */
function chooseVni(store: ConnectionStore, srcIp: string, dstIp: string): number {
  const used = new Set(store.all().flatMap((r) => (r.dataplane.tunnel ? [r.dataplane.tunnel.vni] : [])));
  const a = parseIp(srcIp)!.bytes;
  const b = parseIp(dstIp)!.bytes;
  const parity = Buffer.compare(a, b) <= 0 ? 0 : 1;
  for (let i = 0; i < 64; i++) {
    const vni = (randomInt(1, VNI_MAX >> 1) << 1) | parity;
    if (!used.has(vni)) return vni;
  }
  throw unavailable('no free VXLAN network identifier found on this node');
}

async function kernelEndOf(res: Connection, endpointName: string): Promise<PlumbedEnd> {
  const mech = res.mechanism;
  const inodeUrl = mech?.parameters[KernelParam.INODE_URL];
  const ifname = mech?.parameters[KernelParam.NAME];
  if (mech?.type !== MechanismType.KERNEL || !inodeUrl || !ifname) {
    throw internal(`endpoint "${endpointName}" answered without a KERNEL mechanism carrying name and inodeURL`);
  }
  return { netns: await resolveInodeUrl(inodeUrl), inodeUrl, ifname };
}

/**
 * Removes this node's device of a connection: its wireguard-go (which takes its TUN with it), or the veth
 * or VXLAN device — deleting one end of a veth removes both; a namespace that is gone took the device with it.
 */
async function removeDevice(dataplane: Dataplane, wireguard: () => WireguardTunnels, connId: string, path: PlumbedPath): Promise<void> {
  if (path.tunnel?.type === 'WIREGUARD') return wireguard().remove(connId);
  let netns: string;
  try {
    netns = await resolveInodeUrl(path.local.inodeUrl);
  } catch (e) {
    if (e instanceof NetnsNotFoundError) return;
    throw e;
  }
  const end = { netns, ifname: path.local.ifname };
  await (path.tunnel ? dataplane.deleteVxlan(end) : dataplane.deleteVeth(end));
}
