/**
 * A gRPC server on node:http2 for nsmesh's own APIs.
 *
 * Why not grpc-js's server: its per-call machinery (interceptor stack, call tracking, an auth context built
 * from getPeerCertificate() on every call) more than doubles a unary round trip on a unix socket. This
 * server does only what the API needs — unary and server-streaming methods (no client streams, no
 * compression) — and offers handlers the part of grpc-js's server call API they use, so handlers written
 * for grpc-js run unchanged: call.request, call.metadata, getDeadline(), getPeer(), cancelled and its
 * event, write()/end()/destroy() and emit('error') on streams, callback(err, res) on unary calls.
 *
 * Wire behaviour follows the gRPC HTTP/2 protocol: length-prefixed messages, grpc-timeout enforced as
 * DEADLINE_EXCEEDED, the status in trailers (trailers-only when nothing was sent), UNIMPLEMENTED for an
 * unknown method, a client's RST_STREAM (or a lost connection) seen by the handler as cancellation.
 */
import http2 from 'node:http2';
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { Writable } from 'node:stream';
import type { DetailedPeerCertificate, SecureContextOptions, TLSSocket } from 'node:tls';
import * as grpc from '@grpc/grpc-js';

const { status } = grpc;

export interface CallStatus {
  code: grpc.status;
  details: string;
  metadata?: grpc.Metadata | null;
}

/** What mutual TLS needs from the identity layer (src/identity/tls-server.ts implements it). */
export interface SessionGate {
  /** Certificate chain, key and trust roots for the handshakes from now on. */
  secureContext(): SecureContextOptions;
  /** Calls `changed` whenever secureContext() would answer differently (rotation); returns the unsubscribe. */
  watch(changed: () => void): () => void;
  /** Decides once per TLS session whether its client may call at all. */
  admit(socket: TLSSocket): Admission;
}

/** Either every call of the session is refused with one status, or `bind` ties the client's identity to each call. */
export type Admission = { bind(metadata: grpc.Metadata): void } | { refuse: CallStatus };

export type ServerSecurity = 'insecure' | SessionGate;

/** grpc's default limit on a received message. */
const MAX_REQUEST_BYTES = 4 * 1024 * 1024;
/** setTimeout's limit; a longer deadline is as good as none. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const TIMEOUT_UNITS_MS: Record<string, number> = { H: 3600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };
/** Request headers that are transport, not metadata (grpc-js strips the same ones). */
const TRANSPORT_HEADERS = ['te', 'content-type', 'grpc-timeout', 'grpc-encoding', 'grpc-accept-encoding', 'accept-encoding'];

const noop = () => {};

/** grpc-message is percent-encoded: bytes outside printable ASCII, and '%' itself. */
export function encodeGrpcMessage(text: string): string {
  if (/^[\x20-\x24\x26-\x7e]*$/.test(text)) return text;
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) {
    out += b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** grpc-timeout: up to 8 digits and a unit; undefined when malformed. */
export function parseGrpcTimeout(value: string): number | undefined {
  const m = /^(\d{1,8})([HMSmun])$/.exec(value);
  return m ? Number(m[1]) * TIMEOUT_UNITS_MS[m[2]!]! : undefined;
}

/** The status a handler's error means, as grpc-js reads it: a numeric code with details, else UNKNOWN. */
function statusOfError(err: unknown, trailer?: grpc.Metadata | null): CallStatus {
  const e = (err ?? {}) as { code?: unknown; details?: unknown; message?: unknown; metadata?: grpc.Metadata };
  const hasCode = typeof e.code === 'number' && Number.isInteger(e.code);
  const details = hasCode && typeof e.details === 'string' ? e.details : typeof e.message === 'string' ? e.message : 'Unknown Error';
  return { code: hasCode ? (e.code as grpc.status) : status.UNKNOWN, details, metadata: trailer ?? e.metadata ?? null };
}

function frame(message: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}

interface Method {
  def: grpc.MethodDefinition<unknown, unknown>;
  handler: (...args: unknown[]) => void;
}

/** One HTTP/2 stream's response side: headers once, messages, then the status exactly once. */
class Exchange {
  done = false;
  private headersSent = false;
  private timer: NodeJS.Timeout | undefined;
  /** What cancellation does to the handler's call object; set once the handler runs. */
  onCancel: () => void = noop;

  constructor(
    readonly stream: http2.ServerHttp2Stream,
    readonly deadline: number,
  ) {
    const left = deadline - Date.now();
    if (left < MAX_TIMER_MS) {
      this.timer = setTimeout(() => {
        this.finish({ code: status.DEADLINE_EXCEEDED, details: 'Deadline exceeded' });
        this.onCancel();
      }, Math.max(0, left));
    }
    // A stream that closes before its status went out was reset by the client or lost with its connection.
    stream.once('close', () => {
      clearTimeout(this.timer);
      if (this.done) return;
      this.done = true;
      this.onCancel();
    });
  }

  private live(): boolean {
    return !this.stream.destroyed && !this.stream.closed;
  }

  sendHeaders(metadata?: grpc.Metadata): void {
    if (!this.done) this.respondHeaders(metadata);
  }

  private respondHeaders(metadata?: grpc.Metadata): void {
    if (this.headersSent || !this.live()) return;
    this.headersSent = true;
    try {
      this.stream.respond(
        { ...metadata?.toHttp2Headers(), ':status': 200, 'content-type': 'application/grpc', 'grpc-accept-encoding': 'identity' },
        { waitForTrailers: true },
      );
    } catch {
      // the stream went away between the check and the write: its 'close' cancels the call
    }
  }

  sendMessage(message: Buffer, cb: (err?: Error | null) => void): void {
    if (this.done || !this.live()) return cb();
    this.sendHeaders();
    this.stream.write(frame(message), () => cb());
  }

  /** The status, after `last` if given; trailers-only when nothing was sent yet. */
  finish(st: CallStatus, last?: Buffer): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    if (!this.live()) return;
    const trailers = { ...st.metadata?.toHttp2Headers(), 'grpc-status': String(st.code), 'grpc-message': encodeGrpcMessage(st.details) };
    try {
      if (!this.headersSent && !last) {
        this.stream.respond({ ':status': 200, 'content-type': 'application/grpc', ...trailers }, { endStream: true });
      } else {
        this.respondHeaders();
        this.stream.once('wantTrailers', () => {
          try {
            this.stream.sendTrailers(trailers);
          } catch {
            // reset meanwhile
          }
        });
        this.stream.end(last ? frame(last) : undefined);
      }
    } catch {
      // reset meanwhile
    }
    // Whatever the client still sends is of no use: read and drop it so that flow control never stalls.
    this.stream.resume();
  }
}

