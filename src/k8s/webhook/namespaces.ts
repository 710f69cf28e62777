/**
 * What the webhook needs to know about a pod's Namespace. An AdmissionReview carries the pod, not its namespace,
 * so the namespace's labels (for the exclusion selector) and annotations (the namespace-wide service list) are
 * looked up: from the API server in production (kube-namespaces.ts), from a fixed map in tests.
 */

export interface NamespaceInfo {
  labels: Readonly<Record<string, string>>;
  annotations: Readonly<Record<string, string>>;
}

export interface NamespaceLookup {
  /** The namespace, or undefined when it does not exist; throws when it cannot be read. */
  get(name: string): Promise<NamespaceInfo | undefined>;
}

export function fixedNamespaces(namespaces: Readonly<Record<string, Partial<NamespaceInfo>>>): NamespaceLookup {
  return {
    async get(name) {
      const ns = namespaces[name];
      return ns && { labels: ns.labels ?? {}, annotations: ns.annotations ?? {} };
    },
  };
}

/**
 * Remembers each answer for `ttlMs` and shares one lookup among concurrent reviews: scaling a Deployment to a
 * hundred replicas sends a hundred reviews for the same namespace at once. Failures are not remembered.
 */
export function cachedNamespaces(inner: NamespaceLookup, ttlMs: number, now: () => number = Date.now): NamespaceLookup {
  if (ttlMs <= 0) return inner;
  const entries = new Map<string, { at: number; value: Promise<NamespaceInfo | undefined> }>();
  return {
    get(name) {
      const hit = entries.get(name);
      if (hit && now() - hit.at < ttlMs) return hit.value;
      const value = inner.get(name);
      const entry = { at: now(), value };
      entries.set(name, entry);
      value.catch(() => {
        if (entries.get(name) === entry) entries.delete(name);
      });
      // Expired entries of namespaces nobody asks about again would pile up; sweep when the map grows.
      if (entries.size > 1024) for (const [k, e] of entries) if (now() - e.at >= ttlMs) entries.delete(k);
      return value;
    },
  };
}
