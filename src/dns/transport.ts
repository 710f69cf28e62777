import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import dnsPacket, { type Answer, type DecodedPacket, type RecordType } from 'dns-packet';
import { parseLiteralAddress } from './interdomain.js';

export interface DnsServer {
  address: string;
  port: number;
}

export interface DnsQuery {
  name: string;
  type: RecordType;
}

export interface DnsResponse {
  /** NOERROR, NXDOMAIN, SERVFAIL… — dns-packet decodes it but its typings omit it. */
  rcode: string;
  answers: Answer[];
  additionals: Answer[];
  authorities: Answer[];
  /** Which transport produced the answer, so tests and logs can see a TCP retry happened. */
  via: 'udp' | 'tcp';
}

/** The seam the resolver queries through; tests wrap it to count queries. */
export interface DnsTransport {
  query(server: DnsServer, q: DnsQuery, timeoutMs: number): Promise<DnsResponse>;
}

/** A server that could not be asked (timeout, refused, garbled reply): the resolver moves on to the next one. */
export class DnsServerError extends Error {
  constructor(readonly server: DnsServer, readonly detail: string) {
    super(`${formatServer(server)}: ${detail}`);
  }
}

export function formatServer(s: DnsServer): string {
  return net.isIPv6(s.address) ? `[${s.address}]:${s.port}` : `${s.address}:${s.port}`;
}

/** `ip`, `ip:port` or `[v6]:port`; a bare address means port 53 (resolv.conf has no ports). */
export function parseServer(text: string): DnsServer {
  const t = text.trim();
  if (net.isIP(t)) return { address: t, port: 53 };
  const hp = parseLiteralAddress(t);
  if (!hp) throw new Error(`bad DNS server "${text}": expected ip, ip:port or [v6]:port`);
  return hp;
}

export interface UdpTcpTransportOptions {
  /** Skip UDP entirely; for resolvers behind paths that drop large UDP, and for testing the TCP path. */
  forceTcp?: boolean;
}

/**
 * Plain DNS over UDP, retried over TCP when the server sets TC — large SRV sets (many endpoints) do not fit
 * in the 512 bytes a non-EDNS reply may use. One deadline covers both legs so a caller's timeout is honest.
 */
export class UdpTcpTransport implements DnsTransport {
  constructor(private readonly opts: UdpTcpTransportOptions = {}) {}

  async query(server: DnsServer, q: DnsQuery, timeoutMs: number): Promise<DnsResponse> {
    const deadline = Date.now() + timeoutMs;
    if (this.opts.forceTcp) return toResponse(await queryTcp(server, q, timeoutMs), 'tcp');
    const udp = await queryUdp(server, q, timeoutMs);
    if (!udp.flag_tc) return toResponse(udp, 'udp');
    try {
      return toResponse(await queryTcp(server, q, Math.max(1, deadline - Date.now())), 'tcp');
    } catch (e) {
      // A truncated answer is never used as it is: its missing records could be the ones that matter.
      throw new DnsServerError(server, `the UDP answer for ${q.type} ${q.name} was truncated and the TCP retry failed (${(e as DnsServerError).detail ?? (e as Error).message})`);
    }
  }
}

function toResponse(p: DecodedPacket, via: 'udp' | 'tcp'): DnsResponse {
  return {
    rcode: (p as DecodedPacket & { rcode?: string }).rcode ?? 'NOERROR',
    answers: p.answers ?? [],
    additionals: p.additionals ?? [],
    authorities: p.authorities ?? [],
    via,
  };
}

function encodeQuery(id: number, q: DnsQuery) {
  return { type: 'query' as const, id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: q.type, name: q.name, class: 'IN' as const }] };
}

/** Spoofed or stale replies (another id, another question) are ignored rather than trusted. */
function matches(p: DecodedPacket, id: number, q: DnsQuery): boolean {
  const question = p.questions?.[0];
  return p.id === id && p.type === 'response' && !!question && question.type === q.type && question.name.toLowerCase() === q.name.toLowerCase();
}

function queryUdp(server: DnsServer, q: DnsQuery, timeoutMs: number): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    const id = randomInt(65536);
    const sock = dgram.createSocket(net.isIPv6(server.address) ? 'udp6' : 'udp4');
    let done = false;
    const finish = (err: Error | null, p?: DecodedPacket) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve(p!);
    };
    const timer = setTimeout(() => finish(new DnsServerError(server, `no UDP answer for ${q.type} ${q.name} within ${timeoutMs} ms`)), timeoutMs);
    // A connected socket turns the ICMP port-unreachable of a dead server into ECONNREFUSED at once,
    // instead of waiting out the whole timeout.
    sock.on('error', (e) => finish(new DnsServerError(server, `UDP ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    sock.on('message', (msg) => {
      let p: DecodedPacket;
      try {
        p = dnsPacket.decode(msg);
      } catch (e) {
        // Garbage that does not even carry our id is noise (or spoofing) and is ignored; a reply to our
        // query that does not decode is the server's answer, and waiting longer would not improve it.
        if (msg.length >= 2 && msg.readUInt16BE(0) === id) finish(new DnsServerError(server, `malformed UDP reply for ${q.type} ${q.name}: ${(e as Error).message}`));
        return;
      }
      if (matches(p, id, q)) finish(null, p);
    });
    sock.connect(server.port, server.address, () => sock.send(dnsPacket.encode(encodeQuery(id, q))));
  });
}

function queryTcp(server: DnsServer, q: DnsQuery, timeoutMs: number): Promise<DecodedPacket> {
  return new Promise((resolve, reject) => {
    const id = randomInt(65536);
    let buf = Buffer.alloc(0);
    const sock = net.connect({ host: server.address, port: server.port });
    let done = false;
    const finish = (err: Error | null, p?: DecodedPacket) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(p!);
    };
    const timer = setTimeout(() => finish(new DnsServerError(server, `no TCP answer for ${q.type} ${q.name} within ${timeoutMs} ms`)), timeoutMs);
    sock.on('error', (e) => finish(new DnsServerError(server, `TCP ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    sock.on('connect', () => sock.write(dnsPacket.streamEncode(encodeQuery(id, q))));
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 2) return;
      const len = buf.readUInt16BE(0);
      if (buf.length < len + 2) return;
      try {
        const p = dnsPacket.decode(buf.subarray(2, 2 + len));
        if (matches(p, id, q)) finish(null, p);
        else finish(new DnsServerError(server, `TCP reply does not match the ${q.type} ${q.name} query`));
      } catch (e) {
        finish(new DnsServerError(server, `malformed TCP reply for ${q.type} ${q.name}: ${(e as Error).message}`));
      }
    });
    sock.on('end', () => finish(new DnsServerError(server, 'TCP connection closed before a full reply')));
  });
}
