/**
 * A small client for the cross-platform WireGuard userspace API (UAPI): a line protocol over the unix
 * socket /var/run/wireguard/<ifname>.sock that wireguard-go serves. One request per connection: `set=1` or
 * `get=1`, key=value lines, a blank line; the answer ends with `errno=N` and a blank line.
 *
 * Every value written is validated first (keys by length, addresses by parsing, numbers by range), because
 * the protocol is line-based: a newline smuggled into an endpoint string would become a command of its own.
 *
 * The private key is written into the request Buffer as hex without becoming a string, and the Buffer is
 * zeroed once the socket has taken it. `get` answers contain the device's private key; its line (and any
 * preshared key's) is cut out of the answer bytes before they are decoded, and no error message quotes a
 * value from an answer.
 */
import { connect } from 'node:net';
import type { KeyObject } from 'node:crypto';
import { getSystemErrorName } from 'node:util';
import { formatIp, parseCidr, parseIp } from '../ip.js';
import { DataplaneError } from '../veth/protocol.js';
import { WG_KEY_LEN, keyFromBase64, rawPrivateKey, writeHex } from './keys.js';

/** Fixed in wireguard-go (ipc.socketDirectory). One directory for the whole machine: every network namespace sees it. */
export const UAPI_DIR = '/var/run/wireguard';

export const DEFAULT_UAPI_TIMEOUT_MS = 2000;

export function uapiSocketPath(ifname: string): string {
  return `${UAPI_DIR}/${ifname}.sock`;
}

/**
 * A failed UAPI call. `errno` is what wireguard-go answered (negative, e.g. -22) when it answered at all;
 * `code` is its name (EINVAL, EADDRINUSE, …), or the socket error (ENOENT, ECONNREFUSED, ETIMEDOUT).
 */
export class UapiError extends DataplaneError {
  constructor(message: string, code: string, errno?: number) {
    super(message, code, errno);
    this.name = 'UapiError';
  }
}

export interface UapiPeerConfig {
  /** base64 or 32 raw bytes. */
  publicKey: string | Buffer;
  remove?: boolean;
  updateOnly?: boolean;
  /** `ip:port`, `[v6]:port`. */
  endpoint?: string;
  persistentKeepaliveInterval?: number;
  replaceAllowedIps?: boolean;
  allowedIps?: string[];
}

export interface UapiDeviceConfig {
  privateKey?: KeyObject | Buffer;
  listenPort?: number;
  fwmark?: number;
  replacePeers?: boolean;
  peers?: UapiPeerConfig[];
}

export interface UapiPeer {
  /** base64. */
  publicKey: string;
  endpoint: string | undefined;
  /** undefined before the first handshake (wireguard-go reports 0). */
  lastHandshake: Date | undefined;
  rxBytes: number;
  txBytes: number;
  persistentKeepaliveInterval: number;
  allowedIps: string[];
  protocolVersion: number | undefined;
}

/** What `get` reports, less the private and preshared keys, which are never read out of the answer. */
export interface UapiDevice {
  listenPort: number | undefined;
  fwmark: number | undefined;
  peers: UapiPeer[];
}

export interface UapiCallOptions {
  /** Deadline for connect, request and answer together. */
  timeoutMs?: number;
}

function invalid(msg: string): UapiError {
  return new UapiError(msg, 'EINVAL');
}

/** Parses `ip:port` or `[v6]:port` into its parts; throws EINVAL on anything else. */
export function parseEndpoint(s: string): { ip: string; port: number; family: 4 | 6 } {
  if (typeof s !== 'string') throw invalid('endpoint must be a string');
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([0-9.]+):(\d{1,5})$/.exec(s);
  const ip = m ? parseIp(m[1] as string) : undefined;
  const port = m ? Number(m[2]) : NaN;
  if (!m || !ip || port < 1 || port > 65535) throw invalid(`endpoint ${JSON.stringify(s)} must be ip:port or [ipv6]:port`);
  if (s.startsWith('[') !== (ip.family === 6)) throw invalid(`endpoint ${JSON.stringify(s)}: IPv6 addresses go in brackets, IPv4 ones do not`);
  return { ip: formatIp(ip.bytes), port, family: ip.family };
}

