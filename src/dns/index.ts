export { isInterdomain, parseInterdomain, parseLiteralAddress, tcpUrl, type InterdomainName, type HostPort } from './interdomain.js';
export { orderByRfc2782, type Rng, type Weighted } from './order.js';
export { pickInOrder } from './pick.js';
export { DnsCache, DEFAULT_NEGATIVE_TTL_S, type Clock } from './cache.js';
export { UdpTcpTransport, DnsServerError, parseServer, formatServer, type DnsTransport, type DnsServer, type DnsQuery, type DnsResponse } from './transport.js';
export {
  SrvResolver,
  DomainNotFoundError,
  DomainResolutionError,
  DnsAnswerError,
  NoDnsServerError,
  MAX_SRV_RECORDS,
  srvNamesFor,
  defaultServers,
  type Target,
  type SrvResolverOptions,
} from './resolver.js';
