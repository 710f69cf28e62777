import type { Connection } from '../../src/api/types.js';
import type { Invocation } from './invocation.js';
import { CniCode, CniError } from './errors.js';
import { meshFailure, monitoredConnection, openIdentity, requireNsmdSocket } from './mesh.js';
import { readLinks } from './netns-links.js';
import { ifnameOf } from './result.js';
import { requestedServices } from './services.js';
import { readAttachment } from './state.js';
import { atLeast } from './version.js';

/**
 * Verifies what ADD made is still there: each connection known to nsmd and UP, and each interface in the
 * container with its addresses and listed in prevResult.
 */
export async function check(inv: Invocation): Promise<void> {
  const { conf, env, key, log } = inv;
  if (!atLeast(conf.cniVersion, '0.4.0')) {
    throw new CniError(CniCode.INCOMPATIBLE_VERSION, `CHECK needs cniVersion 0.4.0 or later; the configuration says ${conf.cniVersion}`);
  }
  if (!conf.prevResult) throw new CniError(CniCode.INVALID_CONFIG, 'CHECK needs prevResult: the result the runtime got from ADD');
  const att = await readAttachment(key, log);
  if (!att) {
    if (await requestedServices(conf, env, conf.requestTimeout, log)) {
      throw new CniError(CniCode.CONNECTION_MISSING, `the pod asks for network services but nsm-cni has no record of connecting them (was ADD run with dataDir ${conf.dataDir}?)`);
    }
    return;
  }
  // nsmd first: a connection it closed also took its interface, and "closed" is the cause worth reporting.
  await checkInNsmd(inv, att.connections);
  const netns = env.netns!;
  const links = await readLinks(netns);
  for (const conn of att.connections) {
    const name = ifnameOf(conn);
    const link = links.find((l) => l.ifname === name);
    if (!link) throw new CniError(CniCode.INTERFACE_MISMATCH, `interface ${name} (${conn.network_service}) is missing from ${netns}`);
    const lost = (conn.context?.ip_context?.src_ip_addrs ?? []).filter((a) => !link.addrs.includes(a));
    if (lost.length) throw new CniError(CniCode.INTERFACE_MISMATCH, `interface ${name} in ${netns} lacks address(es) ${lost.join(', ')}; it has ${link.addrs.join(', ') || 'none'}`);
    if (!conf.prevResult.interfaces?.some((i) => i.name === name && (i.sandbox === undefined || i.sandbox === netns))) {
      throw new CniError(CniCode.INTERFACE_MISMATCH, `prevResult does not list interface ${name} in ${netns}`);
    }
  }
}

async function checkInNsmd({ conf, log }: Invocation, conns: Connection[]): Promise<void> {
  requireNsmdSocket(conf.nsmSocket);
  const transport = await openIdentity(conf, conf.requestTimeout, log);
  try {
    for (const conn of conns) {
      let seen;
      try {
        seen = await monitoredConnection(conf.nsmSocket, transport, conn, conf.requestTimeout);
      } catch (e) {
        throw meshFailure(e, `looking up connection ${conn.id}`, conf.nsmSocket);
      }
      if (!seen) throw new CniError(CniCode.CONNECTION_MISSING, `nsmd at ${conf.nsmSocket} has no connection ${conn.id} (${conn.network_service}): closed or expired`);
      if (seen.state !== 'UP') throw new CniError(CniCode.CONNECTION_MISSING, `connection ${conn.id} (${conn.network_service}) is ${seen.state} in nsmd`);
    }
  } finally {
    transport.close();
  }
}
