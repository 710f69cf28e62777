/**
 * A SPIFFE Workload API client that keeps an X.509-SVID current, as go-spiffe's workloadapi.X509Source
 * does for upstream NSM: it follows FetchX509SVID (new SVIDs arrive on the open stream at rotation) and
 * FetchX509Bundles (federated bundles), and reconnects with backoff when the agent goes away, keeping
 * the last good SVID meanwhile.
 */
import { EventEmitter } from 'node:events';
import type { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { ApiClient } from '../api/grpc.js';
import type { X509BundlesResponse, X509SVIDResponse } from '../api/types.js';
import { silentLogger, type Logger } from '../util/log.js';
import { parseCertificates, splitDer } from './der.js';
import { Svid, type X509Source } from './source.js';
import { parseTrustDomain, trustDomainOf } from './spiffe-id.js';
import { verifySvid, type Bundles } from './x509.js';

/** Where SPIRE agents listen in upstream NSM deployments. */
export const DEFAULT_WORKLOAD_API_SOCKET = 'unix:///run/spire/sockets/agent.sock';

export interface X509SourceOptions {
  /** How long connectX509Source waits for the first SVID; default 10 s. */
  timeoutMs?: number;
  log?: Logger;
  /** Reconnection delays after the stream breaks: doubling from initialMs up to maxMs. Default 100 ms .. 5 s. */
  backoff?: { initialMs: number; maxMs: number };
}

type Stream<T> = grpc.ClientReadableStream<T>;

/** Follows one server stream: restarts it with backoff whenever it ends, until stopped. */
class StreamFollower<T> {
  private stream?: Stream<T>;
  private timer?: NodeJS.Timeout;
  private failures = 0;
  private stopped = false;
  lastError = '';

  constructor(
    private readonly open: () => Stream<T>,
    private readonly onMessage: (msg: T) => void,
    private readonly onEnd: (err: grpc.ServiceError | undefined) => 'retry' | 'stop',
    private readonly backoff: { initialMs: number; maxMs: number },
  ) {}

  start(): void {
    if (this.stopped) return;
    const stream = this.open();
    this.stream = stream;
    let ended = false;
    const end = (err: grpc.ServiceError | undefined) => {
      if (ended || this.stopped) return;
      ended = true;
      if (err) this.lastError = err.details || err.message;
      else this.lastError = 'the server ended the stream';
      if (this.onEnd(err) === 'stop') return;
      const exp = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.min(this.failures, 20));
      // Jitter spreads the reconnections of many workloads after one agent restart.
      const delay = Math.round(exp * (0.8 + Math.random() * 0.4));
      this.failures++;
      this.timer = setTimeout(() => this.start(), delay);
    };
    stream.on('data', (msg: T) => {
      this.failures = 0;
      this.onMessage(msg);
    });
    stream.on('error', (err: grpc.ServiceError) => end(err));
    stream.on('end', () => end(undefined));
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.stream?.cancel();
  }
}

export class WorkloadX509Source extends EventEmitter implements X509Source {
  private current?: Svid;
  /** Bundles as the FetchX509SVID stream tells them (own trust domain + federated_bundles). */
  private svidBundles = new Map<string, X509Certificate[]>();
  /** Bundles as FetchX509Bundles tells them; undefined until it has (older agents do not implement it). */
  private streamBundles?: Map<string, X509Certificate[]>;
  private merged: Map<string, X509Certificate[]> = new Map();
  private readonly client: ApiClient<'SpiffeWorkloadAPI'>;
  private readonly svidFollower: StreamFollower<X509SVIDResponse>;
  private readonly bundleFollower: StreamFollower<X509BundlesResponse>;
  private readonly log: Logger;
  private closed = false;
  /** Why the last SVID update was refused, for the first-SVID timeout message. */
  private lastRejection = '';
  /** What the last 'update' announced, so that a repeated message announces nothing. */
  private signature = '';

  /** Use connectX509Source(), which resolves once the first SVID is here. */
  constructor(
    readonly url: string,
    opts: X509SourceOptions = {},
  ) {
    super();
    // Every TLS credentials object and connection built on a source listens to it: many listeners are normal.
    this.setMaxListeners(0);
    this.log = (opts.log ?? silentLogger).child({ component: 'workload-api-client', socket: url });
    const backoff = opts.backoff ?? { initialMs: 100, maxMs: 5000 };
    this.client = new ApiClient('SpiffeWorkloadAPI', url, grpc.credentials.createInsecure(), {
      // A private subchannel, so that the reconnect backoff of this agent connection is its own,
      // and short enough that an agent restart is noticed within our own backoff.
      'grpc.use_local_subchannel_pool': 1,
      'grpc.initial_reconnect_backoff_ms': backoff.initialMs,
      'grpc.max_reconnect_backoff_ms': backoff.maxMs,
    });
    const metadata = () => {
      const md = new grpc.Metadata();
      md.set('workload.spiffe.io', 'true');
      return md;
    };
    this.svidFollower = new StreamFollower(
      () => this.client.stream('FetchX509SVID', {}, { metadata: metadata() }),
      (msg) => this.onSvidResponse(msg),
      (err) => {
        this.log.warn({ err: err?.details ?? 'stream ended', haveSvid: !!this.current }, 'Workload API X.509-SVID stream broke; reconnecting');
        return 'retry';
      },
      backoff,
    );
    this.bundleFollower = new StreamFollower(
      () => this.client.stream('FetchX509Bundles', {}, { metadata: metadata() }),
      (msg) => this.onBundlesResponse(msg),
      (err) => {
        if (err?.code === grpc.status.UNIMPLEMENTED) {
          this.log.debug('agent does not implement FetchX509Bundles; using the bundles sent with the SVID');
          return 'stop';
        }
        return 'retry';
      },
      backoff,
    );
  }

