import { statSync } from 'node:fs';
import { MeshClient } from '../../src/client/nsc.js';
import type { CniEnv } from './config.js';
import { CniCode, CniError } from './errors.js';
import { meshFailure, openIdentity, requireNsmdSocket } from './mesh.js';
import { readLinks } from './netns-links.js';
import { appendConnections, baseResult, ifnameOf, type CniResult } from './result.js';
import { requestedServices, type RequestedServices } from './services.js';
import type { Invocation } from './invocation.js';
import { lockedAttachment, writeAttachment } from './state.js';

/** Connection ids are `<name>-<i>`: stable per attachment, so a repeated ADD refreshes rather than duplicates. */
export function clientName(env: CniEnv): string {
  return `cni-${env.containerId}-${env.ifname}`;
}

/**
 * Requests the pod's network services into CNI_NETNS and returns the previous result with their interfaces
 * added. A pod that asks for none passes through untouched. All or nothing: on any failure the connections
 * made so far are closed before the error is returned.
 */
export async function add(inv: Invocation): Promise<CniResult> {
  const { conf, env, key, log } = inv;
  const result = baseResult(conf.prevResult, conf.cniVersion);
  const wanted = await requestedServices(conf, env, conf.requestTimeout, log);
  if (!wanted) return result;
  const netns = env.netns!;
  try {
    statSync(netns);
  } catch (e) {
    throw new CniError(CniCode.CONTAINER_UNKNOWN, `CNI_NETNS ${netns} does not exist: ${(e as Error).message}`);
  }
  requireNsmdSocket(conf.nsmSocket);
  // Held until the record is written, so nsm-cni-refresher never works on a half-made attachment.
  return lockedAttachment(key, conf.requestTimeout, () => connect(inv, wanted, result));
}

async function connect({ conf, env, key, log }: Invocation, wanted: RequestedServices, result: CniResult): Promise<CniResult> {
  const netns = env.netns!;
  const transport = await openIdentity(conf, conf.requestTimeout, log);
  const client = new MeshClient({
    name: clientName(env),
    connectTo: conf.nsmSocket,
    services: wanted.services,
    labels: {},
    podName: env.args.get('K8S_POD_NAME') ?? '',
    nodeName: '',
    requestTimeoutMs: conf.requestTimeout,
    maxTokenLifetimeMs: conf.maxTokenLifetime,
    transport,
    log,
    netns,
  });
  try {
    let conns;
    try {
      conns = await client.requestAll();
    } catch (e) {
      throw meshFailure(e, `requesting ${wanted.services.map((s) => s.service).join(', ')} (from ${wanted.from})`, conf.nsmSocket);
    }
    try {
      const links = await readLinks(netns);
      const missing = conns.map(ifnameOf).filter((name) => !links.some((l) => l.ifname === name));
      if (missing.length) throw new CniError(CniCode.MESH_REQUEST_FAILED, `nsmd reported interface(s) ${missing.join(', ')} but ${netns} does not hold them`);
      await writeAttachment(key, { netns, from: wanted.from, connections: conns });
      log.info({ from: wanted.from, interfaces: conns.map(ifnameOf) }, 'network services connected');
      return appendConnections(result, conns, links, netns);
    } catch (e) {
      await client.closeAll();
      throw e;
    }
  } finally {
    client.dispose();
  }
}
