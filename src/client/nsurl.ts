import { ifnameProblem, nameProblem, validateLabels } from '../api/validate.js';
import { MeshError } from '../util/errors.js';

/** One requested network service, from either accepted notation. */
export interface NsUrl {
  /** Mechanism type, upper case (KERNEL). */
  mechanism: string;
  /** Network service, possibly service@domain. */
  service: string;
  ifname?: string;
  labels: Record<string, string>;
}

export const ACCEPTED_FORMS =
  'kernel://service[@domain][/ifname][?label=value&...] (upstream v1) or service[@domain][/ifname][?label=value&...] (the ns.networkservicemesh.io annotation form); domain is a DNS name or a literal ip:port';

const SUPPORTED = new Set(['KERNEL']);

export class NsUrlError extends Error {}

/**
 * Parses one entry of NSM_NETWORK_SERVICES. The scheme-less annotation form means KERNEL. Labels given as
 * repeated query keys are joined with "," as upstream does.
 */
export function parseNsUrl(text: string): NsUrl {
  const raw = text.trim();
  const fail = (why: string) => new NsUrlError(`"${raw}": ${why}; accepted forms: ${ACCEPTED_FORMS}`);
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(raw);
  const mechanism = scheme ? scheme[1]!.toUpperCase() : 'KERNEL';
  if (!SUPPORTED.has(mechanism)) throw fail(`mechanism "${scheme![1]}" is not supported (only kernel)`);
  const rest = scheme ? raw.slice(scheme[0].length) : raw;
  const q = rest.indexOf('?');
  const pathPart = q >= 0 ? rest.slice(0, q) : rest;
  const query = q >= 0 ? rest.slice(q + 1) : '';
  const parts = pathPart.split('/').filter((p) => p.length > 0);
  const service = parts[0] ?? '';
  if (!service) throw fail('no network service named');
  const badName = nameProblem(service);
  if (badName) throw fail(`"${service}" is not a valid network service name: ${badName}`);
  const ifname = parts.length > 1 ? parts[parts.length - 1] : undefined;
  if (ifname !== undefined) {
    const problem = ifnameProblem(ifname);
    if (problem) throw fail(`interface name "${ifname}" is not valid: ${problem}`);
  }
  const labels: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(query)) labels[k] = k in labels ? `${labels[k]},${v}` : v;
  try {
    validateLabels(labels, 'labels');
  } catch (e) {
    throw fail((e as MeshError).message);
  }
  return { mechanism, service, labels, ...(ifname ? { ifname } : {}) };
}

/** Parses a comma separated list; an empty list is an error, since a client with nothing to ask for is misconfigured. */
export function parseNsUrlList(text: string): NsUrl[] {
  const entries = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (entries.length === 0) throw new NsUrlError(`no network services given; set NSM_NETWORK_SERVICES to a comma list of ${ACCEPTED_FORMS}`);
  return entries.map(parseNsUrl);
}
