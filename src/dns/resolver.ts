import { readFileSync } from 'node:fs';
import type { Answer, RecordType, SrvAnswer } from 'dns-packet';
import { silentLogger, type Logger } from '../util/log.js';
import { DnsCache, isNegative, type Clock } from './cache.js';
import { parseLiteralAddress, tcpUrl } from './interdomain.js';
import { orderByRfc2782, type Rng } from './order.js';
import { formatServer, parseServer, UdpTcpTransport, type DnsResponse, type DnsServer, type DnsTransport } from './transport.js';

/** One place to reach a domain's registry (or proxy), in the order callers should try them. */
export interface Target {
  /** The SRV target name, or the literal address when the domain was given as ip:port. */
  host: string;
  port: number;
  address: string;
  priority: number;
  weight: number;
  url: string;
}

/** Our convention first; upstream v1 (dnsresolve) asks for the plain SRV name `registry.nsm-system.<domain>`. */
export function srvNamesFor(domain: string): string[] {
  const d = domain.replace(/\.$/, '');
  return [`_nsm._tcp.${d}`, `registry.nsm-system.${d}`];
}

/** The domain exists in no form we look for; the message names every name tried so DNS can be fixed. */
export class DomainNotFoundError extends Error {
  constructor(readonly domain: string, readonly tried: { name: string; outcome: string }[]) {
    super(`cannot resolve NSM domain "${domain}": ${tried.map((t) => `${t.name} → ${t.outcome}`).join('; ')}`);
  }
}

/** No configured server gave a usable answer (all timed out, refused, or failed). */
export class NoDnsServerError extends Error {}

/** An answer that arrived but cannot be used as it is (too many records for a sane domain). */
export class DnsAnswerError extends Error {}

/**
 * Resolving a domain failed for a reason other than the domain not existing: DNS servers failing or silent,
 * or an unusable answer. The message names the domain, since the caller asked for a service, not a DNS name.
 */
export class DomainResolutionError extends Error {
  constructor(readonly domain: string, readonly cause: Error) {
    super(`cannot resolve NSM domain "${domain}": ${cause.message}`);
  }
}

/**
 * More SRV records than any domain needs for its entry nsmds; each would cost a dial timeout when the ones
 * before it fail, so a huge answer (misconfiguration, or a hostile server) is refused rather than tried.
 */
export const MAX_SRV_RECORDS = 64;

export interface SrvResolverOptions {
  /** 'ip:port', '[v6]:port' or a bare ip (port 53). Default: NSM_DNS_SERVERS, else /etc/resolv.conf. */
  servers?: string[];
  /** Deadline for each query to each server, UDP and any TCP retry together. */
  timeoutMs?: number;
  log?: Logger;
  now?: Clock;
  /** false disables caching (e.g. to measure weighting over real queries); a DnsCache may be shared. */
  cache?: boolean | DnsCache;
  transport?: DnsTransport;
  rng?: Rng;
}

/** Where the system resolver would go: resolv.conf `nameserver` lines, port 53 — glibc's 127.0.0.1 if none. */
export function defaultServers(env: NodeJS.ProcessEnv = process.env, resolvConf = '/etc/resolv.conf'): string[] {
  const fromEnv = env.NSM_DNS_SERVERS?.split(/[\s,]+/).filter(Boolean);
  if (fromEnv?.length) return fromEnv;
  let text = '';
  try {
    text = readFileSync(resolvConf, 'utf8');
  } catch {
    // Containers without resolv.conf still get a sensible default below.
  }
  const servers = text
    .split('\n')
    .map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1])
    .filter((s): s is string => !!s)
    // A zone index (fe80::1%eth0) cannot be passed to dgram.connect as part of the address.
    .map((s) => s.replace(/%.*$/, ''));
  return servers.length ? servers : ['127.0.0.1'];
}

export class SrvResolver {
  readonly servers: DnsServer[];
  private readonly timeoutMs: number;
  private readonly log: Logger;
  private readonly cache: DnsCache | null;
  private readonly transport: DnsTransport;
  private readonly rng: Rng;

  constructor(opts: SrvResolverOptions = {}) {
    this.servers = (opts.servers ?? defaultServers()).map(parseServer);
    if (this.servers.length === 0) throw new Error('SrvResolver needs at least one DNS server');
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.log = opts.log ?? silentLogger;
    this.cache = opts.cache === false ? null : opts.cache instanceof DnsCache ? opts.cache : new DnsCache(opts.now ?? Date.now);
    this.transport = opts.transport ?? new UdpTcpTransport();
    this.rng = opts.rng ?? Math.random;
  }

