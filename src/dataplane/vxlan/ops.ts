/**
 * VXLAN ends of remote (cross-node) connections, run inside the netlink worker next to the veth Ops.
 *
 * The device is created by a request on the underlay namespace's socket with IFLA_NET_NS_FD naming the pod
 * namespace: the kernel keeps the namespace the request came from as the tunnel's "link net", and that is
 * where vxlan opens its UDP socket (on first up) and routes the outer packets, while the device itself,
 * with the connection's addresses and routes, is born in the pod. Nothing is moved between namespaces:
 * measured here (50 sequential creates incl. alias, address, route and up, three rounds), born in the pod
 * took 0.87–1.45 ms per tunnel, while creating it in the node under a temporary name and moving it with
 * IFLA_NET_NS_FD in a setlink (what upstream v0.2's kernel forwarder did) took 18.6–22.2 ms, the move
 * paying a synchronize_net. Both carried traffic; deletion is the same ~19 ms either way.
 *
 * What the tunnel attributes do:
 * - remote (IFLA_VXLAN_GROUP/GROUP6): a unicast address becomes the default destination, the all-zeros
 *   FDB entry, used for every frame without a more specific FDB entry, broadcasts (ARP) and multicast
 *   (IPv6 neighbour discovery) included. So two ends that name each other work with no FDB programming.
 * - learning off: received frames do not add FDB entries. Every frame goes to `remote`, and nothing a
 *   third party sends can redirect this end's traffic. The kernel does not drop frames from other sources
 *   on receipt, though: the UDP socket listens on the wildcard address, and any underlay host that can
 *   reach the port with the right VNI can inject frames. The underlay has to be trusted, as upstream assumes.
 * - local (IFLA_VXLAN_LOCAL/LOCAL6): only the outer source address. The kernel accepts any address, but one
 *   the underlay namespace does not own makes every transmit fail its route lookup, visible only as tx
 *   errors on the device; createVxlan checks it up front instead.
 * - link (IFLA_VXLAN_LINK), deliberately not set: it would pin egress to one underlay device (needed for
 *   multicast groups and IPv6 link-local underlays), derive the default MTU from that device and cap the MTU
 *   at its MTU minus the headers. Without it the underlay's routing table picks the egress, so a replaced
 *   or renumbered node interface does not break tunnels, and the MTU is whatever the caller computed.
 * - port (IFLA_VXLAN_PORT): the destination port of outer packets and the port the socket listens on.
 *
 * Linux allows one device per (VNI, port, address family) in a link net: a second gets EEXIST ("A VXLAN
 * device with the specified VNI already exists") whatever its local and remote addresses, because receive
 * demultiplexes on the VNI alone. A VNI therefore names one tunnel per node and port, not per peer.
 */
import { FlagsNew, ifla } from 'netlink';
import { afOf, formatIp, parseIp, type Family } from '../ip.js';
import { ALIAS_PREFIX, type VxlanEnd } from '../types.js';
import { DataplaneError, codeOf, messageOf } from '../veth/protocol.js';
import type { NetnsHandle, PoolLog, SocketPool } from '../veth/sockets.js';
import { IFALIASZ, attrs, enableIpv6, indexOf, invalid, prepareEnd, settle, validateIfname, wrap, type Ops, type PreparedEnd } from '../veth/ops.js';
import { VNI_MAX, VNI_MIN, VXLAN_PORT } from './mtu.js';

interface PreparedVxlan {
  spec: VxlanEnd;
  alias: string;
  end: PreparedEnd;
  family: Family;
  local: Buffer;
  remote: Buffer;
  port: number;
}

function isMulticast(family: Family, b: Buffer): boolean {
  return family === 4 ? ((b[0] as number) & 0xf0) === 0xe0 : b[0] === 0xff;
}

