/**
 * A lean gRPC client for unary calls, directly on node:http2.
 *
 * Why: @grpc/grpc-js's client machinery (resolver, load balancer, subchannel, filters, interceptors) costs
 * about 0.4–0.5 ms per call here, and a Request crosses two or three client hops. A unary call is one HTTP/2
 * stream: headers, one length-prefixed message, and a status in the trailers. This client does only that,
 * over one HTTP/2 session per client that it reopens when it closes, errors or goes away.
 *
 * Its errors have grpc-js's shape (numeric `code`, `details`, `metadata`, message "<code> <NAME>: <details>"),
 * because callers everywhere switch on `e.code`.
 */
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';

/** Where to connect and, for mutual TLS, how to build each connection's TLS options. */
export interface LeanTarget {
  /** For messages: the URL as the caller wrote it. */
  url: string;
  kind: 'unix' | 'tcp';
  /** Unix socket path, or host:port. */
  address: string;
  /** Called at every connection attempt, so that each handshake presents the SVID current at that moment. */
  tls?: () => tls.ConnectionOptions;
}

/** grpc-js's default limit on a received message. */
const MAX_RECEIVE_BYTES = 4 * 1024 * 1024;
/** A connection attempt to a silent address gives up after this, whatever the calls' deadlines. */
const CONNECT_TIMEOUT_MS = 20_000;
const MAX_TIMER_MS = 2 ** 31 - 1;
const USER_AGENT = 'nsmesh-lean-grpc (node:http2)';
const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_INADEQUATE_SECURITY } = http2.constants;

export function callError(code: status, details: string, metadata = new Metadata()): ServiceError {
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata });
}

/** The grpc-timeout header: at most 8 digits, in the finest unit that fits. */
export function grpcTimeout(ms: number): string {
  const v = Math.max(0, Math.ceil(ms));
  if (v < 1e8) return `${v}m`;
  if (v / 1e3 < 1e8) return `${Math.ceil(v / 1e3)}S`;
  if (v / 6e4 < 1e8) return `${Math.ceil(v / 6e4)}M`;
  return `${Math.min(99_999_999, Math.ceil(v / 3.6e6))}H`;
}

/** What HTTP status a response without a gRPC status maps to (the gRPC HTTP/2 spec's table). */
function codeOfHttpStatus(httpStatus: number): status {
  switch (httpStatus) {
    case 400:
      return status.INTERNAL;
    case 401:
      return status.UNAUTHENTICATED;
    case 403:
      return status.PERMISSION_DENIED;
    case 404:
      return status.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return status.UNAVAILABLE;
    default:
      return status.UNKNOWN;
  }
}

