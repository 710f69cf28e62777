import type { NetworkService, NetworkServiceEndpoint, NetworkServiceLabels } from '../api/types.js';

/*
 * Registry Find templates, as upstream `matchutils.MatchNetworkServices` / `MatchNetworkServiceEndpoints`.
 * On the wire an empty map or list is indistinguishable from an unset one, so both are wildcards here, exactly
 * as Go's nil checks behave after decoding.
 */

export function matchNetworkService(template: NetworkService, ns: NetworkService): boolean {
  return (
    (template.name === '' || template.name === ns.name) &&
    (template.payload === '' || template.payload === ns.payload) &&
    (template.matches.length === 0 || deepEqual(template.matches, ns.matches))
  );
}

export function matchNetworkServiceEndpoint(template: NetworkServiceEndpoint, nse: NetworkServiceEndpoint): boolean {
  return (
    (template.name === '' || template.name === nse.name) &&
    (isEmpty(template.network_service_labels) ||
      labelsContain(nse.network_service_labels, template.network_service_labels)) &&
    (template.expiration_time == null || template.expiration_time.seconds === (nse.expiration_time?.seconds ?? 0)) &&
    (template.network_service_names.length === 0 ||
      template.network_service_names.every((n) => nse.network_service_names.includes(n))) &&
    (template.url === '' || nse.url.includes(template.url))
  );
}

function labelsContain(
  where: Record<string, NetworkServiceLabels>,
  what: Record<string, NetworkServiceLabels>,
): boolean {
  for (const [service, wanted] of Object.entries(what)) {
    const have = where[service];
    if (!have) return false;
    for (const [k, v] of Object.entries(wanted.labels ?? {})) {
      if (!Object.prototype.hasOwnProperty.call(have.labels ?? {}, k) || have.labels[k] !== v) return false;
    }
  }
  return true;
}

function isEmpty(o: object): boolean {
  return Object.keys(o).length === 0;
}

/** Structural equality of decoded messages: map key order is irrelevant, null and {} differ (as proto.Equal). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  const rb = b as Record<string, unknown>;
  const ra = a as Record<string, unknown>;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(rb, k) && deepEqual(ra[k], rb[k]));
}
