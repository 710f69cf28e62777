import path from 'node:path';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseSocketUrl, startServer, type RunningServer } from '../../src/api/grpc.js';
import { EmbeddedIssuer } from '../../src/identity/issuer.js';
import { StaticX509Source, type X509Source } from '../../src/identity/source.js';
import { channelCredentials, peerOf, serverCredentials, type ChannelCredentialsOptions, type ServerCredentialsOptions } from '../../src/identity/tls.js';
import { connectX509Source, type WorkloadX509Source } from '../../src/identity/workload-client.js';
import { createCa, type Ca } from '../../src/identity/x509.js';
import { leafSignedBy, ProbeClient, probeService, selfSignedLeaf, sourceFor, svidFrom, tempDir, waitFor, whoami } from './helpers.js';

const SERVER_ID = 'spiffe://a.td/ns/nsm-system/pod/nsmgr';
const CLIENT_ID = 'spiffe://a.td/ns/default/pod/nsc';
const B_CLIENT_ID = 'spiffe://b.td/ns/default/pod/nsc';

interface Probe {
  server: RunningServer;
  target: string;
  /** Open Ticks streams, written by the test. */
  ticks: Set<grpc.ServerWritableStream<unknown, unknown>>;
}

async function startProbe(url: string, source: X509Source, opts?: ServerCredentialsOptions): Promise<Probe> {
  const ticks = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  const server = await startServer(
    url,
    (s) =>
      s.addService(probeService, {
        Whoami: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
          const p = peerOf(call);
          const again = peerOf(call, source);
          cb(null, { spiffeId: p?.spiffeId, serial: p?.leaf.serialNumber, again: again?.spiffeId });
        },
        Ticks: (call: grpc.ServerWritableStream<unknown, unknown>) => {
          ticks.add(call);
          call.on('cancelled', () => ticks.delete(call));
        },
      }),
    serverCredentials(source, opts),
  );
  return { server, target: parseSocketUrl(server.url).target, ticks };
}

const clients: grpc.Client[] = [];
/** A client with a connection (and so a TLS handshake) of its own. */
function connect(target: string, source: X509Source, opts?: ChannelCredentialsOptions): grpc.Client {
  const c = new ProbeClient(target, channelCredentials(source, opts), { 'grpc.use_local_subchannel_pool': 1 });
  clients.push(c);
  return c;
}

async function refusal(p: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await p;
  } catch (e) {
    return e as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

/** The server certificate a fresh TLS handshake gets, read with Node's tls directly. */
function serverLeafSerial(target: string, client: X509Source): Promise<string> {
  const svid = client.svid();
  const where = target.startsWith('unix://') ? { path: target.slice('unix://'.length) } : { host: '127.0.0.1', port: Number(target.split(':')[1]) };
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      ...where,
      ca: [...client.bundles().values()].flat().map((c) => c.toString()),
      cert: svid.chainPem,
      key: svid.keyPem,
      ALPNProtocols: ['h2'],
      checkServerIdentity: () => undefined,
    });
    s.once('secureConnect', () => {
      const serial = s.getPeerCertificate().serialNumber;
      s.destroy();
      resolve(serial);
    });
    s.once('error', reject);
  });
}

