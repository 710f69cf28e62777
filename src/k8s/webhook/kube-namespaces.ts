/**
 * Namespace lookups against the Kubernetes API server through @kubernetes/client-node (`GET /api/v1/namespaces/NAME`,
 * which the webhook's ServiceAccount needs `get` on `namespaces` for).
 */
import type { ConfigurationOptions, ObservableMiddleware } from '@kubernetes/client-node';
import type { Logger } from '../../util/log.js';
import type { NamespaceInfo, NamespaceLookup } from './namespaces.js';

export interface KubeNamespacesOptions {
  /** A kubeconfig file; empty: the in-cluster ServiceAccount (token and CA mounted into the pod). */
  kubeconfig: string;
  timeoutMs: number;
  log: Logger;
}

export async function kubeNamespaces(o: KubeNamespacesOptions): Promise<NamespaceLookup> {
  // Loaded only here: the library is large and nothing else in the webhook needs it.
  const k8s = await import('@kubernetes/client-node');
  const kc = new k8s.KubeConfig();
  if (o.kubeconfig) kc.loadFromFile(o.kubeconfig);
  else if (!process.env.KUBERNETES_SERVICE_HOST) {
    // loadFromCluster would not complain, and every lookup would then fail against "https://undefined".
    throw new Error('not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset): set KUBECONFIG to reach the API server');
  } else kc.loadFromCluster();
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new Error(`no API server in ${o.kubeconfig ? `kubeconfig ${o.kubeconfig}` : 'the in-cluster configuration'}`);
  o.log.info({ server }, 'reading namespaces from the API server');
  const api = kc.makeApiClient(k8s.CoreV1Api);
  // A per-call middleware gives each request its own deadline; the library has no timeout option of its own.
  const deadline: ObservableMiddleware = {
    pre: (ctx) => {
      ctx.setSignal(AbortSignal.timeout(o.timeoutMs));
      return new k8s.Observable(Promise.resolve(ctx));
    },
    post: (res) => new k8s.Observable(Promise.resolve(res)),
  };
  const withDeadline = (): ConfigurationOptions => ({ middleware: [deadline], middlewareMergeStrategy: 'append' });
  return {
    async get(name): Promise<NamespaceInfo | undefined> {
      try {
        const ns = await api.readNamespace({ name }, withDeadline());
        return { labels: ns.metadata?.labels ?? {}, annotations: ns.metadata?.annotations ?? {} };
      } catch (e) {
        if (e instanceof k8s.ApiException && e.code === 404) return undefined;
        throw new Error(`cannot read namespace "${name}" from ${server}: ${describeFailure(e, o.timeoutMs)}`);
      }
    },
  };
}

/** kube-apiserver explains refusals in a Status object's message; the library hands the body over raw. */
function statusMessage(body: unknown): string | undefined {
  let b = body;
  if (typeof body === 'string') {
    try {
      b = JSON.parse(body);
    } catch {
      return body.slice(0, 300) || undefined;
    }
  }
  const m = (b as { message?: unknown } | null)?.message;
  return typeof m === 'string' ? m : undefined;
}

function describeFailure(e: unknown, timeoutMs: number): string {
  const err = e as { name?: string; code?: number; body?: unknown; message?: string };
  if (err.name === 'AbortError') return `no answer within ${timeoutMs} ms`;
  if (typeof err.code === 'number') {
    const reason = statusMessage(err.body);
    const hint = err.code === 403 ? ' (the webhook ServiceAccount needs get on namespaces)' : '';
    return `HTTP ${err.code}${reason ? `: ${reason}` : ''}${hint}`;
  }
  return err.message ?? String(e);
}
