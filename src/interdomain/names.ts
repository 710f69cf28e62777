/**
 * Names across domains, as upstream's interdomain helpers spell them: `name@domain` here, plain `name` in
 * the domain that owns it. Everything that goes to another domain has its `@domain` stripped, and what
 * comes back gets it appended again, so callers in this domain only ever see `@domain` names.
 */
import type { Connection, NetworkService, NetworkServiceEndpoint } from '../api/types.js';
import { parseInterdomain } from '../dns/interdomain.js';
import { invalidArgument } from '../util/errors.js';

/** The domain a name points to, or undefined for a name of this domain. */
export function domainOf(name: string): string | undefined {
  return name.includes('@') ? parseInterdomain(name).domain : undefined;
}

export function localPart(name: string): string {
  return name.includes('@') ? parseInterdomain(name).target : name;
}

export const withDomain = (name: string, domain: string): string => (name ? `${name}@${domain}` : name);

/** One domain for all the names of a query; a query spanning domains cannot be answered by one of them. */
function onlyDomain(names: string[], what: string): string | undefined {
  const domains = new Set(names.map(domainOf));
  if (domains.size > 1) {
    throw invalidArgument(`${what} names several domains (${[...domains].map((d) => d ?? 'this domain').join(', ')}); query one domain at a time`);
  }
  return [...domains][0];
}

export function serviceQueryDomain(t: NetworkService): string | undefined {
  return t.name ? domainOf(t.name) : undefined;
}

export function endpointQueryDomain(t: NetworkServiceEndpoint): string | undefined {
  const names = [t.name, ...t.network_service_names].filter(Boolean);
  return names.length ? onlyDomain(names, 'the endpoint query') : undefined;
}

const mapKeys = <V>(o: Record<string, V>, f: (k: string) => string): Record<string, V> => Object.fromEntries(Object.entries(o).map(([k, v]) => [f(k), v]));

export function stripService(ns: NetworkService): NetworkService {
  return { ...ns, name: localPart(ns.name) };
}

export function stripEndpoint(nse: NetworkServiceEndpoint): NetworkServiceEndpoint {
  return {
    ...nse,
    name: localPart(nse.name),
    network_service_names: nse.network_service_names.map(localPart),
    network_service_labels: mapKeys(nse.network_service_labels, localPart),
  };
}

export function serviceFromDomain(ns: NetworkService, domain: string): NetworkService {
  return { ...ns, name: withDomain(ns.name, domain) };
}

export function endpointFromDomain(nse: NetworkServiceEndpoint, domain: string): NetworkServiceEndpoint {
  return {
    ...nse,
    name: withDomain(nse.name, domain),
    network_service_names: nse.network_service_names.map((n) => withDomain(n, domain)),
    network_service_labels: mapKeys(nse.network_service_labels, (k) => withDomain(k, domain)),
  };
}

/** The connection as the other domain knows it: its service and endpoint without `@domain`. */
export function connectionToDomain<C extends Pick<Connection, 'network_service' | 'network_service_endpoint_name'>>(conn: C): C {
  return { ...conn, network_service: localPart(conn.network_service), network_service_endpoint_name: localPart(conn.network_service_endpoint_name) };
}

/** The other domain's answer as this domain's callers know it. */
export function connectionFromDomain(conn: Connection, domain: string): void {
  if (conn.network_service && !conn.network_service.includes('@')) conn.network_service = withDomain(conn.network_service, domain);
  if (conn.network_service_endpoint_name && !conn.network_service_endpoint_name.includes('@')) {
    conn.network_service_endpoint_name = withDomain(conn.network_service_endpoint_name, domain);
  }
}
