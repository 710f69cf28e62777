import type { DnsResponse } from './transport.js';

/** Milliseconds since some epoch; injectable so that tests can move time without sleeping. */
export type Clock = () => number;

/** RFC 2308 suggests servers' negative TTLs; when none is given (dnsmasq `local=` sends no SOA) we use this. */
export const DEFAULT_NEGATIVE_TTL_S = 5;

interface Entry {
  response: DnsResponse;
  expiresAt: number;
}

/**
 * Caches whole responses per (name, type). A positive response lives for the smallest TTL among the records
 * it carries (additionals included, since the resolver uses their addresses); a negative one (NXDOMAIN or no
 * answer) for min(SOA TTL, SOA minimum) per RFC 2308, or DEFAULT_NEGATIVE_TTL_S without a SOA. Server
 * failures are never cached: the next call should try again.
 */
export class DnsCache {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly now: Clock = Date.now, private readonly negativeTtlS = DEFAULT_NEGATIVE_TTL_S) {}

  get(name: string, type: string): DnsResponse | undefined {
    const key = cacheKey(name, type);
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (this.now() >= e.expiresAt) {
      this.entries.delete(key);
      return undefined;
    }
    return e.response;
  }

  set(name: string, type: string, response: DnsResponse): void {
    const ttl = ttlSeconds(response, this.negativeTtlS);
    if (ttl <= 0) return;
    this.entries.set(cacheKey(name, type), { response, expiresAt: this.now() + ttl * 1000 });
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}

function cacheKey(name: string, type: string): string {
  return `${type} ${name.toLowerCase().replace(/\.$/, '')}`;
}

export function isNegative(r: DnsResponse): boolean {
  return r.rcode === 'NXDOMAIN' || (r.rcode === 'NOERROR' && r.answers.length === 0);
}

export function ttlSeconds(r: DnsResponse, negativeTtlS = DEFAULT_NEGATIVE_TTL_S): number {
  if (isNegative(r)) {
    const soa = r.authorities.find((a) => a.type === 'SOA');
    if (soa && soa.type === 'SOA') return Math.min(soa.ttl ?? 0, soa.data.minimum ?? 0);
    return negativeTtlS;
  }
  const ttls = [...r.answers, ...r.additionals].filter((a) => a.type !== 'OPT').map((a) => ('ttl' in a && typeof a.ttl === 'number' ? a.ttl : 0));
  return ttls.length ? Math.min(...ttls) : 0;
}