function prepare(spec: VxlanEnd): PreparedVxlan {
  if (!spec || typeof spec.connId !== 'string' || spec.connId === '') throw invalid('createVxlan: connId missing');
  const where = `createVxlan ${spec.connId}`;
  const alias = `${ALIAS_PREFIX}${spec.connId}`;
  if (Buffer.byteLength(alias) >= IFALIASZ) throw invalid(`${where}: connId too long for a link alias (${IFALIASZ - 1} bytes with prefix)`);
  if (typeof spec.underlayNetns !== 'string' || spec.underlayNetns === '') throw invalid(`${where}: underlay netns path missing`);
  if (!Number.isInteger(spec.mtu) || spec.mtu < 68 || spec.mtu > 65535) throw invalid(`${where}: mtu ${spec.mtu} must be an integer in 68..65535`);
  if (!Number.isInteger(spec.vni) || spec.vni < VNI_MIN || spec.vni > VNI_MAX) throw invalid(`${where}: vni ${spec.vni} must be an integer in ${VNI_MIN}..${VNI_MAX}`);
  const port = spec.port ?? VXLAN_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`${where}: port ${port} must be an integer in 1..65535`);
  const local = parseIp(String(spec.localIp));
  const remote = parseIp(String(spec.remoteIp));
  if (!local) throw invalid(`${where}: bad local underlay address ${JSON.stringify(spec.localIp)}`);
  if (!remote) throw invalid(`${where}: bad remote underlay address ${JSON.stringify(spec.remoteIp)}`);
  if (local.family !== remote.family) throw invalid(`${where}: local ${spec.localIp} and remote ${spec.remoteIp} differ in address family`);
  // A multicast remote turns the device into a group member, which needs `link` and a different FDB story.
  if (isMulticast(remote.family, remote.bytes) || remote.bytes.every((x) => x === 0)) throw invalid(`${where}: remote ${spec.remoteIp} must be a unicast address`);
  if (isMulticast(local.family, local.bytes) || local.bytes.every((x) => x === 0)) throw invalid(`${where}: local ${spec.localIp} must be a unicast address`);
  const end = prepareEnd(spec.end, `${where} end`);
  return { spec, alias, end, family: local.family, local: local.bytes, remote: remote.bytes, port };
}

function vxlanLinkinfo(p: PreparedVxlan): Buffer {
  const port = Buffer.alloc(2);
  port.writeUInt16BE(p.port);
  const data = attrs(
    ifla.formatVxlan({
      id: p.spec.vni,
      ...(p.family === 4 ? { group: p.remote, local: p.local } : { group6: p.remote, local6: p.local }),
      port,
      learning: 0,
    }),
  );
  return attrs(ifla.formatInfo({ kind: 'vxlan', data }));
}

export class VxlanOps {
  constructor(
    private readonly pool: SocketPool,
    private readonly log: PoolLog,
    private readonly ops: Ops,
  ) {}

  async createVxlan(spec: VxlanEnd): Promise<void> {
    const p = prepare(spec);
    const { ifname, netns } = p.end.end;
    const what = `createVxlan ${spec.connId} (${ifname} in ${netns}, vni ${spec.vni} ${spec.localIp} -> ${spec.remoteIp} via ${spec.underlayNetns})`;
    let u: NetnsHandle | undefined;
    let pod: NetnsHandle | undefined;
    try {
      try {
        u = this.pool.acquire(spec.underlayNetns);
        pod = this.pool.acquire(netns);
      } catch (err) {
        throw wrap(what, err);
      }
      const uh = u;
      const ph = pod;
      await this.checkLocal(uh, p, what);
      try {
        // No ECHO: the kernel unicasts the echo from the device's namespace (the pod's) to this socket's port
        // id, which there names some other socket (likely our own pod socket, as ids default to the process
        // id in every namespace). The name lookup below costs a round trip but no kernel lock wait.
        await uh.request((s) =>
          s.newLink({}, { ifname, mtu: spec.mtu, netNsFd: ph.fd, linkinfo: vxlanLinkinfo(p) }, { flags: FlagsNew.CREATE | FlagsNew.EXCL }),
        );
      } catch (err) {
        throw await this.explainCreateFailure(what, err, ph, ifname, p);
      }
      let index: number | undefined;
      try {
        index = await indexOf(ph, ifname);
        enableIpv6(ph, p.end);
        await settle(this.ops.configure(ph, p.end, index, p.alias));
      } catch (err) {
        const failure = wrap(what, err);
        try {
          await this.ops.deleter.delete(ph, index ? { index } : { ifname });
        } catch (rbErr) {
          this.log('error', 'rollback of half-made vxlan failed', { connId: spec.connId, err: messageOf(rbErr) });
          throw new DataplaneError(`${failure.message}; rollback also failed: ${messageOf(rbErr)}`, failure.code, failure.errno);
        }
        throw failure;
      }
    } finally {
      if (u) this.pool.release(u);
      if (pod) this.pool.release(pod);
    }
  }

