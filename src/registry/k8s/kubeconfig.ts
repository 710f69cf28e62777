import path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';

/**
 * How nsmd reaches the API server:
 *  - NSM_KUBECONFIG: a kubeconfig file (one path), for nsmd outside the cluster or pointed at another one;
 *  - in a pod (KUBERNETES_SERVICE_HOST set): the pod's service account, as every in-cluster client does;
 *  - KUBECONFIG: kubectl's variable (a list of files, merged as kubectl merges them).
 * Nothing found is an error that says what to set, never a silent fallback to localhost:8080.
 */
export function loadKubeConfig(env: NodeJS.ProcessEnv): KubeConfig {
  const kc = new KubeConfig();
  const own = env.NSM_KUBECONFIG?.trim();
  if (own) {
    loadFile(kc, own, 'NSM_KUBECONFIG');
  } else if (env.KUBERNETES_SERVICE_HOST) {
    kc.loadFromCluster();
  } else if (env.KUBECONFIG?.trim()) {
    const files = env.KUBECONFIG.split(path.delimiter).filter((f) => f.trim() !== '');
    loadFile(kc, files[0]!, 'KUBECONFIG');
    for (const file of files.slice(1)) {
      const more = new KubeConfig();
      loadFile(more, file, 'KUBECONFIG');
      kc.mergeConfig(more);
    }
  } else {
    throw new Error(
      'the k8s:// registry needs the Kubernetes API: run nsmd in a pod (service account), or set NSM_KUBECONFIG to a kubeconfig file',
    );
  }
  if (!kc.getCurrentCluster()) {
    throw new Error(`kubeconfig has no current cluster (current-context ${JSON.stringify(kc.getCurrentContext())}); set current-context`);
  }
  return kc;
}

function loadFile(kc: KubeConfig, file: string, variable: string): void {
  try {
    kc.loadFromFile(file);
  } catch (err) {
    throw new Error(`cannot load kubeconfig ${file} (from ${variable}): ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}
