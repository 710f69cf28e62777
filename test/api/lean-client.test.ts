/**
 * ApiClient.unary over the lean HTTP/2 client, against a real grpc-js server (another gRPC implementation,
 * as upstream's Go servers are): same results and the same error shapes as grpc-js's client, one session
 * per client, deadlines, reconnects, and SVID mutual TLS with SPIFFE verification.
 */
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiClient } from '../../src/api/grpc.js';
import { serviceDefinition } from '../../src/api/codec.js';
import type { Connection } from '../../src/api/types.js';
import { StaticX509Source, type Svid } from '../../src/identity/source.js';
import { sourceTransport } from '../../src/identity/transport.js';
import { createCa, type Ca } from '../../src/identity/x509.js';
import { leafSignedBy, sourceFor, svidFrom, tempDir } from '../identity/helpers.js';
import { waitFor } from '../helpers/wait.js';

const SVC = 'networkservice.NetworkService';
const SERVER_ID = 'spiffe://a.td/ns/nsm-system/pod/nsmd';
const CLIENT_ID = 'spiffe://a.td/ns/default/pod/nsc';

type Handler = (call: grpc.ServerUnaryCall<{ connection?: Connection; id?: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => void;

interface TestServer {
  url: string;
  server: grpc.Server;
  /** Calls the server saw cancelled. */
  cancelled: string[];
  /** Metadata of the last call. */
  lastMetadata?: grpc.Metadata;
  /** The deadline the server read from grpc-timeout, last call. */
  lastDeadline?: number;
  /** Serial of the client certificate of the last call (mTLS). */
  lastClientSerial?: string;
  stop(): Promise<void>;
}

function tlsCredentials(ca: Ca, svid: Svid): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(Buffer.from(ca.cert.toString()), [{ cert_chain: Buffer.from(svid.chainPem), private_key: Buffer.from(svid.keyPem) }], true);
}

async function serve(url: string, creds = grpc.ServerCredentials.createInsecure(), extra: Partial<Record<'Request' | 'Close', Handler>> = {}): Promise<TestServer> {
  const server = new grpc.Server();
  const t: TestServer = {
    url,
    server,
    cancelled: [],
    stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
  const seen: Handler = (call, cb) => {
    t.lastMetadata = call.metadata;
    t.lastDeadline = Number(call.getDeadline());
    t.lastClientSerial = call.getAuthContext().sslPeerCertificate?.serialNumber;
    call.on('cancelled', () => t.cancelled.push(call.request.connection?.id ?? call.request.id ?? ''));
    cb(null, call.request.connection ?? {});
  };
  server.addService(serviceDefinition(SVC), {
    Request: extra.Request ?? seen,
    Close: extra.Close ?? ((call: grpc.ServerUnaryCall<Connection, unknown>, cb: grpc.sendUnaryData<unknown>) => cb(null, {})),
  });
  const target = url.startsWith('tcp://') ? url.slice('tcp://'.length) : url;
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(target, creds, (e, p) => (e ? reject(e) : resolve(p))));
  if (url.startsWith('tcp://')) t.url = url.replace(/:0$/, `:${port}`);
  return t;
}

const conn = (id: string) => ({
  id,
  network_service: 'svc',
  mechanism: { cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'nsm-1', inodeURL: 'inode://4/4026532' } },
  context: { ip_context: { src_ip_addrs: ['169.254.0.1/32'], dst_ip_addrs: ['169.254.0.2/32'] } },
  labels: { app: 'x' },
  path: { index: 0, path_segments: [{ name: 'client', id, token: 't'.repeat(600) }] },
});

async function failure(p: Promise<unknown>): Promise<grpc.ServiceError> {
  const r = await p.then(
    () => undefined,
    (e: unknown) => e as grpc.ServiceError,
  );
  if (!r) throw new Error('expected the call to fail');
  return r;
}

let tmp: ReturnType<typeof tempDir>;
const servers: TestServer[] = [];
const clients: { close(): void }[] = [];
beforeEach(() => {
  tmp = tempDir();
});
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(servers.splice(0).map((s) => s.stop()));
  tmp.cleanup();
});
const sock = (name = 's') => `unix://${path.join(tmp.dir, `${name}.sock`)}`;
async function server(...a: Parameters<typeof serve>): Promise<TestServer> {
  const s = await serve(...a);
  servers.push(s);
  return s;
}
function client(url: string, creds?: ConstructorParameters<typeof ApiClient>[2]): ApiClient<typeof SVC> {
  const c = new ApiClient(SVC, url, creds);
  clients.push(c);
  return c;
}

