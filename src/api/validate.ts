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

/** Edge checks on a Request before any element runs. */
export function validateRequest(req: NetworkServiceRequest): asserts req is NetworkServiceRequest & { connection: Connection } {
  const conn = req.connection;
  if (!conn) throw invalidArgument('request has no connection: set connection.network_service (and connection.id)');
  if (!conn.network_service) throw invalidArgument('connection.network_service is empty: name the network service to connect to');
  if (conn.id.length > 253) throw invalidArgument('connection.id is longer than 253 characters');
  validateLabels(conn.labels, 'connection.labels');
}