// A constructor of any base class, for the mixin below (TypeScript requires any[] there).
type AnyBase = abstract new (...args: any[]) => object;

/** The part of grpc-js's server call API that unary and server-streaming calls share. */
function withCallBasics<B extends AnyBase>(base: B) {
  abstract class CallBasics extends base {
    protected abstract readonly ex: Exchange;
    protected abstract readonly path: string;
    getDeadline(): number {
      return this.ex.deadline;
    }
    getPeer(): string {
      return peerAddress(this.ex.stream.session);
    }
    getPath(): string {
      return this.path;
    }
    sendMetadata(metadata: grpc.Metadata): void {
      this.ex.sendHeaders(metadata);
    }
    getAuthContext(): { sslPeerCertificate?: DetailedPeerCertificate } {
      return authContext(this.ex.stream.session);
    }
  }
  return CallBasics;
}

/** What a unary handler gets as `call` (grpc.ServerUnaryCall's used subset). */
class UnaryCall extends withCallBasics(EventEmitter) {
  cancelled = false;
  constructor(
    readonly request: unknown,
    readonly metadata: grpc.Metadata,
    protected readonly ex: Exchange,
    protected readonly path: string,
  ) {
    super();
  }
}

/** What a server-streaming handler gets (grpc.ServerWritableStream's used subset), with backpressure from HTTP/2. */
class StreamCall extends withCallBasics(Writable) {
  cancelled = false;
  private pending: CallStatus = { code: status.OK, details: 'OK' };

  constructor(
    readonly request: unknown,
    readonly metadata: grpc.Metadata,
    protected readonly ex: Exchange,
    protected readonly path: string,
    private readonly serialize: (value: unknown) => Buffer,
  ) {
    super({ objectMode: true });
    // As in grpc-js, a handler ends a stream with a status by emitting it as an error.
    this.on('error', (err) => {
      this.pending = statusOfError(err);
      this.end();
    });
  }

