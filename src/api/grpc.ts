import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  serviceDefinition,
  type DeepPartial,
  type MethodName,
  type RequestOf,
  type ResponseOf,
  type ServiceName,
} from './codec.js';
import { toServiceError } from '../util/errors.js';
import { LeanServer, type ServerSecurity } from './lean-server.js';
import type { Transport } from '../identity/transport.js';
import { svidClientOptions } from '../identity/tls-client.js';
import { callError, LeanClient } from './lean-client.js';

/**
 * Socket addresses are written as upstream writes them: unix:///path or tcp://host:port.
 * A bare absolute path is taken as a unix socket.
 */
export interface SocketAddress {
  kind: 'unix' | 'tcp';
  /** The grpc-js target / bind string. */
  target: string;
  /** For unix sockets, the file path. */
  path?: string;
}

export function parseSocketUrl(url: string): SocketAddress {
  if (url.startsWith('unix://')) {
    const p = url.slice('unix://'.length);
    if (!p.startsWith('/')) throw new Error(`"${url}": a unix socket URL needs an absolute path, e.g. unix:///var/lib/networkservicemesh/nsm.io.sock`);
    return { kind: 'unix', target: `unix://${p}`, path: p };
  }
  if (url.startsWith('/')) return { kind: 'unix', target: `unix://${url}`, path: url };
  if (url.startsWith('tcp://')) {
    const hp = url.slice('tcp://'.length).replace(/\/$/, '');
    if (!/^(\[[0-9a-fA-F:.]+\]|[^:/\s]+):\d{1,5}$/.test(hp)) throw new Error(`"${url}": expected tcp://host:port`);
    return { kind: 'tcp', target: hp };
  }
  throw new Error(`"${url}": expected unix:///path/to/socket or tcp://host:port`);
}

/** channelz bookkeeping costs a measurable share of every call and nothing here reads it. */
const CHANNEL_DEFAULTS: grpc.ChannelOptions = { 'grpc.enable_channelz': 0 };

export interface CallOptions {
  timeoutMs: number;
  metadata?: grpc.Metadata;
}

/** A typed, promise-based client for one API service. Every call has a deadline. */
export class ApiClient<S extends ServiceName> {
  private grpcClient: grpc.Client | undefined;
  private readonly makeGrpcClient: () => grpc.Client;
  /** Unary calls go through the lean client when the credentials are ones it can reproduce (see below). */
  private readonly lean: LeanClient | undefined;
  private readonly methods: grpc.ServiceDefinition;
  private serverId: string | undefined;
  readonly secure: boolean;

  /** With a Transport the channel is mutual TLS and the server's SPIFFE ID is learnt at each handshake. */
  constructor(
    readonly service: S,
    readonly url: string,
    credentials: grpc.ChannelCredentials | Transport = grpc.credentials.createInsecure(),
    options: grpc.ChannelOptions = {},
  ) {
    this.methods = serviceDefinition(service);
    const addr = parseSocketUrl(url);
    const isTransport = 'channelCredentials' in credentials && typeof credentials.channelCredentials === 'function';
    const transport = isTransport ? (credentials as Transport) : undefined;
    this.secure = !!transport?.secure;
    // The grpc-js client (streams, channel()) is made on first use, so that a client making only unary
    // calls never opens a second connection.
    this.makeGrpcClient = () => {
      const Ctor = grpc.makeGenericClientConstructor(this.methods, service);
      const creds = transport ? transport.channelCredentials((id) => (this.serverId = id)) : (credentials as grpc.ChannelCredentials);
      return new Ctor(addr.target, creds, { ...CHANNEL_DEFAULTS, ...options });
    };
    // The lean client speaks plaintext or SVID mutual TLS from a Transport's source; other secure
    // ChannelCredentials (opaque grpc-js objects) keep grpc-js for unary calls too.
    const plaintext = transport ? !transport.secure : !(credentials as grpc.ChannelCredentials)._isSecure();
    const source = transport?.secure ? transport.source : undefined;
    if (plaintext || source) {
      this.lean = new LeanClient({
        url,
        kind: addr.kind,
        address: addr.kind === 'unix' ? addr.path! : addr.target,
        ...(source ? { tls: () => svidClientOptions(source, (peer) => (this.serverId = peer.spiffeId)) } : {}),
      });
    }
  }

  private get client(): grpc.Client {
    return (this.grpcClient ??= this.makeGrpcClient());
  }

  /** The server's SPIFFE ID (connecting first if need be); undefined on an insecure channel. */
  async peerId(timeoutMs: number): Promise<string | undefined> {
    if (!this.secure) return undefined;
    if (!this.serverId) await this.waitForReady(timeoutMs);
    return this.serverId;
  }

  unary<M extends MethodName<S>>(method: M, req: DeepPartial<RequestOf<S, M>>, opts: CallOptions): Promise<ResponseOf<S, M>> {
    if (this.lean) return this.leanUnary(method, req, opts);
    return new Promise((resolve, reject) => {
      const fn = (this.client as unknown as Record<string, grpc.requestCallback<unknown> & ((...a: unknown[]) => void)>)[method]!;
      fn.call(
        this.client,
        req,
        opts.metadata ?? new grpc.Metadata(),
        { deadline: Date.now() + opts.timeoutMs },
        (err: grpc.ServiceError | null, res: unknown) => (err ? reject(err) : resolve(res as ResponseOf<S, M>)),
      );
    });
  }

