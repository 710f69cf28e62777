import type { NetworkServiceEndpoint, NetworkServiceLabels } from '../../api/types.js';
import { API_VERSION, ENDPOINTS, registrationNameOf, type ApiObject } from './resources.js';
import { isMapping, stringList, stringMap, timestamp, type Checked } from './spec-fields.js';

/**
 * NetworkServiceEndpoint custom resources. The spec is the registry.NetworkServiceEndpoint message with its
 * protobuf (snake_case) field names, as upstream registry-k8s stores it; `expiration_time` is where endpoint expiry
 * lives, so any reader of the cluster can tell a lapsed registration from a live one.
 *
 * Reading also accepts the camelCase spelling of every field (protojson's, and what v0.2-era manifests used) and
 * v0.2's single `networkServiceName`, whose endpoint labels were the object's own metadata.labels. Unknown keys make
 * the object unreadable with a message naming the accepted ones, rather than being dropped silently.
 */

export function toEndpointObject(nse: NetworkServiceEndpoint, objectName: string, namespace: string): ApiObject {
  return {
    apiVersion: API_VERSION,
    kind: ENDPOINTS.kind,
    metadata: { name: objectName, namespace },
    spec: {
      name: nse.name,
      network_service_names: nse.network_service_names,
      network_service_labels: nse.network_service_labels,
      url: nse.url,
      ...(nse.expiration_time ? { expiration_time: nse.expiration_time } : {}),
      ...(nse.initial_registration_time ? { initial_registration_time: nse.initial_registration_time } : {}),
      ...(nse.path_ids.length > 0 ? { path_ids: nse.path_ids } : {}),
    },
  };
}

type Canonical =
  | 'name'
  | 'network_service_names'
  | 'network_service_labels'
  | 'url'
  | 'expiration_time'
  | 'initial_registration_time'
  | 'path_ids'
  | 'v02_service'
  | 'v02_ignored';

const KEYS: Record<string, Canonical> = {
  name: 'name',
  network_service_names: 'network_service_names',
  networkServiceNames: 'network_service_names',
  network_service_labels: 'network_service_labels',
  networkServiceLabels: 'network_service_labels',
  url: 'url',
  expiration_time: 'expiration_time',
  expirationTime: 'expiration_time',
  initial_registration_time: 'initial_registration_time',
  initialRegistrationTime: 'initial_registration_time',
  path_ids: 'path_ids',
  pathIds: 'path_ids',
  networkServiceName: 'v02_service',
  // v0.2 fields with no v1 meaning: the payload belongs to the NetworkService, the manager is found by url.
  payload: 'v02_ignored',
  nsmName: 'v02_ignored',
};
const ACCEPTED = 'name, network_service_names, network_service_labels, url, expiration_time, initial_registration_time, path_ids (or their camelCase forms, or v0.2 networkServiceName)';

export function fromEndpointObject(obj: ApiObject): Checked<NetworkServiceEndpoint> {
  const spec = obj.spec ?? {};
  if (!isMapping(spec)) return { problem: 'spec must be a mapping' };
  const fields = new Map<Canonical, { key: string; value: unknown }>();
  for (const [key, value] of Object.entries(spec)) {
    const canonical = KEYS[key];
    if (!canonical) return { problem: `unknown field spec.${key}; accepted: ${ACCEPTED}` };
    if (canonical === 'v02_ignored') continue;
    const seen = fields.get(canonical);
    if (seen) return { problem: `spec.${seen.key} and spec.${key} are the same field; give it once` };
    fields.set(canonical, { key, value });
  }
  const get = (c: Canonical) => fields.get(c)?.value;

  const named = registrationNameOf(obj.metadata.name, get('name'));
  if ('problem' in named) return named;
  const url = get('url') ?? '';
  if (typeof url !== 'string') return { problem: 'spec.url must be a string' };
  const expiration = timestamp(get('expiration_time'), 'spec.expiration_time');
  if ('problem' in expiration) return expiration;
  const initial = timestamp(get('initial_registration_time'), 'spec.initial_registration_time');
  if ('problem' in initial) return initial;
  const pathIds = stringList(get('path_ids'), 'spec.path_ids');
  if ('problem' in pathIds) return pathIds;
  const served = servicesOf(obj, get('v02_service'), get('network_service_names'), get('network_service_labels'));
  if ('problem' in served) return served;

  return {
    ok: {
      name: named.name,
      network_service_names: served.ok.names,
      network_service_labels: served.ok.labels,
      url,
      expiration_time: expiration.ok,
      initial_registration_time: initial.ok,
      path_ids: pathIds.ok,
    },
  };
}

function servicesOf(
  obj: ApiObject,
  v02Service: unknown,
  names: unknown,
  labels: unknown,
): Checked<{ names: string[]; labels: Record<string, NetworkServiceLabels> }> {
  if (v02Service !== undefined) {
    if (typeof v02Service !== 'string' || v02Service === '') return { problem: 'spec.networkServiceName must be a non-empty string' };
    if (names !== undefined) return { problem: 'give either spec.networkServiceName (v0.2) or spec.network_service_names, not both' };
    if (labels !== undefined) return { problem: 'spec.networkServiceName (v0.2) takes its labels from metadata.labels; drop spec.network_service_labels' };
    return { ok: { names: [v02Service], labels: { [v02Service]: { labels: { ...(obj.metadata.labels ?? {}) } } } } };
  }
  const list = stringList(names, 'spec.network_service_names');
  if ('problem' in list) return list;
  if (labels === undefined || labels === null) return { ok: { names: list.ok, labels: {} } };
  if (!isMapping(labels)) return { problem: 'spec.network_service_labels: expected a map of service name to {labels: {...}}' };
  const out: Record<string, NetworkServiceLabels> = {};
  for (const [service, entry] of Object.entries(labels)) {
    const where = `spec.network_service_labels.${service}`;
    if (entry !== null && !isMapping(entry)) return { problem: `${where}: expected {labels: {...}}` };
    const extra = entry ? Object.keys(entry).filter((k) => k !== 'labels') : [];
    if (extra.length > 0) return { problem: `${where}: unknown field ${extra[0]}; the only field is labels` };
    const map = stringMap(entry?.labels, `${where}.labels`);
    if ('problem' in map) return map;
    out[service] = { labels: map.ok };
  }
  return { ok: { names: list.ok, labels: out } };
}