  override _write(value: unknown, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    let bytes: Buffer;
    try {
      bytes = this.serialize(value);
    } catch (e) {
      return cb(Object.assign(new Error(`response does not serialize: ${(e as Error).message}`), { code: status.INTERNAL }));
    }
    this.ex.sendMessage(bytes, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.ex.finish(this.pending);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (err) this.ex.finish(statusOfError(err));
    else if (!this.ex.done) {
      this.ex.done = true;
      if (!this.ex.stream.closed) this.ex.stream.close(http2.constants.NGHTTP2_CANCEL);
    }
    // The error has become the call's status; passing it on would only re-emit it.
    cb();
  }
}

function peerAddress(session: http2.Http2Session | undefined): string {
  const s = session?.socket;
  if (!s?.remoteAddress) return 'unix:';
  return s.remoteFamily === 'IPv6' ? `[${s.remoteAddress}]:${s.remotePort}` : `${s.remoteAddress}:${s.remotePort}`;
}

function authContext(session: http2.Http2Session | undefined): { sslPeerCertificate?: DetailedPeerCertificate } {
  const socket = session?.socket as TLSSocket | undefined;
  if (!socket || typeof socket.getPeerCertificate !== 'function') return {};
  const cert = socket.getPeerCertificate(true);
  return cert?.raw ? { sslPeerCertificate: cert } : {};
}

export type ListenOn = { path: string } | { host: string; port: number };

export class LeanServer {
  private readonly methods = new Map<string, Method>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  /** Every accepted connection, also those still in their TLS handshake (which no session holds yet). */
  private readonly sockets = new Set<net.Socket>();
  private readonly admissions = new WeakMap<http2.Http2Session, Admission>();
  private readonly h2: http2.Http2Server | http2.Http2SecureServer;
  private unwatch: () => void = noop;

  constructor(private readonly security: ServerSecurity = 'insecure') {
    const options: http2.ServerOptions = {
      // 1000 concurrent Requests from one nsc, or one nsmd towards one endpoint, must not queue.
      settings: { maxConcurrentStreams: 10_000 },
      // Node's default (10 MB per session) answers a burst of streams with ENHANCE_YOUR_CALM; grpc-js lifts it too.
      maxSessionMemory: Number.MAX_SAFE_INTEGER,
      // Error trailers carry whatever metadata a handler attached; Node's default cap would reset the stream.
      maxSendHeaderBlockLength: Number.MAX_SAFE_INTEGER,
    };
    if (security === 'insecure') {
      this.h2 = http2.createServer(options);
    } else {
      const secure = http2.createSecureServer({ ...options, ...security.secureContext(), requestCert: true, rejectUnauthorized: true, allowHTTP1: false });
      // New handshakes present the rotated SVID and trust the current bundles; live sessions keep theirs.
      this.unwatch = security.watch(() => {
        try {
          secure.setSecureContext(security.secureContext());
        } catch {
          // an SVID whose key does not match is the source's bug; the previous context keeps serving
        }
      });
      // A failed handshake is the client's problem (it sees UNAVAILABLE), never this process's.
      secure.on('tlsClientError', noop);
      this.h2 = secure;
    }
    this.h2.on('session', (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      session.on('error', noop);
      session.once('close', () => this.sessions.delete(session));
    });
    this.h2.on('sessionError', noop);
    this.h2.on('connection', (socket: net.Socket) => {
      // An answer goes out as several small writes (headers, message, trailers): Nagle would hold the later
      // ones for the peer's delayed ACK. A no-op on unix sockets.
      socket.setNoDelay(true);
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.h2.on('stream', (stream, headers) => this.onStream(stream, headers));
  }

  /** Serves a service's methods; `impl` is written against grpc-js's server API (unary and server-streaming). */
  addService(service: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): void {
    for (const [name, def] of Object.entries(service)) {
      if (def.requestStream) throw new Error(`${def.path}: client-streaming methods are not served by this server`);
      if (this.methods.has(def.path)) throw new Error(`${def.path} is already served`);
      const handler = impl[name];
      if (handler) this.methods.set(def.path, { def: def as grpc.MethodDefinition<unknown, unknown>, handler: handler as Method['handler'] });
    }
  }

  listen(on: ListenOn): Promise<net.AddressInfo | string> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => reject(e);
      this.h2.once('error', onError);
      this.h2.listen(on, () => {
        this.h2.off('error', onError);
        // Errors after listening (e.g. EMFILE on accept) must not take the process down.
        this.h2.on('error', noop);
        resolve(this.h2.address()!);
      });
    });
  }

