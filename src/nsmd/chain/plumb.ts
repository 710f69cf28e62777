import { KernelParam, MechanismType } from '../../api/types.js';
import type { Connection } from '../../api/types.js';
import type { Element } from '../../chain/types.js';
import type { Dataplane } from '../../dataplane/types.js';
import { NetnsNotFoundError, resolveInodeUrl } from '../../dataplane/netns.js';
import { internal, messageOf } from '../../util/errors.js';
import type { PlumbedEnd } from '../connection-store.js';
import type { NsmdCloseState, NsmdRequestState } from './state.js';
import { vethSpecFor } from './veth-spec.js';

/**
 * Builds the veth pair once the endpoint has answered (its namespace and addresses are known only then),
 * and removes it on Close. If plumbing fails, the endpoint's side of the connection is closed again.
 */
export function plumb(dataplane: Dataplane): Element<NsmdRequestState, NsmdCloseState> {
  return {
    name: 'plumb',
    async request(st, next) {
      const res = await next.request(st);
      try {
        const endpointEnd = await endpointEndOf(res, st.endpoint!.name);
        st.endpointEnd = endpointEnd;
        const client = st.clientEnd!;
        const old = st.existing?.dataplane;
        const unchanged =
          old !== undefined &&
          old.client.inodeUrl === client.inodeUrl &&
          old.client.ifname === client.ifname &&
          old.endpoint.inodeUrl === endpointEnd.inodeUrl &&
          old.endpoint.ifname === endpointEnd.ifname &&
          old.mtu === st.mtu &&
          JSON.stringify(st.existing!.endpoint.connection.context?.ip_context) === JSON.stringify(res.context?.ip_context) &&
          (await dataplane.linkExists(client.netns, client.ifname));
        if (!unchanged) {
          if (old) await removeEnd(dataplane, old.client);
          await dataplane.createVeth(vethSpecFor(st.request.connection.id, st.mtu!, client, endpointEnd, res.context?.ip_context ?? null));
        }
        res.state = 'UP';
        return res;
      } catch (e) {
        st.log.warn({ endpoint: st.endpoint!.name, err: messageOf(e) }, 'plumbing failed; closing the endpoint side');
        await next
          .close({
            connection: res,
            deadline: st.deadline,
            log: st.log,
            record: {
              id: st.request.connection.id,
              clientId: st.request.connection.id,
              connection: res,
              endpoint: { name: st.endpoint!.name, url: st.endpoint!.url, connection: st.endpointConnection ?? res },
              dataplane: { mtu: st.mtu!, client: st.clientEnd!, endpoint: st.endpointEnd ?? st.clientEnd! },
              expiresAt: st.expiresAt ?? Date.now(),
            },
          })
          .catch((err: unknown) => st.log.warn({ err: messageOf(err) }, 'closing the endpoint side failed too'));
        throw e;
      }
    },
    async close(st, next) {
      try {
        await removeEnd(dataplane, st.record.dataplane.client);
      } finally {
        await next.close(st);
      }
    },
  };
}

async function endpointEndOf(res: Connection, endpointName: string): Promise<PlumbedEnd> {
  const mech = res.mechanism;
  const inodeUrl = mech?.parameters[KernelParam.INODE_URL];
  const ifname = mech?.parameters[KernelParam.NAME];
  if (mech?.type !== MechanismType.KERNEL || !inodeUrl || !ifname) {
    throw internal(`endpoint "${endpointName}" answered without a KERNEL mechanism carrying name and inodeURL`);
  }
  return { netns: await resolveInodeUrl(inodeUrl), inodeUrl, ifname };
}

/** Deleting one end of a veth removes both; a namespace that is gone took the pair with it. */
async function removeEnd(dataplane: Dataplane, end: PlumbedEnd): Promise<void> {
  let netns: string;
  try {
    netns = await resolveInodeUrl(end.inodeUrl);
  } catch (e) {
    if (e instanceof NetnsNotFoundError) return;
    throw e;
  }
  await dataplane.deleteVeth({ netns, ifname: end.ifname });
}