function decodeGrpcMessage(raw: unknown): string {
  if (typeof raw !== 'string') return '';
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** Custom metadata from response headers or trailers, without pseudo-headers and the status itself. */
function metadataOf(headers: http2.IncomingHttpHeaders): Metadata {
  const md = Metadata.fromHttp2Headers(headers);
  md.remove('grpc-status');
  md.remove('grpc-message');
  return md;
}

/** A status read from headers (trailers-only response) or trailers; undefined when they carry none. */
function statusIn(headers: http2.IncomingHttpHeaders): { code: status; details: string; metadata: Metadata } | undefined {
  const raw = headers['grpc-status'];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  const code = Number.isInteger(n) && n >= 0 && n <= 16 ? (n as status) : status.UNKNOWN;
  return { code, details: decodeGrpcMessage(headers['grpc-message']), metadata: metadataOf(headers) };
}

function codeOfRst(rstCode: number): status {
  switch (rstCode) {
    case NGHTTP2_REFUSED_STREAM:
      return status.UNAVAILABLE;
    case NGHTTP2_CANCEL:
      return status.CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return status.RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
      return status.PERMISSION_DENIED;
    default:
      return status.INTERNAL;
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class LeanClient {
  private session: http2.ClientHttp2Session | undefined;
  private connecting: Promise<http2.ClientHttp2Session> | undefined;
  private closed = false;
  private opened = 0;

  constructor(private readonly target: LeanTarget) {}

  /** How many HTTP/2 sessions this client has opened (a reconnect shows as an increase). */
  get sessionsOpened(): number {
    return this.opened;
  }

  /**
   * One unary call: `body` is the serialised request, the result the serialised response. Rejects with a
   * grpc-js-shaped error; never outlives `timeoutMs`.
   */
  call(path: string, body: Buffer, metadata: Metadata | undefined, timeoutMs: number): Promise<Buffer> {
    const started = Date.now();
    const deadline = started + timeoutMs;
    return new Promise<Buffer>((resolve, reject) => {
      let settled = false;
      let cancel: (() => void) | undefined;
      const finish = (err: ServiceError | undefined, res?: Buffer) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(res!);
      };
      // Beyond setTimeout's range a deadline is as good as none (and Node would fire an overlong timer at once).
      const timer =
        timeoutMs <= MAX_TIMER_MS
          ? setTimeout(() => {
              cancel?.();
              finish(callError(status.DEADLINE_EXCEEDED, `Deadline exceeded after ${((Date.now() - started) / 1000).toFixed(3)}s,remote_addr=${this.target.address}`));
            }, timeoutMs)
          : undefined;
      const start = (session: http2.ClientHttp2Session, retried: boolean) => {
        if (settled) return;
        let stream: http2.ClientHttp2Stream;
        try {
          stream = session.request(this.headers(path, metadata, deadline - Date.now()), { endStream: false });
        } catch (e) {
          // The session began closing between our check and this request (GOAWAY, peer close): one more
          // try on a fresh session, as grpc-js retries calls that never reached the server.
          this.forget(session);
          if (!retried && !this.closed) this.sessionFor().then((s) => start(s, true), (err: ServiceError) => finish(err));
          else finish(callError(status.UNAVAILABLE, `${this.target.url}: ${(e as Error).message}`));
          return;
        }
        cancel = () => stream.close(NGHTTP2_CANCEL);
        this.exchange(stream, session, body, finish);
      };
      const ready = this.usableSession();
      if (ready) start(ready, false);
      else this.sessionFor().then((s) => start(s, false), (err: ServiceError) => finish(err));
    });
  }

  /**
   * Resolves once a session is up, trying again until the deadline (as grpc-js's waitForReady waits through
   * failed attempts); rejects with grpc-js's error then.
   */
  async ready(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let backoff = 50;
    for (;;) {
      if (this.closed) throw new Error('Channel has been shut down');
      const left = deadline - Date.now();
      if (left <= 0) break;
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        this.sessionFor().then(
          () => 'up' as const,
          () => 'failed' as const,
        ),
        new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), Math.min(left, MAX_TIMER_MS)))),
      ]);
      clearTimeout(timer);
      if (outcome === 'up') return;
      if (outcome === 'late') break;
      await sleep(Math.min(backoff, Math.max(0, deadline - Date.now())));
      backoff = Math.min(backoff * 2, 1000);
    }
    throw new Error('Failed to connect before the deadline');
  }

  /** Ends the session; calls already on it finish (as with grpc-js), later ones fail with UNAVAILABLE. */
  close(): void {
    this.closed = true;
    this.session?.close();
    this.session = undefined;
  }

  private headers(path: string, metadata: Metadata | undefined, leftMs: number): http2.OutgoingHttpHeaders {
    return {
      ...(metadata ? metadata.toHttp2Headers() : {}),
      ':method': 'POST',
      ':path': path,
      'content-type': 'application/grpc',
      te: 'trailers',
      'grpc-timeout': grpcTimeout(leftMs),
      'user-agent': USER_AGENT,
    };
  }

  /** Sends the framed request on `stream` and reads back one message and the status. */
  private exchange(
    stream: http2.ClientHttp2Stream,
    session: http2.ClientHttp2Session,
    body: Buffer,
    finish: (err: ServiceError | undefined, res?: Buffer) => void,
  ): void {
    let httpStatus = 0;
    let headerStatus: ReturnType<typeof statusIn>;
    let trailerStatus: ReturnType<typeof statusIn>;
    let streamError: Error | undefined;
    const chunks: Buffer[] = [];
    let received = 0;
    let tooLarge = false;
    stream.on('response', (headers) => {
      httpStatus = Number(headers[':status']);
      headerStatus = statusIn(headers);
    });
    stream.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received > MAX_RECEIVE_BYTES + 5) {
        tooLarge = true;
        stream.close(NGHTTP2_CANCEL);
        return;
      }
      chunks.push(chunk);
    });
    stream.on('trailers', (trailers) => {
      trailerStatus = statusIn(trailers);
    });
    // Errors arrive again as the outcome in 'close'; a listener must exist so that none is ever unhandled.
    stream.on('error', (e) => {
      streamError = e;
    });
    stream.on('close', () => {
      if (tooLarge) return finish(callError(status.RESOURCE_EXHAUSTED, `Received message larger than max (${received - 5} vs. ${MAX_RECEIVE_BYTES})`));
      const st = trailerStatus ?? headerStatus;
      if (st) {
        if (st.code !== status.OK) return finish(callError(st.code, st.details, st.metadata));
        return this.settleOk(Buffer.concat(chunks, received), st.metadata, finish);
      }
      if (httpStatus && httpStatus !== 200) return finish(callError(codeOfHttpStatus(httpStatus), `Received HTTP status code ${httpStatus}`));
      const rst = stream.rstCode ?? 0;
      if (session.destroyed || (streamError && rst === 0)) {
        return finish(callError(status.UNAVAILABLE, `Connection dropped (${this.target.url})${streamError ? `: ${streamError.message}` : ''}`));
      }
      return finish(callError(codeOfRst(rst), `Received RST_STREAM with code ${rst}`));
    });
    const frame = Buffer.allocUnsafe(5 + body.length);
    frame[0] = 0;
    frame.writeUInt32BE(body.length, 1);
    body.copy(frame, 5);
    stream.end(frame);
  }

  private settleOk(data: Buffer, metadata: Metadata, finish: (err: ServiceError | undefined, res?: Buffer) => void): void {
    if (data.length < 5) return finish(callError(status.UNIMPLEMENTED, 'No message received', metadata));
    const len = data.readUInt32BE(1);
    if (data.length < 5 + len) return finish(callError(status.INTERNAL, 'Truncated message', metadata));
    if (data.length > 5 + len) return finish(callError(status.UNIMPLEMENTED, 'Too many responses received', metadata));
    // We never offer an encoding (no grpc-accept-encoding), so a compressed message breaks the protocol.
    if (data[0] !== 0) return finish(callError(status.INTERNAL, 'Received a compressed message without a negotiated encoding', metadata));
    finish(undefined, data.subarray(5));
  }

  private usableSession(): http2.ClientHttp2Session | undefined {
    const s = this.session;
    if (s && !s.closed && !s.destroyed) return s;
    if (s) this.session = undefined;
    return undefined;
  }

  private forget(session: http2.ClientHttp2Session): void {
    if (this.session === session) this.session = undefined;
  }

  /** The live session, or the one being opened; shared by all calls waiting for it. */
  private sessionFor(): Promise<http2.ClientHttp2Session> {
    if (this.closed) return Promise.reject(callError(status.UNAVAILABLE, 'Channel has been shut down'));
    const s = this.usableSession();
    if (s) return Promise.resolve(s);
    this.connecting ??= this.open().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  private open(): Promise<http2.ClientHttp2Session> {
    const t = this.target;
    const secure = !!t.tls;
    const authority = t.kind === 'tcp' ? `${secure ? 'https' : 'http'}://${t.address}` : `${secure ? 'https' : 'http'}://localhost`;
    return new Promise((resolve, reject) => {
      const createConnection = (): net.Socket => {
        const where = t.kind === 'unix' ? { path: t.address } : hostPort(t.address);
        const socket = t.tls ? tls.connect({ ...where, ...t.tls() }) : net.connect(where as net.NetConnectOpts);
        socket.setNoDelay(true);
        return socket;
      };
      let session: http2.ClientHttp2Session;
      try {
        session = http2.connect(authority, { createConnection, settings: { enablePush: false } });
      } catch (e) {
        reject(callError(status.UNAVAILABLE, `No connection established to ${t.url}. Last error: ${String(e)}`));
        return;
      }
      let up = false;
      const fail = (why: string) => {
        if (up) return;
        clearTimeout(timer);
        session.destroy();
        reject(callError(status.UNAVAILABLE, `No connection established to ${t.url}. Last error: ${why}`));
      };
      const timer = setTimeout(() => fail(`no answer within ${CONNECT_TIMEOUT_MS} ms`), CONNECT_TIMEOUT_MS);
      // The server's SETTINGS are the sign it accepted us: with TLS 1.3 a server refuses a client
      // certificate only after the client considers the handshake done, by an alert instead of SETTINGS.
      session.once('remoteSettings', () => {
        if (this.closed) return fail('Channel has been shut down');
        up = true;
        clearTimeout(timer);
        this.opened++;
        this.session = session;
        // Pending calls hold their deadline timers; an idle session must not keep the process alive.
        session.unref();
        resolve(session);
      });
      session.on('error', (e: Error) => fail(String(e)));
      session.once('close', () => {
        fail('Failed to connect');
        this.forget(session);
      });
      // Streams in flight finish (Node closes the session after them, or destroys it on an error code);
      // new calls go to a new session.
      session.once('goaway', () => this.forget(session));
    });
  }
}

function hostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(address.slice(i + 1)) };
}