  private async leanUnary<M extends MethodName<S>>(method: M, req: DeepPartial<RequestOf<S, M>>, opts: CallOptions): Promise<ResponseOf<S, M>> {
    const def = this.methods[method]!;
    let body: Buffer;
    try {
      body = def.requestSerialize(req);
    } catch (e) {
      throw callError(grpc.status.INTERNAL, `Request message serialization failure: ${(e as Error).message}`);
    }
    const res = await this.lean!.call(def.path, body, opts.metadata, opts.timeoutMs);
    try {
      return def.responseDeserialize(res) as ResponseOf<S, M>;
    } catch (e) {
      throw callError(grpc.status.INTERNAL, `Response message parsing error: ${(e as Error).message}`);
    }
  }

  /** A server stream. Without timeoutMs it stays open until cancelled (watches, monitors). */
  stream<M extends MethodName<S>>(
    method: M,
    req: DeepPartial<RequestOf<S, M>>,
    opts: Partial<CallOptions> = {},
  ): grpc.ClientReadableStream<ResponseOf<S, M>> {
    const fn = (this.client as unknown as Record<string, (...a: unknown[]) => grpc.ClientReadableStream<ResponseOf<S, M>>>)[method]!;
    const callOpts: grpc.CallOptions = opts.timeoutMs ? { deadline: Date.now() + opts.timeoutMs } : {};
    return fn.call(this.client, req, opts.metadata ?? new grpc.Metadata(), callOpts);
  }

  /** Collects a finite server stream (Find without watch). */
  async collect<M extends MethodName<S>>(method: M, req: DeepPartial<RequestOf<S, M>>, opts: CallOptions): Promise<ResponseOf<S, M>[]> {
    const out: ResponseOf<S, M>[] = [];
    for await (const item of this.stream(method, req, opts)) out.push(item as ResponseOf<S, M>);
    return out;
  }

  /** Resolves once connected (the lean client's session when unary calls use it), or rejects at the deadline. */
  waitForReady(timeoutMs: number): Promise<void> {
    if (this.lean) return this.lean.ready(timeoutMs);
    return new Promise((resolve, reject) =>
      this.client.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** The grpc-js channel under streams, to watch its connectivity (a reconnect shows as a state change). */
  channel() {
    return this.client.getChannel();
  }

  /** How many connections unary calls have opened (a reconnect shows as an increase); undefined if grpc-js carries them. */
  unarySessionsOpened(): number | undefined {
    return this.lean?.sessionsOpened;
  }

  close(): void {
    this.lean?.close();
    this.grpcClient?.close();
  }
}

/** Wraps an async function as a unary handler: whatever it throws reaches the caller as a gRPC status. */
export function unary<Req, Res>(fn: (req: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request, call).then(
      (res) => callback(null, res),
      (err: unknown) => callback(toServiceError(err)),
    );
  };
}

export function addService<S extends ServiceName>(server: LeanServer, service: S, handlers: grpc.UntypedServiceImplementation): void {
  server.addService(serviceDefinition(service), handlers);
}

/** Refuses to take over a unix socket another process still serves, and removes a stale one. */
async function prepareUnixSocket(file: string): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  if (!fs.existsSync(file)) return;
  const inUse = await new Promise<boolean>((resolve) => {
    const s = net.connect(file);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (inUse) throw new Error(`${file} is served by another process (is another nsmd running?)`);
  fs.unlinkSync(file);
}

export interface RunningServer {
  server: LeanServer;
  /** The address it listens on, with the port filled in for tcp://host:0. */
  url: string;
  close(): Promise<void>;
}

/**
 * Serves the API on a unix socket or tcp://host:port, with handlers written against grpc-js's server API
 * (see lean-server.ts for why not grpc-js's own server). `security` is a Transport's serverCredentials():
 * mutual TLS with its SVID, or plaintext.
 */
export async function startServer(
  url: string,
  register: (server: LeanServer) => void,
  security: ServerSecurity = 'insecure',
  /** Unix socket mode; unset keeps what the umask gives (owner only, for sockets that grant identities). */
  socketMode?: number,
): Promise<RunningServer> {
  const addr = parseSocketUrl(url);
  if (addr.kind === 'unix') await prepareUnixSocket(addr.path!);
  const server = new LeanServer(security);
  register(server);
  const sep = addr.target.lastIndexOf(':');
  const bound = await server.listen(
    addr.kind === 'unix' ? { path: addr.path! } : { host: addr.target.slice(0, sep).replace(/^\[(.*)\]$/, '$1'), port: Number(addr.target.slice(sep + 1)) },
  );
  if (addr.kind === 'unix' && socketMode !== undefined) fs.chmodSync(addr.path!, socketMode);
  const port = typeof bound === 'string' ? 0 : bound.port;
  return {
    server,
    url: addr.kind === 'tcp' ? `tcp://${addr.target.slice(0, sep)}:${port}` : url,
    close: () =>
      // Streams (monitors, watches) never end by themselves: give calls a moment, then force.
      server.close(1000).finally(() => {
        if (addr.kind === 'unix' && fs.existsSync(addr.path!)) fs.rmSync(addr.path!, { force: true });
      }),
  };
}