  /**
   * Targets for a domain, in the order to try them. A literal address short-circuits DNS, as upstream's
   * resolveDomain does for `scheme://ip:port`.
   */
  async resolveDomain(domain: string): Promise<Target[]> {
    const literal = parseLiteralAddress(domain);
    if (literal) {
      const { address, port } = literal;
      return [{ host: address, port, address, priority: 0, weight: 0, url: tcpUrl(address, port) }];
    }
    try {
      return await this.resolveSrv(domain);
    } catch (e) {
      if (e instanceof DomainNotFoundError) throw e;
      throw new DomainResolutionError(domain, e instanceof Error ? e : new Error(String(e)));
    }
  }

  private async resolveSrv(domain: string): Promise<Target[]> {
    const tried: { name: string; outcome: string }[] = [];
    for (const name of srvNamesFor(domain)) {
      const res = await this.query(name, 'SRV');
      const srv = res.answers.filter((a): a is SrvAnswer => a.type === 'SRV' && typeof a.data?.target === 'string' && a.data.target !== '.' && a.data.target !== '');
      if (srv.length > MAX_SRV_RECORDS) {
        throw new DnsAnswerError(`the answer for SRV ${name} has ${srv.length} records; at most ${MAX_SRV_RECORDS} are accepted (list only the domain's entry nsmds)`);
      }
      if (srv.length === 0) {
        tried.push({ name, outcome: res.rcode === 'NOERROR' ? 'no SRV records' : res.rcode });
        continue;
      }
      const targets = await this.withAddresses(srv, res.additionals);
      if (targets.length === 0) {
        tried.push({ name, outcome: `SRV targets ${srv.map((s) => s.data.target).join(', ')} have no A/AAAA records` });
        continue;
      }
      this.log.debug({ domain, name, targets: targets.length }, 'resolved NSM domain');
      return orderByRfc2782(targets, this.rng);
    }
    throw new DomainNotFoundError(domain, tried);
  }

  /** Uses the additional section when the server sent it (dnsmasq does), and asks A then AAAA otherwise. */
  private async withAddresses(srv: SrvAnswer[], additionals: Answer[]): Promise<Target[]> {
    const resolved = await Promise.all(
      srv.map(async (s) => {
        const host = s.data.target.replace(/\.$/, '');
        const address = pickAddress(additionals, host) ?? (await this.lookupAddress(host));
        if (!address) {
          this.log.warn({ host }, 'SRV target has no address; skipping it');
          return null;
        }
        if (!(s.data.port >= 1 && s.data.port <= 65535)) {
          this.log.warn({ host, port: s.data.port }, 'SRV target has no usable port; skipping it');
          return null;
        }
        const t: Target = { host, port: s.data.port, address, priority: s.data.priority ?? 0, weight: s.data.weight ?? 0, url: tcpUrl(address, s.data.port) };
        return t;
      }),
    );
    return resolved.filter((t): t is Target => t !== null);
  }

  private async lookupAddress(host: string): Promise<string | undefined> {
    for (const type of ['A', 'AAAA'] as const) {
      const address = pickAddress((await this.query(host, type)).answers, host);
      if (address) return address;
    }
    return undefined;
  }

  /**
   * One question, cached, asked of each server in turn until one gives an authoritative outcome. NXDOMAIN and
   * empty answers are outcomes, not failures; SERVFAIL/REFUSED and silence mean "ask someone else".
   */
  async query(name: string, type: RecordType): Promise<DnsResponse> {
    const cached = this.cache?.get(name, type);
    if (cached) return cached;
    const failures: string[] = [];
    for (const server of this.servers) {
      try {
        const res = await this.transport.query(server, { name, type }, this.timeoutMs);
        if (res.rcode !== 'NOERROR' && res.rcode !== 'NXDOMAIN') {
          failures.push(`${formatServer(server)}: ${res.rcode}`);
          this.log.debug({ server: formatServer(server), name, type, rcode: res.rcode }, 'DNS server failed the query; trying the next');
          continue;
        }
        this.cache?.set(name, type, res);
        if (isNegative(res)) this.log.debug({ name, type, rcode: res.rcode }, 'negative DNS answer');
        return res;
      } catch (e) {
        failures.push((e as Error).message);
        this.log.debug({ err: e, name, type }, 'DNS server did not answer; trying the next');
      }
    }
    throw new NoDnsServerError(`no DNS server answered ${type} ${name}: ${failures.join('; ')}`);
  }
}

function pickAddress(records: Answer[], host: string): string | undefined {
  const h = host.toLowerCase();
  const mine = records.filter((r) => (r.type === 'A' || r.type === 'AAAA') && r.name.toLowerCase().replace(/\.$/, '') === h);
  // IPv4 first: the lab and most clusters are IPv4-first, and one address per target keeps callers simple.
  const a = mine.find((r) => r.type === 'A') ?? mine.find((r) => r.type === 'AAAA');
  return a && (a.type === 'A' || a.type === 'AAAA') ? a.data : undefined;
}
