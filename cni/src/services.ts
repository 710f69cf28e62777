import { NsUrlError, parseNsUrlList, type NsUrl } from '../../src/client/nsurl.js';
import type { Logger } from '../../src/util/log.js';
import type { CniEnv, NetConf } from './config.js';
import { CniCode, CniError } from './errors.js';

export interface RequestedServices {
  /** Where the list came from, for messages. */
  from: string;
  services: NsUrl[];
}

/**
 * The pod's network services, from the first source that names any: the runtime's capability argument
 * (runtimeConfig.networkServices), CNI_ARGS NSM_NETWORK_SERVICES, then the pod's annotation read through the
 * Kubernetes API (only with a kubeconfig in the configuration). None means this pod asked for nothing.
 */
export async function requestedServices(conf: NetConf, env: CniEnv, timeoutMs: number, log: Logger): Promise<RequestedServices | undefined> {
  const fromRuntime = conf.runtimeConfig?.networkServices?.trim();
  if (fromRuntime) return parse(fromRuntime, 'runtimeConfig.networkServices', CniCode.INVALID_CONFIG);
  const fromArgs = env.args.get('NSM_NETWORK_SERVICES')?.trim();
  if (fromArgs) return parse(percentDecoded(fromArgs), 'CNI_ARGS NSM_NETWORK_SERVICES', CniCode.INVALID_ENV);
  const pod = env.args.get('K8S_POD_NAME');
  const namespace = env.args.get('K8S_POD_NAMESPACE');
  if (!conf.kubeconfig || !pod || !namespace) return undefined;
  // Loaded only here: the Kubernetes client costs ≈0.6 s of start-up, paid on every pod otherwise.
  const { podAnnotation } = await import('./pod-annotation.js');
  const found = await podAnnotation({ kubeconfig: conf.kubeconfig, namespace, pod, timeoutMs });
  log.debug({ pod: `${namespace}/${pod}`, found }, 'pod annotation');
  return found ? parse(found.value, `annotation ${found.key} of ${found.on}`, CniCode.INVALID_CONFIG) : undefined;
}

/**
 * Go plugins (ptp, host-local…) reject a CNI_ARGS value containing "=" and every entry is cut at ";", so
 * labels travel percent-encoded there: `svc/nsm1?app%3Dweb%26tier%3Dfront`.
 */
function percentDecoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new CniError(CniCode.INVALID_ENV, `CNI_ARGS NSM_NETWORK_SERVICES "${text}" has a malformed %-escape (write "=" as %3D, "&" as %26, ";" as %3B)`);
  }
}

function parse(text: string, from: string, code: number): RequestedServices {
  try {
    return { from, services: parseNsUrlList(text) };
  } catch (e) {
    if (e instanceof NsUrlError) throw new CniError(code, `${from}: ${e.message}`);
    throw e;
  }
}
