/**
 * The webhook's HTTPS endpoint: POST /mutate answers AdmissionReviews, GET /healthz says it is up. The API server
 * only calls webhooks over TLS; the certificate pair is read from files (a Secret volume) and re-read periodically,
 * so a renewed certificate (cert-manager, a rotation job) is served without a restart.
 */
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import tls from 'node:tls';
import { parseSocketUrl } from '../../api/grpc.js';
import type { Logger } from '../../util/log.js';
import { BadReview, type AdmissionReviewOut } from './review.js';

/** etcd refuses objects over 1.5 MiB, so no real review comes near this. */
const MAX_BODY_BYTES = 4 << 20;

export interface WebhookServerOptions {
  /** tcp://host:port; port 0 picks a free one. */
  listenOn: string;
  certFile: string;
  keyFile: string;
  /** 0: read the pair once. */
  reloadIntervalMs: number;
  mutator: { review(body: unknown): Promise<AdmissionReviewOut> };
  log: Logger;
}

export interface RunningWebhook {
  /** https://host:port, with the port actually bound. */
  url: string;
  /** Reads the certificate files now; true when a new pair was taken into use. */
  reloadCertificate(): boolean;
  close(): Promise<void>;
}

interface KeyPair {
  cert: Buffer;
  key: Buffer;
  context: tls.SecureContextOptions;
}

class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

function readPair(certFile: string, keyFile: string): Pick<KeyPair, 'cert' | 'key'> {
  try {
    return { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) };
  } catch (e) {
    throw new Error(`cannot read the TLS certificate and key: ${(e as Error).message}`);
  }
}

/** Checks the two belong together: a half-renewed pair (new certificate, old key) is refused. */
function usablePair({ cert, key }: Pick<KeyPair, 'cert' | 'key'>, certFile: string, keyFile: string): KeyPair {
  const context: tls.SecureContextOptions = { cert, key, minVersion: 'TLSv1.2' };
  try {
    tls.createSecureContext(context);
  } catch (e) {
    throw new Error(`${certFile} and ${keyFile} are not a usable certificate and key: ${(e as Error).message}`);
  }
  return { cert, key, context };
}

function describeCert(pem: Buffer): { subject: string; notAfter: string; fingerprint256: string } {
  const c = new X509Certificate(pem);
  return { subject: c.subjectAltName ?? c.subject, notAfter: c.validTo, fingerprint256: c.fingerprint256 };
}

/**
 * The body, or HttpError 413 once it is all read: an oversized body is drained and dropped rather than cut off, so
 * the caller gets the 413 instead of a reset connection (requestTimeout bounds how long draining may take).
 */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) chunks.push(c);
    });
    req.on('end', () => (size > MAX_BODY_BYTES ? reject(new HttpError(413, `request body of ${size} bytes; at most ${MAX_BODY_BYTES} are accepted`)) : resolve(Buffer.concat(chunks))));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, statusCode: number, body: string, contentType = 'text/plain; charset=utf-8'): void {
  res.writeHead(statusCode, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export async function startWebhookServer(o: WebhookServerOptions): Promise<RunningWebhook> {
  const addr = parseSocketUrl(o.listenOn);
  if (addr.kind !== 'tcp') throw new Error(`listen address "${o.listenOn}" must be tcp://host:port: the API server calls webhooks over HTTPS`);
  const sep = addr.target.lastIndexOf(':');
  const host = addr.target.slice(0, sep).replace(/^\[|\]$/g, '');
  const port = Number(addr.target.slice(sep + 1));

  let current = usablePair(readPair(o.certFile, o.keyFile), o.certFile, o.keyFile);
  o.log.info({ certFile: o.certFile, ...describeCert(current.cert) }, 'serving certificate');

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? '/', 'https://webhook').pathname;
    if (path === '/healthz') {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'use GET /healthz');
      return send(res, 200, 'ok\n');
    }
    // The API server appends ?timeout=10s to the configured path; only the path matters.
    if (path !== '/mutate') throw new HttpError(404, `no ${path} here: the webhook serves POST /mutate and GET /healthz`);
    if (req.method !== 'POST') throw new HttpError(405, 'use POST /mutate with an AdmissionReview');
    const raw = await readBody(req);
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch (e) {
      throw new HttpError(400, `the body is not JSON: ${(e as Error).message}`);
    }
    const out = await o.mutator.review(body);
    send(res, 200, JSON.stringify(out), 'application/json');
  };

  const server = https.createServer(current.context, (req, res) => {
    handle(req, res).catch((e: unknown) => {
      const statusCode = e instanceof HttpError ? e.statusCode : e instanceof BadReview ? 400 : 500;
      const message = (e as Error).message;
      // A 500 leaves the decision to the webhook's failurePolicy, which is the operator's call, not ours.
      if (statusCode >= 500) o.log.error({ url: req.url, err: message }, 'review failed');
      else o.log.warn({ url: req.url, method: req.method, statusCode, err: message }, 'bad request');
      if (!res.headersSent) send(res, statusCode, `${message}\n`);
      else res.destroy();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;

  const reloadCertificate = (): boolean => {
    let next: KeyPair;
    try {
      const files = readPair(o.certFile, o.keyFile);
      if (files.cert.equals(current.cert) && files.key.equals(current.key)) return false;
      next = usablePair(files, o.certFile, o.keyFile);
    } catch (e) {
      o.log.warn({ err: (e as Error).message }, 'certificate files unusable; still serving the previous pair');
      return false;
    }
    server.setSecureContext(next.context);
    current = next;
    o.log.info({ certFile: o.certFile, ...describeCert(next.cert) }, 'serving renewed certificate');
    return true;
  };
  const timer = o.reloadIntervalMs > 0 ? setInterval(reloadCertificate, o.reloadIntervalMs) : undefined;
  timer?.unref();

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as { port: number }).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  o.log.info({ url: `https://${urlHost}:${bound}` }, 'nsm-webhook listening');
  return {
    url: `https://${urlHost}:${bound}`,
    reloadCertificate,
    close: () =>
      new Promise<void>((resolve) => {
        if (timer) clearInterval(timer);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