  /** A route lookup (no dump, so it does not stall other requests on the socket) says whether the node owns it. */
  private async checkLocal(uh: NetnsHandle, p: PreparedVxlan, what: string): Promise<void> {
    let local = false;
    try {
      const [r] = await uh.request((s) => s.getRoute({ family: afOf(p.family), dstLen: p.family === 4 ? 32 : 128 }, { dst: p.local }));
      local = r?.data.type === 'LOCAL';
    } catch (err) {
      if (codeOf(err) !== 'ENETUNREACH' && codeOf(err) !== 'EHOSTUNREACH') throw wrap(`${what}: look up local address`, err);
    }
    if (!local) {
      // IPv6 addresses get their local route only once duplicate address detection has passed.
      throw new DataplaneError(`${what}: local ${p.spec.localIp} is not a usable address in underlay ${p.spec.underlayNetns}`, 'EADDRNOTAVAIL');
    }
  }

  /** netlink gives no extack text, and EEXIST has two causes worth telling apart for whoever reads the log. */
  private async explainCreateFailure(what: string, err: unknown, pod: NetnsHandle, ifname: string, p: PreparedVxlan): Promise<DataplaneError> {
    const code = codeOf(err);
    if (code !== 'EEXIST') return wrap(`${what}: create vxlan`, err);
    let nameTaken: boolean;
    try {
      await pod.request((s) => s.getLink({}, { ifname }));
      nameTaken = true;
    } catch {
      nameTaken = false;
    }
    const why = nameTaken
      ? `interface ${ifname} already exists in ${pod.path}`
      : `VNI ${p.spec.vni} is already used by another VXLAN device on port ${p.port} (IPv${p.family}) in underlay ${p.spec.underlayNetns}`;
    return new DataplaneError(`${what}: create vxlan: EEXIST: ${why}`, 'EEXIST');
  }

  async deleteVxlan(netns: string, ifname: string): Promise<void> {
    validateIfname(ifname, 'deleteVxlan');
    let h: NetnsHandle;
    try {
      h = this.pool.acquire(netns);
    } catch (err) {
      if (codeOf(err) === 'ENOENT') return; // the pod namespace is gone and took the device with it
      throw wrap(`deleteVxlan ${ifname}`, err);
    }
    try {
      await this.ops.deleter.delete(h, { ifname });
    } catch (err) {
      throw wrap(`deleteVxlan ${ifname} in ${netns}`, err);
    } finally {
      this.pool.release(h);
    }
  }

  async underlayMtu(netns: string, ip: string): Promise<number> {
    const addr = parseIp(String(ip));
    if (!addr) throw invalid(`underlayMtu: bad address ${JSON.stringify(ip)}`);
    const what = `underlayMtu ${ip} in ${netns}`;
    let h: NetnsHandle;
    try {
      h = this.pool.acquire(netns);
    } catch (err) {
      throw wrap(what, err);
    }
    try {
      const family = afOf(addr.family);
      const [route] = await h.request((s) =>
        s.getRoute({ family, dstLen: addr.family === 4 ? 32 : 128 }, { dst: addr.bytes }),
      );
      if (!route) throw new DataplaneError('no route', 'ENETUNREACH');
      let index = route.attrs.oif;
      // A local address resolves to lo; the device that holds the address is the one whose MTU matters.
      if (route.data.type === 'LOCAL') {
        const addrs = await h.dump((s) => s.getAddresses({ family }));
        const owner = addrs.find((a) => {
          const b = a.attrs.local ?? a.attrs.address;
          return b !== undefined && b.equals(addr.bytes);
        });
        index = owner?.data.index ?? index;
      }
      if (!index) throw new DataplaneError(`the route to ${formatIp(addr.bytes)} has no output device`, 'ENETUNREACH');
      const [link] = await h.request((s) => s.getLink({ index }));
      const devMtu = link?.attrs.mtu;
      if (!devMtu) throw new DataplaneError(`device ${index} reports no MTU`, 'ENODEV');
      const routeMtu = route.attrs.metrics?.mtu;
      const metric = routeMtu && routeMtu.length >= 4 ? routeMtu.readUInt32LE(0) : 0;
      return metric > 0 ? Math.min(devMtu, metric) : devMtu;
    } catch (err) {
      throw wrap(what, err);
    } finally {
      this.pool.release(h);
    }
  }
}
