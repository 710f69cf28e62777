/**
 * The Workload API client against a Workload API server written here, from the spec: a plain grpc-js server
 * with the SpiffeWorkloadAPI service definition and certificates made in the test (not the embedded issuer).
 */
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { serviceDefinition } from '../../src/api/codec.js';
import { concatDer } from '../../src/identity/der.js';
import { connectX509Source, type WorkloadX509Source } from '../../src/identity/workload-client.js';
import { createCa, issueSvid, type Ca, type IssuedSvid } from '../../src/identity/x509.js';
import { captureLog, tempDir, waitFor } from './helpers.js';

const ID = 'spiffe://test.td/ns/default/pod/client';

/** A minimal Workload API: one identity, pushes on demand, checks the security header. */
class FakeAgent {
  server = new grpc.Server();
  svidCalls = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  bundleCalls = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  federated: Record<string, Buffer> = {};
  headerless = 0;
  bundlesUnimplemented = false;

  constructor(
    readonly ca: Ca,
    public svid: IssuedSvid,
  ) {
    this.server.addService(serviceDefinition('SpiffeWorkloadAPI'), {
      FetchX509SVID: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        if (call.metadata.get('workload.spiffe.io')[0] !== 'true') {
          this.headerless++;
          call.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'security header missing from request' });
          return;
        }
        this.svidCalls.add(call);
        call.on('cancelled', () => this.svidCalls.delete(call));
        call.write(this.svidResponse());
      },
      FetchX509Bundles: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        if (this.bundlesUnimplemented) {
          call.emit('error', { code: grpc.status.UNIMPLEMENTED, details: 'no' });
          return;
        }
        this.bundleCalls.add(call);
        call.on('cancelled', () => this.bundleCalls.delete(call));
        call.write(this.bundlesResponse());
      },
      FetchJWTSVID: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED }),
      FetchJWTBundles: (c: grpc.ServerWritableStream<unknown, unknown>) => c.emit('error', { code: grpc.status.UNIMPLEMENTED }),
      ValidateJWTSVID: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED }),
    });
  }

  svidResponse() {
    return {
      svids: [{ spiffe_id: ID, x509_svid: concatDer(this.svid.chainDer), x509_svid_key: this.svid.keyPkcs8Der, bundle: this.ca.certDer }],
      federated_bundles: this.federated,
    };
  }

  bundlesResponse() {
    return { bundles: { 'spiffe://test.td': this.ca.certDer, ...this.federated } };
  }

  listen(socket: string): Promise<void> {
    return new Promise((resolve, reject) =>
      this.server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
  }

  push(): void {
    for (const c of this.svidCalls) c.write(this.svidResponse());
    for (const c of this.bundleCalls) c.write(this.bundlesResponse());
  }

  /** Like an agent crash: connections drop without a goodbye. */
  kill(): void {
    this.server.forceShutdown();
  }
}

