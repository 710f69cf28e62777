import { CustomObjectsApi, Watch, type KubeConfig } from '@kubernetes/client-node';
import { pino, type Logger } from 'pino';
import { status } from '../../util/errors.js';
import type { Registry } from '../types.js';
import { CrdClient, K8sRegistryError } from './api.js';
import { K8sRegistry } from './k8s-registry.js';
import { loadKubeConfig } from './kubeconfig.js';

export { K8sRegistryError } from './api.js';
export { objectNameFor } from './resources.js';
export { DEFAULT_NAMESPACE, parseK8sRegistryUrl } from './url.js';

/** Upstream's defaultExpiration, as in the other registries. */
export const DEFAULT_MAX_EXPIRATION_MS = 60_000;
/** Per API call; a loaded API server may take seconds, and Requests waiting on the registry have 15 s. */
export const DEFAULT_CALL_TIMEOUT_MS = 5_000;
/** The first list and watch of both kinds. */
export const DEFAULT_START_TIMEOUT_MS = 10_000;
/** client-go's minimum watch timeout (5 min); each watch asks for between this and twice this. */
export const DEFAULT_WATCH_TIMEOUT_SECONDS = 300;

export interface K8sRegistryOptions {
  /** Namespace holding the objects (see parseK8sRegistryUrl). */
  namespace: string;
  /** Where the API server is; default loadKubeConfig(env). */
  kubeConfig?: KubeConfig;
  /** Environment read for NSM_KUBECONFIG, KUBECONFIG and the in-cluster service; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Upper bound on an endpoint's expiration_time, counted from its (re-)registration. Default 60 s. */
  maxExpirationMs?: number;
  logger?: Logger;
  callTimeoutMs?: number;
  startTimeoutMs?: number;
  watchTimeoutSeconds?: number;
  /** How long after the server should have ended a watch a silent one is given up. Default 30 s. */
  watchGraceMs?: number;
  /** Backoff between failed list/watch attempts. Default 200 ms doubling to 10 s. */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** How long after expiry an nsmd deletes endpoint objects other nsmds registered. Default 10 s. */
  foreignCleanupGraceMs?: number;
}

/**
 * A Registry on the networkservicemesh.io/v1 custom resources of one namespace (see K8sRegistry and README.md).
 * Resolves once both kinds are listed and watched; rejects when that does not happen within startTimeoutMs, or the
 * API refuses (no CRDs, no RBAC), with a message saying what to fix.
 */
export async function createK8sRegistry(opts: K8sRegistryOptions): Promise<Registry> {
  const logger = opts.logger ?? pino({ level: 'silent' });
  const maxExpirationMs = opts.maxExpirationMs ?? DEFAULT_MAX_EXPIRATION_MS;
  if (!(maxExpirationMs > 0)) throw new RangeError(`maxExpirationMs must be positive, got ${maxExpirationMs}`);
  const callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  const startTimeoutMs = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  if (!(callTimeoutMs > 0) || !(startTimeoutMs > 0)) throw new RangeError('Kubernetes registry timeouts must be positive');

  const kc = opts.kubeConfig ?? loadKubeConfig(opts.env ?? process.env);
  const server = kc.getCurrentCluster()?.server ?? '(no cluster)';
  const client = new CrdClient(kc.makeApiClient(CustomObjectsApi), server, opts.namespace, callTimeoutMs);
  const registry = new K8sRegistry(client, new Watch(kc), {
    maxExpirationMs,
    logger,
    sync: {
      connectTimeoutMs: callTimeoutMs,
      watchTimeoutSeconds: opts.watchTimeoutSeconds ?? DEFAULT_WATCH_TIMEOUT_SECONDS,
      watchGraceMs: opts.watchGraceMs ?? 30_000,
      backoffMinMs: opts.backoffMinMs ?? 200,
      backoffMaxMs: opts.backoffMaxMs ?? 10_000,
    },
    cleanup: { foreignGraceMs: opts.foreignCleanupGraceMs ?? 10_000, retryMs: 5_000 },
  });

  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new K8sRegistryError(status.UNAVAILABLE, `Kubernetes API at ${server}: registry not listed and watched within ${startTimeoutMs} ms`)),
      startTimeoutMs,
    );
  });
  try {
    await Promise.race([registry.start(), deadline]);
  } catch (err) {
    await registry.close();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  logger.info({ server, namespace: opts.namespace }, 'registry on Kubernetes custom resources');
  return registry;
}
