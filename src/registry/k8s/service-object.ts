import type { NetworkService } from '../../api/types.js';
import { formatPath } from '../yaml-error.js';
import { API_VERSION_V1, API_VERSION_V1ALPHA1, KIND, v1alpha1Document, v1Document } from '../yaml-schema.js';
import { API_VERSION, registrationNameOf, SERVICES, type ApiObject } from './resources.js';
import { stringList, type Checked } from './spec-fields.js';

/**
 * NetworkService custom resources. The spec is upstream v1's snake_case form (`payload`, `matches[].source_selector`,
 * `routes[].destination_selector`, `fallthrough`, `metadata.labels`), plus `name` and `path_ids` as upstream
 * registry-k8s stores the whole registry.NetworkService. Reading reuses the NetworkService YAML schemas (../yaml.ts),
 * so an object means exactly what `nsmctl apply` makes of the same text; the v0.2 camelCase form
 * (`sourceSelector`, `route[].destinationSelector`) is accepted as that module converts it.
 */

export function toServiceObject(ns: NetworkService, objectName: string, namespace: string): ApiObject {
  return {
    apiVersion: API_VERSION,
    kind: SERVICES.kind,
    metadata: { name: objectName, namespace },
    spec: {
      name: ns.name,
      payload: ns.payload,
      matches: ns.matches.map((m) => ({
        source_selector: m.source_selector,
        routes: m.routes.map((r) => ({ destination_selector: r.destination_selector, weight: r.weight })),
        fallthrough: m.fallthrough,
        ...(m.metadata ? { metadata: { labels: m.metadata.labels } } : {}),
      })),
      ...(ns.path_ids.length > 0 ? { path_ids: ns.path_ids } : {}),
    },
  };
}

export function fromServiceObject(obj: ApiObject): Checked<NetworkService> {
  const spec = obj.spec ?? {};
  if (typeof spec !== 'object' || Array.isArray(spec)) return { problem: 'spec must be a mapping' };
  const { name: specName, path_ids, pathIds, payload, ...rest } = spec as Record<string, unknown>;
  const named = registrationNameOf(obj.metadata.name, specName);
  if ('problem' in named) return named;
  const ids = stringList(path_ids ?? pathIds, 'path_ids');
  if ('problem' in ids) return ids;

  const v02 = obj.apiVersion === API_VERSION_V1ALPHA1 || usesV02Keys(rest);
  const document = {
    apiVersion: v02 ? API_VERSION_V1ALPHA1 : API_VERSION_V1,
    kind: KIND,
    metadata: { name: obj.metadata.name },
    // An empty payload (upstream's "unset") is kept as such; the schemas would refuse "" and default a missing one.
    spec: payload === '' || payload === undefined ? rest : { ...rest, payload },
  };
  const parsed = (v02 ? v1alpha1Document : v1Document).safeParse(document);
  if (!parsed.success) {
    return { problem: parsed.error.issues.map((i) => `${formatPath(i.path) || 'object'}: ${i.message}`).join('; ') };
  }
  return { ok: { ...parsed.data, name: named.name, payload: payload === '' ? '' : parsed.data.payload, path_ids: ids.ok } };
}

/** v0.2 spelled matches with camelCase keys and a singular `route`; v1 never uses those keys. */
function usesV02Keys(spec: Record<string, unknown>): boolean {
  const matches = spec.matches;
  if (!Array.isArray(matches)) return false;
  return matches.some((m) => typeof m === 'object' && m !== null && ('sourceSelector' in m || 'route' in m));
}
