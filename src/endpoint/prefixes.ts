import { maskBytes, parseCidr, type ParsedCidr } from '../dataplane/ip.js';

/** Two prefixes overlap when one contains the other: same family, equal under the shorter mask. */
export function overlaps(a: string | ParsedCidr, b: string | ParsedCidr): boolean {
  const x = typeof a === 'string' ? parseCidr(a) : a;
  const y = typeof b === 'string' ? parseCidr(b) : b;
  if (x.family !== y.family) return false;
  const len = Math.min(x.prefixLen, y.prefixLen);
  return maskBytes(x.bytes, len).equals(maskBytes(y.bytes, len));
}

/** The first of `used` that `prefix` overlaps, if any. */
export function overlapWith(prefix: string, used: string[]): string | undefined {
  return used.find((u) => overlaps(prefix, u));
}

export interface HandedRoutes {
  handed: string[];
  /** Each route left out, with the excluded prefix it overlapped. */
  dropped: { prefix: string; excluded: string }[];
}

/**
 * Which of the routes an endpoint means to hand a client it may hand: none that overlaps a prefix the
 * client already uses (its excluded_prefixes). Such a route would hijack the client's own traffic, or fail
 * to install next to the client's existing route, so it is left out rather than the whole Request refused:
 * the client still gets every route that does not clash.
 */
export function routesOutside(prefixes: string[], excluded: string[]): HandedRoutes {
  const out: HandedRoutes = { handed: [], dropped: [] };
  for (const prefix of prefixes) {
    const clash = overlapWith(prefix, excluded);
    if (clash) out.dropped.push({ prefix, excluded: clash });
    else out.handed.push(prefix);
  }
  return out;
}

/** `addr/len` as the host prefix of its address: 169.254.0.1/32, fd00::1/128. */
export function hostPrefix(cidr: string): string {
  const addr = cidr.split('/')[0]!;
  return `${addr}/${addr.includes(':') ? 128 : 32}`;
}
