/**
 * The pod's network services as annotated in Kubernetes, for runtimes that pass neither a capability
 * argument nor CNI_ARGS. Kept to two reads; the tests here have no API server, so this path is exercised
 * only against a stand-in that serves recorded objects.
 */
import { CoreV1Api, KubeConfig, Observable, type ConfigurationOptions, type ObservableMiddleware, type V1ObjectMeta } from '@kubernetes/client-node';
import { CniCode, CniError } from './errors.js';

/** The seed's key first, then upstream v1's; a namespace's annotation applies to pods without their own. */
export const ANNOTATION_KEYS = ['ns.networkservicemesh.io', 'networkservicemesh.io'] as const;

export interface FoundAnnotation {
  key: string;
  value: string;
  /** "pod ns/name" or "namespace ns". */
  on: string;
}

export async function podAnnotation(o: { kubeconfig: string; namespace: string; pod: string; timeoutMs: number }): Promise<FoundAnnotation | undefined> {
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(o.kubeconfig);
  } catch (e) {
    throw new CniError(CniCode.INVALID_CONFIG, `kubeconfig ${o.kubeconfig} cannot be loaded: ${(e as Error).message}`);
  }
  const api = kc.makeApiClient(CoreV1Api);
  const deadline = AbortSignal.timeout(o.timeoutMs);
  // Every call carries the same deadline: the runtime is waiting on this ADD.
  const withDeadline: ObservableMiddleware = {
    pre: (ctx) => {
      ctx.setSignal(deadline);
      return new Observable(Promise.resolve(ctx));
    },
    post: (res) => new Observable(Promise.resolve(res)),
  };
  const options: ConfigurationOptions<ObservableMiddleware> = { middleware: [withDeadline], middlewareMergeStrategy: 'append' };
  try {
    const pod = await api.readNamespacedPod({ name: o.pod, namespace: o.namespace }, options);
    const own = pick(pod.metadata, `pod ${o.namespace}/${o.pod}`);
    if (own) return own;
    const ns = await api.readNamespace({ name: o.namespace }, options);
    return pick(ns.metadata, `namespace ${o.namespace}`);
  } catch (e) {
    throw new CniError(
      CniCode.POD_LOOKUP_FAILED,
      `cannot read the network services annotation of pod ${o.namespace}/${o.pod} from the Kubernetes API (${kc.getCurrentCluster()?.server ?? 'no cluster'}): ${(e as Error).message}`,
      'the kubeconfig needs get on pods and namespaces',
    );
  }
}

function pick(meta: V1ObjectMeta | undefined, on: string): FoundAnnotation | undefined {
  for (const key of ANNOTATION_KEYS) {
    const value = meta?.annotations?.[key]?.trim();
    if (value) return { key, value, on };
  }
  return undefined;
}