  /** Stops accepting, lets calls finish, and cuts what is left after `forceAfterMs` (streams never end by themselves). */
  close(forceAfterMs: number): Promise<void> {
    this.unwatch();
    return new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        for (const s of this.sessions) s.destroy();
        for (const s of this.sockets) s.destroy();
      }, forceAfterMs);
      this.h2.close(() => {
        clearTimeout(force);
        resolve();
      });
      for (const s of this.sessions) s.close();
    });
  }

  private admission(session: http2.Http2Session, gate: SessionGate): Admission {
    let a = this.admissions.get(session);
    if (!a) {
      try {
        a = gate.admit(session.socket as TLSSocket);
      } catch (e) {
        a = { refuse: { code: status.UNAUTHENTICATED, details: (e as Error).message } };
      }
      this.admissions.set(session, a);
    }
    return a;
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    // A reset or a lost connection shows as 'close', which cancels the call; the error itself is noise.
    stream.on('error', noop);
    const contentType = headers['content-type'];
    if (headers[':method'] !== 'POST' || typeof contentType !== 'string' || !contentType.startsWith('application/grpc')) {
      try {
        stream.respond({ ':status': 415, 'content-type': 'text/plain' }, { endStream: true });
      } catch {
        // reset meanwhile
      }
      stream.resume();
      return;
    }
    const timeoutHeader = headers['grpc-timeout'];
    const timeoutMs = typeof timeoutHeader === 'string' ? parseGrpcTimeout(timeoutHeader) : undefined;
    const ex = new Exchange(stream, timeoutMs === undefined ? Infinity : Date.now() + timeoutMs);
    if (timeoutHeader !== undefined && timeoutMs === undefined) {
      return ex.finish({ code: status.INTERNAL, details: `invalid grpc-timeout "${String(timeoutHeader)}"` });
    }
    const path = headers[':path'] ?? '';
    let bind: ((md: grpc.Metadata) => void) | undefined;
    if (this.security !== 'insecure') {
      const a = this.admission(stream.session!, this.security);
      if ('refuse' in a) return ex.finish(a.refuse);
      bind = a.bind;
    }
    const method = this.methods.get(path);
    if (!method) return ex.finish({ code: status.UNIMPLEMENTED, details: `the server does not implement the method ${path}` });

    const metadata = grpc.Metadata.fromHttp2Headers(headers);
    for (const h of TRANSPORT_HEADERS) metadata.remove(h);
    bind?.(metadata);

    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      if (ex.done) return;
      size += chunk.length;
      if (size > MAX_REQUEST_BYTES + 5) {
        ex.finish({ code: status.RESOURCE_EXHAUSTED, details: `request larger than ${MAX_REQUEST_BYTES} bytes` });
        ex.onCancel();
        return;
      }
      chunks.push(chunk);
    });
    stream.once('end', () => {
      if (ex.done) return;
      const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      const request = this.decodeRequest(body, method, ex, headers['grpc-encoding']);
      if (request !== undefined) this.run(method, path, request, metadata, ex);
    });
  }

  /** The one request message of a unary or server-streaming call; undefined once a status has been sent. */
  private decodeRequest(body: Buffer, method: Method, ex: Exchange, encoding: string | string[] | undefined): unknown {
    const messages: Buffer[] = [];
    for (let at = 0; at < body.length; ) {
      if (body.length - at < 5) return ex.finish({ code: status.INTERNAL, details: 'truncated gRPC message frame' });
      const len = body.readUInt32BE(at + 1);
      if (body[at] !== 0) {
        ex.finish({ code: status.UNIMPLEMENTED, details: `compressed messages (${String(encoding)}) are not supported; send uncompressed` });
        return undefined;
      }
      if (body.length - at - 5 < len) return ex.finish({ code: status.INTERNAL, details: 'truncated gRPC message' });
      messages.push(body.subarray(at + 5, at + 5 + len));
      at += 5 + len;
    }
    if (messages.length !== 1) {
      ex.finish({ code: status.UNIMPLEMENTED, details: `${method.def.path} takes exactly one request message, got ${messages.length}` });
      return undefined;
    }
    try {
      return method.def.requestDeserialize(messages[0]!);
    } catch (e) {
      ex.finish({ code: status.INTERNAL, details: `request does not parse: ${(e as Error).message}` });
      return undefined;
    }
  }

  private run(method: Method, path: string, request: unknown, metadata: grpc.Metadata, ex: Exchange): void {
    const { def, handler } = method;
    try {
      if (def.responseStream) {
        const call = new StreamCall(request, metadata, ex, path, def.responseSerialize as (v: unknown) => Buffer);
        ex.onCancel = () => {
          call.cancelled = true;
          call.emit('cancelled', 'cancelled');
          call.destroy();
        };
        handler(call);
        return;
      }
      const call = new UnaryCall(request, metadata, ex, path);
      ex.onCancel = () => {
        call.cancelled = true;
        call.emit('cancelled', 'cancelled');
      };
      handler(call, (err: unknown, value?: unknown, trailer?: grpc.Metadata | null) => {
        if (err) return ex.finish(statusOfError(err, trailer));
        let bytes: Buffer;
        try {
          bytes = def.responseSerialize(value);
        } catch (e) {
          return ex.finish({ code: status.INTERNAL, details: `response does not serialize: ${(e as Error).message}` });
        }
        ex.finish({ code: status.OK, details: 'OK', metadata: trailer ?? null }, bytes);
      });
    } catch (e) {
      ex.finish({ code: status.UNKNOWN, details: `handler of ${path} threw: ${(e as Error).message}` });
    }
  }
}