describe('lean unary client, plaintext', () => {
  it('returns what grpc-js returns, over one session for all calls, with metadata as headers', async () => {
    const s = await server(sock());
    const c = client(s.url);
    const Ctor = grpc.makeGenericClientConstructor(serviceDefinition(SVC), SVC);
    const reference = new Ctor(s.url, grpc.credentials.createInsecure());
    clients.push(reference);
    const req = { connection: conn('a'), mechanism_preferences: [] };
    const expected = await new Promise((resolve, reject) =>
      (reference as unknown as Record<string, (...a: unknown[]) => void>).Request!(req, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e: unknown, r: unknown) => (e ? reject(e) : resolve(r))),
    );
    const md = new grpc.Metadata();
    md.set('nsm-client-token', 'abc.def');
    md.set('trace-bin', Buffer.from([0, 1, 2, 255]));
    expect(await c.unary('Request', req, { timeoutMs: 5000, metadata: md })).toEqual(expected);
    expect(s.lastMetadata!.get('nsm-client-token')).toEqual(['abc.def']);
    expect(s.lastMetadata!.get('trace-bin')).toEqual([Buffer.from([0, 1, 2, 255])]);
    // grpc-timeout carried the 5 s deadline (the server computes it from its own clock on arrival).
    expect(s.lastDeadline! - Date.now()).toBeGreaterThan(3000);
    expect(s.lastDeadline! - Date.now()).toBeLessThanOrEqual(5000);

    const many = await Promise.all(Array.from({ length: 50 }, (_, i) => c.unary('Request', { connection: conn(`m${i}`) }, { timeoutMs: 5000 })));
    expect(many.map((r) => r.id)).toEqual(Array.from({ length: 50 }, (_, i) => `m${i}`));
    expect(c.unarySessionsOpened()).toBe(1);
  });

  it('fails with the status, percent-decoded details and trailing metadata the server sent', async () => {
    const s = await server(sock(), undefined, {
      Close: (_call, cb) => {
        const md = new grpc.Metadata();
        md.set('why', 'because');
        cb({ code: grpc.status.FAILED_PRECONDITION, details: 'not 100% ready:\nü', metadata: md });
      },
    });
    const e = await failure(client(s.url).unary('Close', conn('x'), { timeoutMs: 5000 }));
    expect(e).toBeInstanceOf(Error);
    expect(e.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(e.details).toBe('not 100% ready:\nü');
    expect(e.message).toBe('9 FAILED_PRECONDITION: not 100% ready:\nü');
    expect(e.metadata).toBeInstanceOf(grpc.Metadata);
    expect(e.metadata.get('why')).toEqual(['because']);
    expect(e.metadata.get('grpc-status')).toEqual([]);
  });

  it('gives up at the deadline with DEADLINE_EXCEEDED and cancels the stream', async () => {
    const s = await server(sock(), undefined, {
      Request: (call) => {
        call.on('cancelled', () => s.cancelled.push(call.request.connection!.id));
      },
    });
    const c = client(s.url);
    const t0 = Date.now();
    const e = await failure(c.unary('Request', { connection: conn('slow') }, { timeoutMs: 300 }));
    expect(e.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(e.message).toMatch(/^4 DEADLINE_EXCEEDED: Deadline exceeded/);
    expect(Date.now() - t0).toBeLessThan(2000);
    await waitFor('the server to see the call cancelled', () => s.cancelled.includes('slow'), 3000);
  });

  it('reports an unreachable server as UNAVAILABLE naming the target', async () => {
    const missing = sock('missing');
    const e = await failure(client(missing).unary('Close', conn('x'), { timeoutMs: 2000 }));
    expect(e.code).toBe(grpc.status.UNAVAILABLE);
    expect(e.message).toContain(missing);
    expect(e.details).toMatch(/ENOENT/);
    const refused = await failure(client('tcp://127.0.0.1:1').unary('Close', conn('x'), { timeoutMs: 2000 }));
    expect(refused.code).toBe(grpc.status.UNAVAILABLE);
    expect(refused.details).toMatch(/tcp:\/\/127\.0\.0\.1:1.*ECONNREFUSED/);
  });

  it('opens a new session when the server went away, and waitForReady waits for it to come', async () => {
    const url = sock();
    let s = await serve(url);
    const c = client(url);
    await c.unary('Close', conn('1'), { timeoutMs: 2000 });
    await s.stop();
    expect((await failure(c.unary('Close', conn('2'), { timeoutMs: 2000 }))).code).toBe(grpc.status.UNAVAILABLE);
    const later = c.waitForReady(5000);
    s = await server(url);
    await later;
    await c.unary('Close', conn('3'), { timeoutMs: 2000 });
    expect(c.unarySessionsOpened()).toBe(2);
    await expect(client(sock('never')).waitForReady(200)).rejects.toThrow(/Failed to connect before the deadline/);
  });

  it('fails a call in flight with UNAVAILABLE when the connection drops, without an unhandled error', async () => {
    const s = await server(sock(), undefined, { Request: () => {} });
    const c = client(s.url);
    const pending = failure(c.unary('Request', { connection: conn('p') }, { timeoutMs: 5000 }));
    await waitFor('the call to reach the server', () => c.unarySessionsOpened() === 1, 2000);
    s.server.forceShutdown();
    const e = await pending;
    expect(e.code).toBe(grpc.status.UNAVAILABLE);
  });

  it('lets calls in flight finish on close(), and refuses later ones', async () => {
    const s = await server(sock(), undefined, {
      Request: (call, cb) => setTimeout(() => cb(null, call.request.connection), 200),
    });
    const c = client(s.url);
    const inFlight = c.unary('Request', { connection: conn('f') }, { timeoutMs: 5000 });
    await waitFor('the session', () => c.unarySessionsOpened() === 1, 2000);
    c.close();
    expect((await inFlight).id).toBe('f');
    const e = await failure(c.unary('Close', conn('x'), { timeoutMs: 1000 }));
    expect(e.code).toBe(grpc.status.UNAVAILABLE);
  });
});

describe('lean unary client, SVID mutual TLS', () => {
  let caA: Ca;
  let caB: Ca;
  beforeEach(() => {
    caA = createCa('a.td');
    caB = createCa('b.td');
  });

  it.each(['unix', 'tcp'] as const)('learns the server SPIFFE ID at the handshake and calls over %s', async (kind) => {
    const s = await server(kind === 'unix' ? sock() : 'tcp://127.0.0.1:0', tlsCredentials(caA, svidFrom(caA, SERVER_ID)));
    const source = sourceFor(caA, CLIENT_ID);
    const c = client(s.url, sourceTransport(source));
    expect(await c.peerId(5000)).toBe(SERVER_ID);
    expect((await c.unary('Request', { connection: conn('t') }, { timeoutMs: 5000 })).id).toBe('t');
    expect(s.lastClientSerial?.toLowerCase()).toBe(source.svid().serial.toLowerCase());
    expect(c.unarySessionsOpened()).toBe(1);
  });

  it('refuses a server whose SVID names a trust domain whose CA did not sign it, with the reason', async () => {
    // Both CAs are trusted, so OpenSSL accepts the chain: only the SPIFFE check can refuse it.
    const forged = leafSignedBy(caB, SERVER_ID).svid();
    const s = await server(sock(), tlsCredentials(caB, forged));
    const source = sourceFor(caA, CLIENT_ID, [caA, caB]);
    const e = await failure(client(s.url, sourceTransport(source)).unary('Close', conn('x'), { timeoutMs: 3000 }));
    expect(e.code).toBe(grpc.status.UNAVAILABLE);
    expect(e.details).toMatch(/signed by no CA of trust domain a.td/);
  });

  it('refuses a server from a trust domain it does not trust', async () => {
    const s = await server(sock(), tlsCredentials(caB, svidFrom(caB, 'spiffe://b.td/srv')));
    const e = await failure(client(s.url, sourceTransport(sourceFor(caA, CLIENT_ID))).unary('Close', conn('x'), { timeoutMs: 3000 }));
    expect(e.code).toBe(grpc.status.UNAVAILABLE);
  });

  it('keeps its session across a rotation and presents the new SVID at the next handshake', async () => {
    const url = sock();
    let s = await serve(url, tlsCredentials(caA, svidFrom(caA, SERVER_ID)));
    const source = sourceFor(caA, CLIENT_ID) as StaticX509Source;
    const c = client(url, sourceTransport(source));
    await c.unary('Request', { connection: conn('1') }, { timeoutMs: 5000 });
    const first = source.svid().serial;
    source.set({ svid: svidFrom(caA, CLIENT_ID) });
    await c.unary('Request', { connection: conn('2') }, { timeoutMs: 5000 });
    expect(c.unarySessionsOpened()).toBe(1);
    expect(s.lastClientSerial?.toLowerCase()).toBe(first.toLowerCase());
    await s.stop();
    s = await server(url, tlsCredentials(caA, svidFrom(caA, SERVER_ID)));
    await c.waitForReady(5000);
    await c.unary('Request', { connection: conn('3') }, { timeoutMs: 5000 });
    expect(c.unarySessionsOpened()).toBe(2);
    expect(s.lastClientSerial?.toLowerCase()).toBe(source.svid().serial.toLowerCase());
    expect(source.svid().serial).not.toBe(first);
  });
});