/** The endpoint form WireGuard uses, from an address and a port (e.g. a mechanism's dst_ip and dst_port). */
export function formatEndpoint(ip: string, port: number): string {
  const p = parseIp(ip);
  if (!p) throw invalid(`bad endpoint address ${JSON.stringify(ip)}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`bad endpoint port ${port}`);
  return p.family === 6 ? `[${formatIp(p.bytes)}]:${port}` : `${formatIp(p.bytes)}:${port}`;
}

function uint(name: string, v: number, max: number): string {
  if (!Number.isInteger(v) || v < 0 || v > max) throw invalid(`${name} ${v} must be an integer in 0..${max}`);
  return String(v);
}

function peerKey(k: string | Buffer): Buffer {
  if (Buffer.isBuffer(k)) {
    if (k.length !== WG_KEY_LEN) throw invalid(`peer public key must be ${WG_KEY_LEN} bytes`);
    return k;
  }
  try {
    return keyFromBase64(k);
  } catch (err) {
    throw invalid(`peer public key: ${(err as Error).message}`);
  }
}

/**
 * Builds the `set=1` request. Everything but the private key is assembled as text; the key's hex goes
 * straight into the final Buffer, which the caller zeroes after sending.
 */
export function buildSetRequest(cfg: UapiDeviceConfig): Buffer {
  const head: string[] = ['set=1'];
  const tail: string[] = [];
  if (cfg.listenPort !== undefined) tail.push(`listen_port=${uint('listen_port', cfg.listenPort, 65535)}`);
  if (cfg.fwmark !== undefined) tail.push(`fwmark=${uint('fwmark', cfg.fwmark, 0xffffffff)}`);
  if (cfg.replacePeers) tail.push('replace_peers=true');
  for (const p of cfg.peers ?? []) {
    tail.push(`public_key=${peerKey(p.publicKey).toString('hex')}`);
    if (p.remove) {
      tail.push('remove=true');
      continue;
    }
    if (p.updateOnly) tail.push('update_only=true');
    if (p.endpoint !== undefined) {
      const e = parseEndpoint(p.endpoint);
      tail.push(`endpoint=${formatEndpoint(e.ip, e.port)}`);
    }
    if (p.persistentKeepaliveInterval !== undefined) {
      tail.push(`persistent_keepalive_interval=${uint('persistent_keepalive_interval', p.persistentKeepaliveInterval, 65535)}`);
    }
    if (p.replaceAllowedIps) tail.push('replace_allowed_ips=true');
    for (const a of p.allowedIps ?? []) {
      let c;
      try {
        c = parseCidr(a);
      } catch (err) {
        throw invalid(`allowed ip: ${(err as Error).message}`);
      }
      tail.push(`allowed_ip=${formatIp(c.bytes)}/${c.prefixLen}`);
    }
  }
  const before = Buffer.from(`${head.join('\n')}\n`);
  const after = Buffer.from(`${tail.map((l) => `${l}\n`).join('')}\n`);
  if (cfg.privateKey === undefined) return Buffer.concat([before, after]);
  const label = Buffer.from('private_key=');
  const raw = rawPrivateKey(cfg.privateKey);
  try {
    const out = Buffer.alloc(before.length + label.length + WG_KEY_LEN * 2 + 1 + after.length);
    let o = before.copy(out, 0);
    o += label.copy(out, o);
    o = writeHex(out, o, raw);
    out[o++] = 0x0a;
    after.copy(out, o);
    return out;
  } finally {
    raw.fill(0);
  }
}

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(errno < 0 ? errno : -errno);
  } catch {
    return 'EUNKNOWN';
  }
}

/** One request/answer exchange. The answer is returned only to this module's parsers. */
function exchange(ifname: string, request: Buffer, what: string, opts: UapiCallOptions): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_UAPI_TIMEOUT_MS;
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const sock = connect(uapiSocketPath(ifname));
    const finish = (err: Error | undefined, value?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      request.fill(0);
      sock.destroy();
      for (const c of chunks) c.fill(0);
      if (err) reject(err);
      else resolve(value as string);
    };
    const timer = setTimeout(
      () => finish(new UapiError(`UAPI ${what} on ${ifname}: no answer within ${timeoutMs} ms`, 'ETIMEDOUT')),
      timeoutMs,
    );
    sock.on('connect', () => {
      // Zeroed in finish(): the socket may still hold a reference until the write has been flushed.
      sock.write(request);
    });
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      size += d.length;
      const all = Buffer.concat(chunks, size);
      // Every answer line is key=value, so the first empty line ends the answer.
      if (all.length >= 2 && all[all.length - 1] === 0x0a && all[all.length - 2] === 0x0a) {
        const text = secretFreeText(all);
        all.fill(0);
        finish(undefined, text);
      } else {
        all.fill(0);
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? 'EIO';
      finish(new UapiError(`UAPI ${what} on ${ifname}: ${code === 'ENOENT' ? 'no such interface (socket missing)' : code}`, code));
    });
    sock.on('close', () => finish(new UapiError(`UAPI ${what} on ${ifname}: connection closed before a complete answer`, 'EPROTO')));
  });
}

const SECRET_PREFIXES = [Buffer.from('private_key='), Buffer.from('preshared_key=')];

/** The answer as text without its key lines, cut out at the byte level so the secrets never become strings. */
function secretFreeText(answer: Buffer): string {
  const keep: Buffer[] = [];
  let start = 0;
  while (start < answer.length) {
    let end = answer.indexOf(0x0a, start);
    if (end === -1) end = answer.length;
    const line = answer.subarray(start, end + 1);
    if (!SECRET_PREFIXES.some((p) => line.subarray(0, p.length).equals(p))) keep.push(line);
    start = end + 1;
  }
  return Buffer.concat(keep).toString('utf8');
}

function checkErrno(lines: string[], ifname: string, what: string): void {
  const last = lines[lines.length - 1];
  const m = last !== undefined ? /^errno=(-?\d+)$/.exec(last) : null;
  if (!m) throw new UapiError(`UAPI ${what} on ${ifname}: answer does not end with errno`, 'EPROTO');
  const errno = Number(m[1]);
  if (errno !== 0) throw new UapiError(`UAPI ${what} on ${ifname}: wireguard-go answered errno=${errno} (${errnoName(errno)})`, errnoName(errno), errno);
}

function answerLines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '');
}

export async function uapiSet(ifname: string, cfg: UapiDeviceConfig, opts: UapiCallOptions = {}): Promise<void> {
  const request = buildSetRequest(cfg);
  const text = await exchange(ifname, request, 'set', opts);
  checkErrno(answerLines(text), ifname, 'set');
}

/** Parses a `get=1` answer; exported for tests. Private and preshared keys are skipped, never stored. */
export function parseGetAnswer(text: string, ifname = '?'): UapiDevice {
  const lines = answerLines(text);
  checkErrno(lines, ifname, 'get');
  const dev: UapiDevice = { listenPort: undefined, fwmark: undefined, peers: [] };
  let peer: UapiPeer | undefined;
  let hsSec = 0;
  let hsNsec = 0;
  const closePeer = (): void => {
    if (peer && hsSec > 0) peer.lastHandshake = new Date(hsSec * 1000 + Math.floor(hsNsec / 1e6));
    hsSec = 0;
    hsNsec = 0;
  };
  const num = (key: string, v: string): number => {
    if (!/^\d+$/.test(v)) throw new UapiError(`UAPI get on ${ifname}: ${key} is not a number`, 'EPROTO');
    return Number(v);
  };
  for (const line of lines.slice(0, -1)) {
    const eq = line.indexOf('=');
    if (eq <= 0) throw new UapiError(`UAPI get on ${ifname}: malformed line`, 'EPROTO');
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    switch (key) {
      case 'private_key':
      case 'preshared_key':
        // Only reachable when a caller hands parseGetAnswer raw text; exchange() has already cut these out.
        continue;
      case 'listen_port':
        dev.listenPort = num(key, value);
        continue;
      case 'fwmark':
        dev.fwmark = num(key, value);
        continue;
      case 'public_key': {
        closePeer();
        if (!/^[0-9a-f]{64}$/.test(value)) throw new UapiError(`UAPI get on ${ifname}: public_key is not 64 hex digits`, 'EPROTO');
        peer = {
          publicKey: Buffer.from(value, 'hex').toString('base64'),
          endpoint: undefined,
          lastHandshake: undefined,
          rxBytes: 0,
          txBytes: 0,
          persistentKeepaliveInterval: 0,
          allowedIps: [],
          protocolVersion: undefined,
        };
        dev.peers.push(peer);
        continue;
      }
    }
    // The rest describe the current peer; one before any public_key is a protocol error.
    if (!peer) throw new UapiError(`UAPI get on ${ifname}: ${key} before any public_key`, 'EPROTO');
    switch (key) {
      case 'endpoint':
        peer.endpoint = value;
        break;
      case 'last_handshake_time_sec':
        hsSec = num(key, value);
        break;
      case 'last_handshake_time_nsec':
        hsNsec = num(key, value);
        break;
      case 'rx_bytes':
        peer.rxBytes = num(key, value);
        break;
      case 'tx_bytes':
        peer.txBytes = num(key, value);
        break;
      case 'persistent_keepalive_interval':
        peer.persistentKeepaliveInterval = num(key, value);
        break;
      case 'allowed_ip':
        peer.allowedIps.push(value);
        break;
      case 'protocol_version':
        peer.protocolVersion = num(key, value);
        break;
      default:
        // Newer wireguard-go versions may add keys; ignoring them keeps this client working.
        break;
    }
  }
  closePeer();
  return dev;
}

export async function uapiGet(ifname: string, opts: UapiCallOptions = {}): Promise<UapiDevice> {
  const text = await exchange(ifname, Buffer.from('get=1\n\n'), 'get', opts);
  return parseGetAnswer(text, ifname);
}

/**
 * Whether something serves the socket: 'live' (a connection was accepted), 'stale' (the file exists but
 * nobody listens: its wireguard-go was killed), or 'absent'.
 */
export function probeSocket(ifname: string, timeoutMs = 500): Promise<'live' | 'stale' | 'absent'> {
  return new Promise((resolve) => {
    const sock = connect(uapiSocketPath(ifname));
    const timer = setTimeout(() => {
      sock.destroy();
      // Accepting nothing within the deadline: a process holds the socket but is wedged; count it as live
      // so nobody unlinks a socket that might still come back.
      resolve('live');
    }, timeoutMs);
    sock.on('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve('live');
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      // Anything but these two (e.g. EAGAIN from a full backlog) means some process still holds the socket.
      resolve(err.code === 'ENOENT' ? 'absent' : err.code === 'ECONNREFUSED' ? 'stale' : 'live');
    });
  });
}