describe('Workload API client (X509Source)', () => {
  let tmp: ReturnType<typeof tempDir>;
  let socket: string;
  let ca: Ca;
  const agents: FakeAgent[] = [];
  let source: WorkloadX509Source | undefined;

  beforeEach(() => {
    tmp = tempDir();
    socket = path.join(tmp.dir, 'agent.sock');
    ca = createCa('test.td');
  });
  afterEach(() => {
    source?.close();
    source = undefined;
    for (const a of agents.splice(0)) a.kill();
    tmp.cleanup();
  });

  async function agent(svid = issueSvid(ca, ID, 3600_000)): Promise<FakeAgent> {
    const a = new FakeAgent(ca, svid);
    agents.push(a);
    await a.listen(socket);
    return a;
  }

  it('resolves with the first SVID, the key as a KeyObject, and the bundle', async () => {
    const a = await agent();
    source = await connectX509Source(`unix://${socket}`, { timeoutMs: 5000 });
    const svid = source.svid();
    expect(svid.spiffeId).toBe(ID);
    expect(svid.leaf.raw.equals(a.svid.certDer)).toBe(true);
    expect(svid.privateKey.type).toBe('private');
    expect(svid.leaf.checkPrivateKey(svid.privateKey)).toBe(true);
    expect(svid.chainPem).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(svid.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(svid.notAfter).toBe(a.svid.notAfter);
    expect([...source.bundles().keys()]).toEqual(['test.td']);
    // the key must not come out through logging or JSON
    expect(JSON.stringify(svid)).not.toMatch(/PRIVATE KEY/);
    expect(Object.keys(svid)).not.toContain('keyPem');
    expect(a.headerless).toBe(0);
  });

  it('reads SPIFFE_ENDPOINT_SOCKET when no URL is given', async () => {
    await agent();
    const saved = process.env.SPIFFE_ENDPOINT_SOCKET;
    process.env.SPIFFE_ENDPOINT_SOCKET = `unix://${socket}`;
    try {
      source = await connectX509Source(undefined, { timeoutMs: 5000 });
      expect(source.url).toBe(`unix://${socket}`);
    } finally {
      if (saved === undefined) delete process.env.SPIFFE_ENDPOINT_SOCKET;
      else process.env.SPIFFE_ENDPOINT_SOCKET = saved;
    }
  });

  it('applies an SVID rotated on the open stream and emits update', async () => {
    const a = await agent();
    source = await connectX509Source(`unix://${socket}`, { timeoutMs: 5000 });
    const first = source.svid().serial;
    let updates = 0;
    source.on('update', () => updates++);
    a.svid = issueSvid(ca, ID, 3600_000);
    a.push();
    await waitFor('the rotated SVID', () => source!.svid().serial !== first);
    expect(source.svid().leaf.raw.equals(a.svid.certDer)).toBe(true);
    expect(updates).toBe(1);
    // the same stream carried it: no second call was made
    expect(a.svidCalls.size).toBe(1);
  });

  it('follows federated bundles from FetchX509Bundles, and from the SVID stream when that is unimplemented', async () => {
    const a = await agent();
    source = await connectX509Source(`unix://${socket}`, { timeoutMs: 5000 });
    const other = createCa('other.td');
    a.federated = { 'spiffe://other.td': other.certDer };
    a.push();
    await waitFor('the federated bundle', () => source!.bundles().get('other.td'));
    expect(source.bundles().get('other.td')![0]!.raw.equals(other.certDer)).toBe(true);
    expect(source.bundles().get('test.td')![0]!.raw.equals(ca.certDer)).toBe(true);
    a.federated = {};
    a.push();
    await waitFor('the federated bundle to go', () => !source!.bundles().has('other.td'));
    source.close();

    a.bundlesUnimplemented = true;
    a.federated = { 'spiffe://other.td': other.certDer };
    source = await connectX509Source(`unix://${socket}`, { timeoutMs: 5000 });
    await waitFor('the federated bundle from the SVID stream', () => source!.bundles().get('other.td'));
  });

  it('keeps the last good SVID while the agent is down and reconnects when it is back', async () => {
    const a = await agent();
    const cap = captureLog();
    source = await connectX509Source(`unix://${socket}`, { timeoutMs: 5000, backoff: { initialMs: 50, maxMs: 200 }, log: cap.log });
    const before = source.svid();
    a.kill();
    fs.rmSync(socket, { force: true });
    const broke = () => cap.records().filter((r) => /stream broke; reconnecting/.test(String(r.msg))).length;
    // a few failed reconnections while nothing listens
    await waitFor('the client to retry against the missing agent', () => broke() >= 3);
    expect(source.svid()).toBe(before);
    const b = await agent(issueSvid(ca, ID, 3600_000));
    await waitFor('the SVID from the restarted agent', () => source!.svid().leaf.raw.equals(b.svid.certDer), 10_000);
    expect(b.svidCalls.size).toBe(1);
    expect(cap.text()).not.toMatch(/PRIVATE KEY|x509_svid_key/);
  });

  it('refuses an update whose SVID its bundle does not vouch for, keeping the last good one', async () => {
    const a = await agent();
    const cap = captureLog();
    source = await connectX509Source(`unix://${socket}`, { timeoutMs: 5000, log: cap.log });
    const good = source.svid();
    const rogue = createCa('test.td');
    a.svid = issueSvid(rogue, ID, 3600_000);
    a.push();
    // a good update after the rogue one proves the rogue one was processed (and refused) first
    const next = issueSvid(ca, ID, 3600_000);
    a.svid = next;
    a.push();
    await waitFor('the next good SVID', () => source!.svid().leaf.raw.equals(next.certDer));
    expect(source.svid()).not.toBe(good);
    const refused = cap.records().find((r) => r.msg === 'refused an X.509-SVID update from the Workload API');
    expect(refused?.err).toBe(`X.509-SVID refused: certificate of ${ID} is signed by no CA of trust domain test.td`);
  });

  it('fails after timeoutMs with the reason when no SVID comes', async () => {
    await expect(connectX509Source(`unix://${path.join(tmp.dir, 'nobody.sock')}`, { timeoutMs: 500 })).rejects.toThrow(
      /no X.509-SVID from the SPIFFE Workload API at unix:\/\/.*nobody.sock within 500 ms: .+/,
    );
  });
});
