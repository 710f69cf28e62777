import { createHash } from 'node:crypto';
import type { Connection, Mechanism } from '../../api/types.js';
import { KernelParam, MechanismCls, MechanismType } from '../../api/types.js';
import { ifnameProblem } from '../../api/validate.js';
import type { Element } from '../../chain/types.js';
import type { Dataplane } from '../../dataplane/types.js';
import { parseIp } from '../../dataplane/ip.js';
import { BadInodeUrlError, NetnsNotFoundError, resolveInodeUrl } from '../../dataplane/netns.js';
import { invalidArgument, notFound } from '../../util/errors.js';
import type { NsmdCloseState, NsmdRequestState } from './state.js';

export const VxlanParam = { SRC_IP: 'src_ip', DST_IP: 'dst_ip', SRC_PORT: 'src_port', DST_PORT: 'dst_port', VNI: 'vni', MTU: 'MTU' } as const;
export const WireguardParam = { SRC_PUBLIC_KEY: 'src_public_key', DST_PUBLIC_KEY: 'dst_public_key' } as const;

/**
 * The mechanism the caller offers, checked before anything is discovered or plumbed so that a bad Request
 * leaves the kernel untouched. A local client offers KERNEL: its namespace must exist and the interface name
 * must be valid and free there. Another node's nsmd (on the remote API only) offers VXLAN with its tunnel
 * address.
 */
export function clientMechanism(dataplane: Dataplane, acceptTunnels: readonly string[]): Element<NsmdRequestState, NsmdCloseState> {
  return {
    name: 'client-mechanism',
    async request(st, next) {
      const conn = st.request.connection;
      const mech = pick(st.request.mechanism_preferences, conn.mechanism, acceptTunnels);
      st.mtu = conn.context?.MTU || undefined;
      if (mech.type === MechanismType.VXLAN || mech.type === MechanismType.WIREGUARD) {
        const srcIp = mech.parameters[VxlanParam.SRC_IP] ?? '';
        if (!parseIp(srcIp)) throw invalidArgument(`${mech.type} mechanism: src_ip "${srcIp}" is not an IP address`);
        if (mech.type === MechanismType.VXLAN) {
          st.incomingTunnel = { type: 'VXLAN', srcIp, srcPort: Number(mech.parameters[VxlanParam.SRC_PORT]) || 4789 };
        } else {
          const srcPort = Number(mech.parameters[VxlanParam.SRC_PORT]);
          const srcPublicKey = mech.parameters[WireguardParam.SRC_PUBLIC_KEY] ?? '';
          if (!Number.isInteger(srcPort) || srcPort < 1 || srcPort > 65535) throw invalidArgument('WIREGUARD mechanism: src_port is not a port');
          if (!/^[A-Za-z0-9+/]{43}=$/.test(srcPublicKey)) throw invalidArgument('WIREGUARD mechanism: src_public_key is not a base64 WireGuard key');
          st.incomingTunnel = { type: 'WIREGUARD', srcIp, srcPort, srcPublicKey };
        }
        return next.request(st);
      }
      const ifname = mech.parameters[KernelParam.NAME] || generatedName(conn.id);
      const problem = ifnameProblem(ifname);
      if (problem) throw invalidArgument(`interface name "${ifname}" is not valid: ${problem}`);
      const inodeUrl = mech.parameters[KernelParam.INODE_URL] ?? '';
      let netns: string;
      try {
        netns = await resolveInodeUrl(inodeUrl);
      } catch (e) {
        if (e instanceof BadInodeUrlError) throw invalidArgument(`mechanism parameter inodeURL: ${e.message}`);
        if (e instanceof NetnsNotFoundError) throw notFound(`client network namespace ${inodeUrl} does not exist: ${e.message}`);
        throw e;
      }
      const ours = st.existing?.dataplane.local;
      const plumbedByUs = ours !== undefined && ours.inodeUrl === inodeUrl && ours.ifname === ifname;
      // The kernel's answer (a worker round trip) is not waited for here but in plumb, before anything is
      // built: discovery and the next hop's answer take longer than the question.
      if (!plumbedByUs) st.clientNameTaken = dataplane.linkExists(netns, ifname);
      st.clientEnd = { netns, inodeUrl, ifname };
      let res: Connection;
      try {
        res = await next.request(st);
      } finally {
        // Failed before plumb looked: the answer is not needed, but must not surface as an unhandled rejection.
        st.clientNameTaken?.catch(() => undefined);
      }
      res.mechanism = {
        cls: MechanismCls.LOCAL,
        type: MechanismType.KERNEL,
        parameters: { ...mech.parameters, [KernelParam.NAME]: ifname, [KernelParam.INODE_URL]: inodeUrl },
      };
      return res;
    },
    close: (st, next) => next.close(st),
  };
}

/** The caller's order of preference wins among the mechanisms this API accepts. */
function pick(prefs: Mechanism[], current: Mechanism | null, acceptTunnels: readonly string[]): Mechanism {
  const usable = (m: Mechanism) => m.type === MechanismType.KERNEL || acceptTunnels.includes(m.type);
  if (current && usable(current)) return current;
  const m = prefs.find(usable);
  if (m) return m;
  const offered = prefs.map((p) => p.type).join(', ') || 'none';
  throw invalidArgument(
    acceptTunnels.length
      ? `no supported mechanism offered (offered: ${offered}); this node accepts ${acceptTunnels.join(', ')} (NSM_MECHANISM_PRIORITY)`
      : `no KERNEL mechanism offered (offered: ${offered}); a local client must offer {cls: LOCAL, type: KERNEL, parameters: {name, inodeURL}}`,
  );
}

/** Upstream generates a name when the client gives none; derive it from the id so a refresh reuses it. */
export function generatedName(connId: string): string {
  return 'nsm' + createHash('sha256').update(connId).digest('hex').slice(0, 11);
}