describe('mTLS with X.509-SVIDs over grpc-js', () => {
  let tmp: ReturnType<typeof tempDir>;
  let caA: Ca;
  let caB: Ca;
  const probes: Probe[] = [];
  beforeEach(() => {
    tmp = tempDir();
    caA = createCa('a.td');
    caB = createCa('b.td');
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await Promise.all(probes.splice(0).map((p) => p.server.close()));
    tmp.cleanup();
  });
  const probe = async (url: string, source: X509Source, opts?: ServerCredentialsOptions) => {
    const p = await startProbe(url, source, opts);
    probes.push(p);
    return p;
  };
  const urls = () => ({ unix: `unix://${path.join(tmp.dir, 'probe.sock')}`, tcp: 'tcp://127.0.0.1:0' });

  describe.each(['unix', 'tcp'] as const)('over %s', (kind) => {
    it('connects two identities of one trust domain, each verified by SPIFFE ID', async () => {
      const p = await probe(urls()[kind], sourceFor(caA, SERVER_ID));
      const seen: string[] = [];
      const c = connect(p.target, sourceFor(caA, CLIENT_ID), { expectServer: (id) => (seen.push(id), id === SERVER_ID) });
      const res = (await whoami(c)) as { spiffeId?: string; again?: string };
      expect(res.spiffeId).toBe(CLIENT_ID);
      expect(res.again).toBe(CLIENT_ID);
      expect(seen).toEqual([SERVER_ID]);
    });

    it('refuses a client SVID from a trust domain that is not federated', async () => {
      const p = await probe(urls()[kind], sourceFor(caA, SERVER_ID));
      const c = connect(p.target, new StaticX509Source(svidFrom(caB, B_CLIENT_ID), new Map([['a.td', [caA.cert]], ['b.td', [caB.cert]]])));
      expect((await refusal(whoami(c))).code).toBe(grpc.status.UNAVAILABLE);
    });

    it('refuses a server SVID from a trust domain the client does not trust', async () => {
      const p = await probe(urls()[kind], new StaticX509Source(svidFrom(caB, 'spiffe://b.td/srv'), new Map([['a.td', [caA.cert]], ['b.td', [caB.cert]]])));
      const e = await refusal(whoami(connect(p.target, sourceFor(caA, CLIENT_ID))));
      expect(e.code).toBe(grpc.status.UNAVAILABLE);
    });

    it('refuses an expired client SVID and an expired server SVID', async () => {
      const longAgo = Date.now() - 7200_000;
      const p = await probe(urls()[kind], sourceFor(caA, SERVER_ID));
      const expired = new StaticX509Source(svidFrom(caA, CLIENT_ID, 60_000, longAgo), new Map([['a.td', [caA.cert]]]));
      expect((await refusal(whoami(connect(p.target, expired)))).code).toBe(grpc.status.UNAVAILABLE);
      const p2 = await probe(kind === 'unix' ? `unix://${path.join(tmp.dir, 'expired.sock')}` : 'tcp://127.0.0.1:0',
        new StaticX509Source(svidFrom(caA, SERVER_ID, 60_000, longAgo), new Map([['a.td', [caA.cert]]])));
      const e = await refusal(whoami(connect(p2.target, sourceFor(caA, CLIENT_ID))));
      expect(e.code).toBe(grpc.status.UNAVAILABLE);
      expect(e.details).toMatch(/expired/);
    });

    it('refuses a self-signed client certificate and a client without a certificate', async () => {
      const p = await probe(urls()[kind], sourceFor(caA, SERVER_ID));
      const self = new StaticX509Source(selfSignedLeaf(CLIENT_ID).svid, new Map([['a.td', [caA.cert]]]));
      expect((await refusal(whoami(connect(p.target, self)))).code).toBe(grpc.status.UNAVAILABLE);
      const anonymous = new ProbeClient(p.target, grpc.credentials.createSsl(Buffer.from(caA.cert.toString()), null, null, { checkServerIdentity: () => undefined }));
      clients.push(anonymous);
      expect((await refusal(whoami(anonymous))).code).toBe(grpc.status.UNAVAILABLE);
    });
  });

  it("refuses trust domain A's ID signed by B's CA although TLS accepts it (both bundles are roots)", async () => {
    const both = new Map([['a.td', [caA.cert]], ['b.td', [caB.cert]]]);
    const p = await probe(urls().tcp, new StaticX509Source(svidFrom(caA, SERVER_ID), both));
    const forged = new StaticX509Source(leafSignedBy(caB, 'spiffe://a.td/ns/nsm-system/pod/nsmgr').svid(), both);
    const e = await refusal(whoami(connect(p.target, forged)));
    expect(e.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(e.details).toBe('X.509-SVID refused: certificate of spiffe://a.td/ns/nsm-system/pod/nsmgr is signed by no CA of trust domain a.td');
    // and the other way round: a forged server is refused by the client
    const p2 = await probe(urls().unix, new StaticX509Source(leafSignedBy(caB, SERVER_ID).svid(), both));
    const e2 = await refusal(whoami(connect(p2.target, new StaticX509Source(svidFrom(caA, CLIENT_ID), both))));
    expect(e2.code).toBe(grpc.status.UNAVAILABLE);
    expect(e2.details).toMatch(/signed by no CA of trust domain a.td/);
  });

  it('authorises by SPIFFE ID on both sides', async () => {
    const p = await probe(urls().unix, sourceFor(caA, SERVER_ID), { authorize: (id) => id === 'spiffe://a.td/only-me' });
    const e = await refusal(whoami(connect(p.target, sourceFor(caA, CLIENT_ID))));
    expect(e.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(e.details).toBe(`${CLIENT_ID} is not authorised here`);
    const p2 = await probe(urls().tcp, sourceFor(caA, SERVER_ID));
    const e2 = await refusal(whoami(connect(p2.target, sourceFor(caA, CLIENT_ID), { expectServer: (id) => id === 'spiffe://a.td/other' })));
    expect(e2.code).toBe(grpc.status.UNAVAILABLE);
    expect(e2.details).toMatch(/server spiffe:\/\/a.td\/ns\/nsm-system\/pod\/nsmgr is not the server this client expects/);
  });

  it('accepts another trust domain once its bundle is federated (on new handshakes)', async () => {
    const serverSource = sourceFor(caA, SERVER_ID);
    const clientSource = sourceFor(caB, B_CLIENT_ID);
    const p = await probe(urls().tcp, serverSource);
    expect((await refusal(whoami(connect(p.target, clientSource)))).code).toBe(grpc.status.UNAVAILABLE);
    serverSource.setBundle('b.td', [caB.cert]);
    clientSource.setBundle('a.td', [caA.cert]);
    const res = await whoami(connect(p.target, clientSource));
    expect(res.spiffeId).toBe(B_CLIENT_ID);
  });

  it('rotation: new handshakes use the new SVIDs while an open stream keeps working on its connection', async () => {
    const serverSource = sourceFor(caA, SERVER_ID);
    const clientSource = sourceFor(caA, CLIENT_ID);
    const p = await probe(urls().unix, serverSource);
    const oldClientSerial = clientSource.svid().serial;
    const oldServerSerial = serverSource.svid().serial;

    const c1 = connect(p.target, clientSource);
    const stream = (c1 as unknown as { Ticks: (req: unknown) => grpc.ClientReadableStream<{ n: number }> }).Ticks({});
    const got: number[] = [];
    let streamError: Error | undefined;
    stream.on('data', (m: { n: number }) => got.push(m.n));
    stream.on('error', (e) => (streamError = e));
    await waitFor('the stream to reach the server', () => p.ticks.size === 1);
    const [serverStream] = [...p.ticks];
    serverStream!.write({ n: 1 });
    await waitFor('tick 1', () => got.includes(1));
    expect((await whoami(c1)).serial).toBe(oldClientSerial);
    expect(await serverLeafSerial(p.target, clientSource)).toBe(oldServerSerial);

    clientSource.set({ svid: svidFrom(caA, CLIENT_ID) });
    serverSource.set({ svid: svidFrom(caA, SERVER_ID) });
    expect(clientSource.svid().serial).not.toBe(oldClientSerial);

    // a new connection handshakes with the rotated certificates, in both directions
    const c2 = connect(p.target, clientSource);
    expect((await whoami(c2)).serial).toBe(clientSource.svid().serial);
    expect(await serverLeafSerial(p.target, clientSource)).toBe(serverSource.svid().serial);

    // the open stream was not disturbed and its connection was not replaced
    serverStream!.write({ n: 2 });
    await waitFor('tick 2 on the old stream', () => got.includes(2));
    expect(streamError).toBeUndefined();
    expect(p.ticks.size).toBe(1);
    expect((await whoami(c1)).serial).toBe(oldClientSerial);
    stream.cancel();
  });

  describe('with the embedded issuer and the Workload API client', () => {
    let issuer: EmbeddedIssuer | undefined;
    const sources: WorkloadX509Source[] = [];
    afterEach(async () => {
      for (const s of sources.splice(0)) s.close();
      await issuer?.close();
      issuer = undefined;
    });

    it('two workloads talk mTLS, and SVIDs rotated by the issuer reach new handshakes', async () => {
      issuer = await EmbeddedIssuer.start({ trustDomain: 'a.td', svidTtlMs: 5000, rotateAfterMs: 800 });
      const serverUrl = await issuer.addWorkload(SERVER_ID, path.join(tmp.dir, 'srv-agent.sock'));
      const clientUrl = await issuer.addWorkload(CLIENT_ID, path.join(tmp.dir, 'cli-agent.sock'));
      const serverSource = await connectX509Source(serverUrl, { timeoutMs: 5000 });
      const clientSource = await connectX509Source(clientUrl, { timeoutMs: 5000 });
      sources.push(serverSource, clientSource);
      const p = await probe(urls().unix, serverSource);
      const first = await whoami(connect(p.target, clientSource, { expectServer: (id) => id === SERVER_ID }));
      expect(first.spiffeId).toBe(CLIENT_ID);
      expect(first.serial).toBe(clientSource.svid().serial);
      await waitFor('a rotated client SVID', () => clientSource.svid().serial !== first.serial, 5000);
      const second = await whoami(connect(p.target, clientSource));
      expect(second.serial).toBe(clientSource.svid().serial);
      expect(second.serial).not.toBe(first.serial);
    });
  });
});
