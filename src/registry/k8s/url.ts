export const DEFAULT_NAMESPACE = 'nsm-system';
const EXPECTED = 'expected k8s:// or k8s://<namespace>';
/** Namespaces are DNS-1123 labels. */
const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/**
 * `k8s://` → the namespace from NSM_K8S_NAMESPACE, else nsm-system; `k8s://<namespace>` → that namespace.
 * Anything else in the URL (a host, a path, a query) is refused: the API server comes from the kubeconfig or the
 * pod's service account, and a silently ignored host would send a reader looking for the wrong cluster.
 */
export function parseK8sRegistryUrl(url: string, env: NodeJS.ProcessEnv = {}): { namespace: string } {
  const fail = (why: string) => new Error(`invalid Kubernetes registry URL ${JSON.stringify(url)}: ${why}; ${EXPECTED}`);
  const m = /^k8s:\/\/(.*)$/i.exec(url.trim());
  if (!m) throw fail('the scheme must be k8s://');
  const given = m[1]!.replace(/\/$/, '');
  const fromEnv = env.NSM_K8S_NAMESPACE?.trim();
  const namespace = given || fromEnv || DEFAULT_NAMESPACE;
  if (!NAMESPACE.test(namespace)) {
    const source = given ? 'namespace' : 'NSM_K8S_NAMESPACE';
    throw fail(`${source} ${JSON.stringify(namespace)} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)`);
  }
  return { namespace };
}