  /** Opens the streams; resolves with the first SVID or rejects after timeoutMs (and closes). */
  async start(timeoutMs: number): Promise<this> {
    this.svidFollower.start();
    this.bundleFollower.start();
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.off('update', onUpdate);
          const why = this.lastRejection || this.svidFollower.lastError || 'no answer';
          reject(new Error(`no X.509-SVID from the SPIFFE Workload API at ${this.url} within ${timeoutMs} ms: ${why}`));
        }, timeoutMs);
        const onUpdate = () => {
          if (!this.current) return;
          clearTimeout(timer);
          this.off('update', onUpdate);
          resolve();
        };
        this.on('update', onUpdate);
      });
    } catch (e) {
      this.close();
      throw e;
    }
    return this;
  }

  svid(): Svid {
    if (!this.current) throw new Error(`no X.509-SVID received yet from ${this.url}`);
    return this.current;
  }

  bundles(): Bundles {
    return this.merged;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.svidFollower.stop();
    this.bundleFollower.stop();
    this.client.close();
  }

  private onSvidResponse(msg: X509SVIDResponse): void {
    try {
      const first = msg.svids[0];
      if (!first) throw new Error('the response carries no SVID');
      // The first SVID is the default identity (Workload API spec); a workload with several would pick by hint.
      const svid = Svid.fromDer(first.spiffe_id, splitDer(first.x509_svid), Buffer.from(first.x509_svid_key));
      const td = trustDomainOf(first.spiffe_id);
      const bundles = new Map<string, X509Certificate[]>([[td, parseCertificates(first.bundle)]]);
      for (const [tdId, der] of Object.entries(msg.federated_bundles)) {
        const ftd = parseTrustDomain(tdId);
        if (ftd !== td) bundles.set(ftd, parseCertificates(der));
      }
      // An SVID that its own bundle does not vouch for would only fail later, in every handshake.
      verifySvid(svid.chain, bundles);
      const rotated = !this.current || !this.current.leaf.raw.equals(svid.leaf.raw);
      this.current = svid;
      this.svidBundles = bundles;
      this.lastRejection = '';
      if (rotated) this.log.info({ spiffeId: svid.spiffeId, serial: svid.serial, notAfter: new Date(svid.notAfter).toISOString() }, 'X.509-SVID received');
      this.remerge();
    } catch (e) {
      this.lastRejection = `an update was refused: ${(e as Error).message}`;
      this.log.warn({ err: (e as Error).message, keeping: this.current?.serial }, 'refused an X.509-SVID update from the Workload API');
    }
  }

  private onBundlesResponse(msg: X509BundlesResponse): void {
    try {
      const bundles = new Map<string, X509Certificate[]>();
      for (const [tdId, der] of Object.entries(msg.bundles)) bundles.set(parseTrustDomain(tdId), parseCertificates(der));
      this.streamBundles = bundles;
      this.remerge();
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'refused an X.509 bundles update from the Workload API');
    }
  }

  /**
   * FetchX509Bundles is the complete set when the agent serves it; the SVID stream's own-trust-domain
   * bundle fills in until then (or if it lacks our own trust domain).
   */
  private remerge(): void {
    const next = new Map(this.streamBundles ?? this.svidBundles);
    const own = this.current ? trustDomainOf(this.current.spiffeId) : undefined;
    if (own && !next.has(own) && this.svidBundles.has(own)) next.set(own, this.svidBundles.get(own)!);
    const signature = [
      this.current?.leaf.fingerprint256 ?? '',
      ...[...next].sort(([a], [b]) => a.localeCompare(b)).map(([td, certs]) => `${td}=${certs.map((c) => c.fingerprint256).join(',')}`),
    ].join(' ');
    if (signature === this.signature) return;
    this.signature = signature;
    this.merged = next;
    if (this.current) this.emit('update');
  }
}

/**
 * Connects to the Workload API (default: $SPIFFE_ENDPOINT_SOCKET, else SPIRE's usual agent socket) and
 * resolves once the first X.509-SVID has arrived.
 */
export async function connectX509Source(
  socketUrl: string = process.env.SPIFFE_ENDPOINT_SOCKET || DEFAULT_WORKLOAD_API_SOCKET,
  opts: X509SourceOptions = {},
): Promise<WorkloadX509Source> {
  return new WorkloadX509Source(socketUrl, opts).start(opts.timeoutMs ?? 10_000);
}
