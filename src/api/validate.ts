import { parseLiteralAddress } from '../dns/interdomain.js';
import { invalidArgument } from '../util/errors.js';
import type { NetworkServiceRequest, Connection } from './types.js';

/** Linux IFNAMSIZ is 16 including the terminating NUL. */
export const MAX_IFNAME_LENGTH = 15;
/** Label limits, as Kubernetes applies them to label values (keys may carry a DNS prefix). */
export const MAX_LABEL_KEY_LENGTH = 253;
export const MAX_LABEL_VALUE_LENGTH = 63;
export const MAX_LABELS = 64;

/** Why a name cannot be a Linux interface name, or undefined when it can. */
export function ifnameProblem(name: string): string | undefined {
  if (name.length === 0) return 'it is empty';
  if (name.length > MAX_IFNAME_LENGTH) return `it is ${name.length} characters long; Linux allows at most ${MAX_IFNAME_LENGTH}`;
  if (name === '.' || name === '..') return 'it is "." or ".."';
  if (/[\s/:]/.test(name)) return 'it contains whitespace, "/" or ":"';
  return undefined;
}

export function validateLabels(labels: Record<string, string>, where: string): void {
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw invalidArgument(`${where}: ${entries.length} labels; at most ${MAX_LABELS} are accepted`);
  for (const [k, v] of entries) {
    if (k.length === 0 || k.length > MAX_LABEL_KEY_LENGTH) {
      throw invalidArgument(`${where}: label key "${k.slice(0, 40)}" must be 1 to ${MAX_LABEL_KEY_LENGTH} characters`);
    }
    if (v.length > MAX_LABEL_VALUE_LENGTH) {
      throw invalidArgument(`${where}: label "${k}" has a value of ${v.length} characters; at most ${MAX_LABEL_VALUE_LENGTH} are accepted`);
    }
  }
}

const LOCAL_NAME = /^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$/i;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/i;
export const MAX_NAME_LENGTH = 253;
export const NAME_RULES = 'letters, digits, "-", "." and "_" (at most 253), optionally followed by @domain, where domain is a DNS name or a literal ip:port';

/** Why `domain` cannot follow the "@" of a name: it must be a DNS name, or a literal ip:port / [v6]:port (labs). */
export function domainProblem(domain: string): string | undefined {
  if (domain.length === 0) return 'the domain after "@" is empty';
  if (parseLiteralAddress(domain)) return undefined;
  if (/[:[\]]/.test(domain)) return `domain "${domain}" is neither a DNS name nor a literal ip:port ([v6]:port for IPv6) with a port from 1 to 65535`;
  if (domain.length > MAX_NAME_LENGTH) return `domain "${domain.slice(0, 40)}…" is longer than ${MAX_NAME_LENGTH} characters`;
  const bad = domain.split('.').find((l) => l.length > 63 || !DNS_LABEL.test(l));
  if (bad !== undefined) return `domain "${domain}" is not a DNS name (label "${bad}" must be 1 to 63 letters, digits or "-", not starting or ending with "-")`;
  return undefined;
}

/** Why `name` cannot name a network service or endpoint, or undefined when it can (upstream: `name[@domain]`). */
export function nameProblem(name: string): string | undefined {
  if (name.length === 0) return 'it is empty';
  const at = name.indexOf('@');
  const local = at < 0 ? name : name.slice(0, at);
  if (local.length > MAX_NAME_LENGTH || !LOCAL_NAME.test(local)) return `use ${NAME_RULES}`;
  return at < 0 ? undefined : domainProblem(name.slice(at + 1));
}

/** Edge checks on a Request before any element runs. */
export function validateRequest(req: NetworkServiceRequest): asserts req is NetworkServiceRequest & { connection: Connection } {
  const conn = req.connection;
  if (!conn) throw invalidArgument('request has no connection: set connection.network_service (and connection.id)');
  if (!conn.network_service) throw invalidArgument('connection.network_service is empty: name the network service to connect to');
  if (conn.id.length > 253) throw invalidArgument('connection.id is longer than 253 characters');
  // Only names that leave this domain are held to the name rules here: their domain decides where the
  // Request goes, so a malformed one must not reach DNS. Local names are checked by the registry lookup.
  for (const [field, name] of [['network_service', conn.network_service], ['network_service_endpoint_name', conn.network_service_endpoint_name]] as const) {
    const problem = name.includes('@') ? nameProblem(name) : undefined;
    if (problem) throw invalidArgument(`connection.${field} "${name}" is not valid: ${problem}`);
  }
  validateLabels(conn.labels, 'connection.labels');
}
