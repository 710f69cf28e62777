/**
 * Address and CIDR handling for the data plane. Netlink wants raw address bytes and reports raw bytes,
 * so parsing and formatting live here instead of pulling in a dependency.
 */

export type Family = 4 | 6;

export interface ParsedCidr {
  family: Family;
  bytes: Buffer;
  prefixLen: number;
}

export const AF_INET = 2;
export const AF_INET6 = 10;

export function afOf(family: Family): number {
  return family === 4 ? AF_INET : AF_INET6;
}

function parseIpv4(s: string): Buffer | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out = Buffer.alloc(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i] as string;
    if (!/^\d{1,3}$/.test(p) || (p.length > 1 && p.startsWith('0'))) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

function parseIpv6(s: string): Buffer | undefined {
  if (s.length === 0 || s.length > 45) return undefined;
  let head = s;
  let v4tail: Buffer | undefined;
  const lastColon = s.lastIndexOf(':');
  if (s.indexOf('.') !== -1) {
    v4tail = parseIpv4(s.slice(lastColon + 1));
    if (!v4tail) return undefined;
    head = s.slice(0, lastColon);
    // "::1.2.3.4" and "1::1.2.3.4" lose one colon of their '::' to the split; put it back.
    if (head.endsWith(':')) head += ':';
  }
  const groupsWanted = v4tail ? 6 : 8;
  const dbl = head.indexOf('::');
  if (dbl !== head.lastIndexOf('::')) return undefined;
  const toGroups = (part: string): number[] | undefined => {
    if (part === '') return [];
    const gs = part.split(':');
    const out: number[] = [];
    for (const g of gs) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  let groups: number[];
  if (dbl === -1) {
    const g = toGroups(head);
    if (!g || g.length !== groupsWanted) return undefined;
    groups = g;
  } else {
    const left = toGroups(head.slice(0, dbl));
    const right = toGroups(head.slice(dbl + 2));
    if (!left || !right) return undefined;
    const fill = groupsWanted - left.length - right.length;
    if (fill < 1) return undefined;
    groups = [...left, ...new Array<number>(fill).fill(0), ...right];
  }
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  if (v4tail) v4tail.copy(out, 12);
  return out;
}

/** Parses a bare IPv4/IPv6 address; undefined when malformed. */
export function parseIp(s: string): { family: Family; bytes: Buffer } | undefined {
  if (s.includes(':')) {
    const b = parseIpv6(s);
    return b && { family: 6, bytes: b };
  }
  const b = parseIpv4(s);
  return b && { family: 4, bytes: b };
}

/** Parses `addr/len`; throws a descriptive Error on malformed input. */
export function parseCidr(s: string): ParsedCidr {
  const slash = s.indexOf('/');
  if (slash === -1) throw new Error(`invalid CIDR ${JSON.stringify(s)}: missing /prefix-length`);
  const ip = parseIp(s.slice(0, slash));
  const lenStr = s.slice(slash + 1);
  if (!ip) throw new Error(`invalid CIDR ${JSON.stringify(s)}: bad address`);
  const max = ip.family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(lenStr) || Number(lenStr) > max) {
    throw new Error(`invalid CIDR ${JSON.stringify(s)}: prefix length must be 0..${max}`);
  }
  return { family: ip.family, bytes: ip.bytes, prefixLen: Number(lenStr) };
}

/** Formats raw address bytes; IPv6 in RFC 5952 form so snapshots compare as strings. */
export function formatIp(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) throw new Error(`address of ${b.length} bytes`);
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((b[i] as number) << 8) | (b[i + 1] as number));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (bestLen < 2) return hex(g);
  return `${hex(g.slice(0, bestStart))}::${hex(g.slice(bestStart + bestLen))}`;
}

/** Zeroes the host bits, giving the network address the kernel stores for a route destination. */
export function maskBytes(b: Buffer, prefixLen: number): Buffer {
  const out = Buffer.from(b);
  for (let i = 0; i < out.length; i++) {
    const bits = Math.max(0, Math.min(8, prefixLen - i * 8));
    out[i] = (out[i] as number) & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

/** Normalises a CIDR string (canonical address text, host bits kept). */
export function normaliseCidr(s: string): string {
  const c = parseCidr(s);
  return `${formatIp(c.bytes)}/${c.prefixLen}`;
}
