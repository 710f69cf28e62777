import { createHash } from 'node:crypto';
import type { Mechanism } from '../../api/types.js';
import { KernelParam, MechanismCls, MechanismType } from '../../api/types.js';
import { ifnameProblem } from '../../api/validate.js';
import type { Element } from '../../chain/types.js';
import type { Dataplane } from '../../dataplane/types.js';
import { BadInodeUrlError, NetnsNotFoundError, resolveInodeUrl } from '../../dataplane/netns.js';
import { invalidArgument, notFound } from '../../util/errors.js';
import type { NsmdCloseState, NsmdRequestState } from './state.js';

/**
 * The client side of the KERNEL mechanism, checked before anything is discovered or plumbed, so that a bad
 * Request leaves the kernel untouched: the client's namespace must exist and the interface name must be
 * valid and free there.
 */
export function clientMechanism(dataplane: Dataplane, defaultMtu: number): Element<NsmdRequestState, NsmdCloseState> {
  return {
    name: 'client-mechanism',
    async request(st, next) {
      const conn = st.request.connection;
      const mech = pickKernel(st.request.mechanism_preferences, conn.mechanism);
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
      const ours = st.existing?.dataplane.client;
      const plumbedByUs = ours !== undefined && ours.inodeUrl === inodeUrl && ours.ifname === ifname;
      if (!plumbedByUs && (await dataplane.linkExists(netns, ifname))) {
        throw invalidArgument(`interface "${ifname}" already exists in the client namespace ${inodeUrl}: choose another name`);
      }
      st.clientEnd = { netns, inodeUrl, ifname };
      st.mtu = conn.context?.MTU || st.existing?.dataplane.mtu || defaultMtu;
      const res = await next.request(st);
      res.mechanism = {
        cls: MechanismCls.LOCAL,
        type: MechanismType.KERNEL,
        parameters: { ...mech.parameters, [KernelParam.NAME]: ifname, [KernelParam.INODE_URL]: inodeUrl },
      };
      if (res.context) res.context.MTU = st.mtu;
      return res;
    },
    close: (st, next) => next.close(st),
  };
}

function pickKernel(prefs: Mechanism[], current: Mechanism | null): Mechanism {
  if (current?.type === MechanismType.KERNEL) return current;
  const kernel = prefs.find((m) => m.type === MechanismType.KERNEL);
  if (kernel) return kernel;
  const offered = prefs.map((m) => m.type).join(', ') || 'none';
  throw invalidArgument(
    `no KERNEL mechanism offered (offered: ${offered}); a local client must offer {cls: LOCAL, type: KERNEL, parameters: {name, inodeURL}}`,
  );
}

/** Upstream generates a name when the client gives none; derive it from the id so a refresh reuses it. */
function generatedName(connId: string): string {
  return 'nsm' + createHash('sha256').update(connId).digest('hex').slice(0, 11);
}
