/**
 * SPIFFE federation bundle endpoints, `https_web` profile: a trust domain publishes its bundle (a JWK Set)
 * over HTTPS with a web-PKI certificate, and federated peers fetch it again at the publisher's refresh hint
 * so that CA rotations reach them. The client trusts Node's CA store (NODE_EXTRA_CA_CERTS adds a private CA)
 * unless given its own CAs.
 */
import { EventEmitter } from 'node:events';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { X509Certificate } from 'node:crypto';
import { silentLogger, type Logger } from '../util/log.js';
import { decodeSpiffeBundle, encodeSpiffeBundle, type SpiffeBundle } from './bundle-format.js';

/** A bundle larger than this is not a bundle: a trust domain has a handful of CAs. */
const MAX_BUNDLE_BYTES = 1 << 20;
export const DEFAULT_REFRESH_HINT_S = 300;

export interface FetchBundleOptions {
  /** PEM CA certificates for the endpoint's web certificate; default: Node's store (with NODE_EXTRA_CA_CERTS). */
  ca?: string | Buffer;
  timeoutMs?: number;
}

/** Fetches and decodes one trust domain's bundle; rejects with a message naming the URL and the reason. */
export function fetchSpiffeBundle(url: string, trustDomain: string, opts: FetchBundleOptions = {}): Promise<SpiffeBundle> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return reject(new Error(`bundle endpoint "${url}" is not a URL`));
    }
    // An unauthenticated bundle would let anyone on the path choose whom this trust domain trusts.
    if (u.protocol !== 'https:') return reject(new Error(`bundle endpoint ${url} must be https://`));
    const fail = (why: string) => reject(new Error(`bundle endpoint ${url}: ${why}`));
    const req = https.get(u, { ...(opts.ca ? { ca: opts.ca } : {}), timeout: timeoutMs, headers: { accept: 'application/json' } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return fail(`HTTP ${res.statusCode}`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BUNDLE_BYTES) {
          req.destroy();
          fail(`answer larger than ${MAX_BUNDLE_BYTES} bytes`);
        } else chunks.push(c);
      });
      res.on('end', () => {
        if (size > MAX_BUNDLE_BYTES) return;
        try {
          resolve(decodeSpiffeBundle(Buffer.concat(chunks).toString('utf8'), trustDomain));
        } catch (e) {
          fail((e as Error).message);
        }
      });
      res.on('error', (e) => fail(e.message));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (e) => fail((e as NodeJS.ErrnoException).code ? `${(e as NodeJS.ErrnoException).code} ${e.message}` : e.message));
  });
}

export interface BundleFollowerOptions extends FetchBundleOptions {
  log?: Logger;
  /** Bounds on the time between fetches, whatever the publisher's hint says. Default 1 s .. 1 h. */
  minRefreshMs?: number;
  maxRefreshMs?: number;
}

/**
 * Keeps one federated trust domain's bundle current: fetches at once, then again at the publisher's refresh
 * hint; a failed fetch keeps the last good bundle and is retried sooner (doubling from the minimum), so an
 * endpoint that is down for a while costs no trust that was already established. Emits 'update' on change.
 */
export class BundleEndpointFollower extends EventEmitter {
  private current?: X509Certificate[];
  private timer?: NodeJS.Timeout;
  private failures = 0;
  private closed = false;
  private fingerprint = '';
  lastError = '';
  private readonly log: Logger;
  private readonly minMs: number;
  private readonly maxMs: number;

  constructor(
    readonly trustDomain: string,
    readonly url: string,
    private readonly opts: BundleFollowerOptions = {},
  ) {
    super();
    this.log = (opts.log ?? silentLogger).child({ component: 'bundle-endpoint-client', trustDomain, url });
    this.minMs = opts.minRefreshMs ?? 1000;
    this.maxMs = opts.maxRefreshMs ?? 3600_000;
  }

  /** Starts following; resolves after the first attempt (true when it brought a bundle). */
  async start(): Promise<boolean> {
    await this.fetchOnce();
    return this.current !== undefined;
  }

  certs(): X509Certificate[] | undefined {
    return this.current;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }

  private async fetchOnce(): Promise<void> {
    if (this.closed) return;
    let nextMs: number;
    try {
      const b = await fetchSpiffeBundle(this.url, this.trustDomain, this.opts);
      this.failures = 0;
      this.lastError = '';
      const fp = b.x509Authorities.map((c) => c.fingerprint256).sort().join(',');
      if (fp !== this.fingerprint) {
        this.fingerprint = fp;
        this.current = b.x509Authorities;
        this.log.info({ authorities: b.x509Authorities.length, sequence: b.sequence }, 'federated bundle fetched');
        this.emit('update');
      }
      nextMs = (b.refreshHintS ?? DEFAULT_REFRESH_HINT_S) * 1000;
    } catch (e) {
      this.lastError = (e as Error).message;
      this.log.warn({ err: this.lastError, keeping: this.current !== undefined }, 'could not fetch a federated bundle; will retry');
      nextMs = this.minMs * 2 ** Math.min(this.failures++, 12);
    }
    if (this.closed) return;
    this.timer = setTimeout(() => void this.fetchOnce(), Math.min(this.maxMs, Math.max(this.minMs, nextMs)));
    // Following a bundle must not by itself keep a process alive.
    this.timer.unref();
  }
}

export interface BundleEndpointServerOptions {
  /** host:port to listen on (port 0 picks one). */
  listen: string;
  /** The endpoint's web-PKI certificate chain and key (PEM). */
  certPem: string | Buffer;
  keyPem: string | Buffer;
  /** The trust domain's current X.509 authorities, read on every request so that a rotation shows at once. */
  bundle: () => readonly X509Certificate[];
  refreshHintS?: number;
  log?: Logger;
}

export interface RunningBundleEndpoint {
  /** https://host:port/ as peers should fetch it. */
  url: string;
  close(): Promise<void>;
}

/** Serves the trust domain's bundle at every path, as a SPIFFE bundle document. */
export async function startBundleEndpoint(o: BundleEndpointServerOptions): Promise<RunningBundleEndpoint> {
  const m = /^(?:tcp:\/\/)?(\[[^\]]+\]|[^:]+):(\d+)$/.exec(o.listen);
  if (!m) throw new Error(`bundle endpoint listen address "${o.listen}": expected host:port`);
  const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
  const log = (o.log ?? silentLogger).child({ component: 'bundle-endpoint' });
  let sequence = 0;
  let lastFingerprint = '';
  const server = https.createServer({ cert: o.certPem, key: o.keyPem }, (req, res) => {
    if (req.method !== 'GET') {
      res.writeHead(405, { allow: 'GET' }).end();
      return;
    }
    const certs = o.bundle();
    const fp = certs.map((c) => c.fingerprint256).sort().join(',');
    if (fp !== lastFingerprint) {
      lastFingerprint = fp;
      sequence++;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(encodeSpiffeBundle(certs, { refreshHintS: o.refreshHintS ?? DEFAULT_REFRESH_HINT_S, sequence }));
  });
  server.on('tlsClientError', (e) => log.debug({ err: e.message }, 'TLS handshake with a bundle endpoint client failed'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(m[2]), host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `https://${host.includes(':') ? `[${host}]` : host}:${port}/`;
  log.info({ url }, 'serving the trust bundle');
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
