import { isIP } from 'node:net';

/** A name that carries a domain, as upstream spells it: `service@domain` (interdomain.Is = "contains @"). */
export function isInterdomain(name: string): boolean {
  return name.includes('@');
}

export interface InterdomainName {
  /** Text before the first `@`: the service (or NSE) name as the remote domain knows it. */
  target: string;
  /** Text after the first `@`, kept whole so that a literal `ip:port` or a further `@` survives. */
  domain: string;
}

export function parseInterdomain(name: string): InterdomainName {
  const at = name.indexOf('@');
  if (at < 0) throw new Error(`"${name}" is not an interdomain name: expected service@domain`);
  const target = name.slice(0, at);
  const domain = name.slice(at + 1);
  if (!target || !domain) throw new Error(`"${name}" is not an interdomain name: service and domain must both be non-empty`);
  return { target, domain };
}

export interface HostPort {
  address: string;
  port: number;
}

/**
 * Parses `ip:port`, `[v6]:port`, or `scheme://` followed by either; null when the text is not a literal
 * address, so callers fall through to DNS. Hostnames are deliberately not accepted: they need resolving.
 */
export function parseLiteralAddress(text: string): HostPort | null {
  const s = text.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').replace(/\/.*$/, '');
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:[\]]+):(\d+)$/.exec(s);
  if (!m) return null;
  const address = m[1]!;
  const port = Number(m[2]);
  if (!isIP(address) || !Number.isInteger(port) || port < 1 || port > 65535) return null;
  if (m[0].startsWith('[') !== (isIP(address) === 6)) return null;
  return { address, port };
}

/** `tcp://ip:port`, with IPv6 in brackets as gRPC and upstream expect. */
export function tcpUrl(address: string, port: number): string {
  return isIP(address) === 6 ? `tcp://[${address}]:${port}` : `tcp://${address}:${port}`;
}
