import fs from 'node:fs';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiClient } from '../../src/api/grpc.js';
import type { X509BundlesResponse, X509SVIDResponse } from '../../src/api/types.js';
import { EmbeddedIssuer } from '../../src/identity/issuer.js';
import { parseCertificates, splitDer } from '../../src/identity/der.js';
import { createCa, verifySvid } from '../../src/identity/x509.js';
import { tempDir, waitFor } from './helpers.js';

const header = () => {
  const md = new grpc.Metadata();
  md.set('workload.spiffe.io', 'true');
  return md;
};

/** Collects a server stream's messages as they come. */
function follow<T>(stream: grpc.ClientReadableStream<T>): { messages: T[]; error?: grpc.ServiceError } {
  const out: { messages: T[]; error?: grpc.ServiceError } = { messages: [] };
  stream.on('data', (m: T) => out.messages.push(m));
  stream.on('error', (e: grpc.ServiceError) => (out.error = e));
  return out;
}

describe('embedded issuer', () => {
  let tmp: ReturnType<typeof tempDir>;
  let issuer: EmbeddedIssuer | undefined;
  let client: ApiClient<'SpiffeWorkloadAPI'> | undefined;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(async () => {
    client?.close();
    client = undefined;
    await issuer?.close();
    issuer = undefined;
    tmp.cleanup();
  });

  it('serves an X.509-SVID with its bundle over a real unix socket', async () => {
    issuer = await EmbeddedIssuer.start({ trustDomain: 'node1.nsm', stateDir: path.join(tmp.dir, 'state') });
    const url = await issuer.addWorkload('spiffe://node1.nsm/ns/default/pod/nsc', path.join(tmp.dir, 'nsc.sock'));
    expect(url).toBe(`unix://${tmp.dir}/nsc.sock`);
    client = new ApiClient('SpiffeWorkloadAPI', url);
    const s = follow(client.stream('FetchX509SVID', {}, { metadata: header() }));
    await waitFor('the first SVID', () => s.messages.length > 0);
    const svid = s.messages[0]!.svids[0]!;
    expect(svid.spiffe_id).toBe('spiffe://node1.nsm/ns/default/pod/nsc');
    const bundle = parseCertificates(svid.bundle);
    expect(bundle.map((c) => c.raw.toString('hex'))).toEqual(issuer.bundleDer().map((b) => b.toString('hex')));
    const v = verifySvid(splitDer(svid.x509_svid), new Map([['node1.nsm', bundle]]));
    expect(v.spiffeId).toBe(svid.spiffe_id);
    expect(v.notAfter - Date.now()).toBeLessThanOrEqual(3600_000);
    expect(v.notAfter - Date.now()).toBeGreaterThan(3500_000);
  });

  it('refuses calls without the workload.spiffe.io header (INVALID_ARGUMENT)', async () => {
    issuer = await EmbeddedIssuer.start();
    const url = await issuer.addWorkload('spiffe://nsmesh.local/w', path.join(tmp.dir, 'w.sock'));
    client = new ApiClient('SpiffeWorkloadAPI', url);
    const s = follow(client.stream('FetchX509SVID', {}));
    await waitFor('the refusal', () => s.error);
    expect(s.error!.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(s.error!.details).toMatch(/security header missing/);
    await expect(client.unary('FetchJWTSVID', { audience: ['x'] }, { timeoutMs: 5000 })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(client.unary('FetchJWTSVID', { audience: ['x'] }, { timeoutMs: 5000, metadata: header() })).rejects.toMatchObject({
      code: grpc.status.UNIMPLEMENTED,
      details: expect.stringMatching(/X.509-SVIDs only/),
    });
  });

  it('pushes a rotated SVID on the open stream at the configured time', async () => {
    issuer = await EmbeddedIssuer.start({ svidTtlMs: 4000, rotateAfterMs: 700 });
    const url = await issuer.addWorkload('spiffe://nsmesh.local/rot', path.join(tmp.dir, 'rot.sock'));
    client = new ApiClient('SpiffeWorkloadAPI', url);
    const s = follow(client.stream('FetchX509SVID', {}, { metadata: header() }));
    await waitFor('two SVIDs on one stream', () => s.messages.length >= 2, 5000);
    const [first, second] = s.messages.map((m) => new X509Certificate(splitDer(m.svids[0]!.x509_svid)[0]!));
    expect(second!.serialNumber).not.toBe(first!.serialNumber);
    expect(Date.parse(second!.validTo)).toBeGreaterThanOrEqual(Date.parse(first!.validTo));
    expect(s.error).toBeUndefined();
  });

  it('streams federated bundles to both streams when one is added', async () => {
    issuer = await EmbeddedIssuer.start({ trustDomain: 'c1.nsm' });
    const other = createCa('c2.nsm');
    const url = await issuer.addWorkload('spiffe://c1.nsm/x', path.join(tmp.dir, 'x.sock'));
    client = new ApiClient('SpiffeWorkloadAPI', url);
    const svids = follow<X509SVIDResponse>(client.stream('FetchX509SVID', {}, { metadata: header() }));
    const bundles = follow<X509BundlesResponse>(client.stream('FetchX509Bundles', {}, { metadata: header() }));
    await waitFor('first messages', () => svids.messages.length === 1 && bundles.messages.length === 1);
    expect(Object.keys(bundles.messages[0]!.bundles)).toEqual(['spiffe://c1.nsm']);
    expect(svids.messages[0]!.federated_bundles).toEqual({});
    issuer.addFederatedBundle('c2.nsm', [other.certDer]);
    await waitFor('updates', () => svids.messages.length === 2 && bundles.messages.length === 2);
    expect(Object.keys(bundles.messages[1]!.bundles).sort()).toEqual(['spiffe://c1.nsm', 'spiffe://c2.nsm']);
    expect(Buffer.from(svids.messages[1]!.federated_bundles['spiffe://c2.nsm']!).equals(other.certDer)).toBe(true);
  });

  it('keeps its CA across restarts in stateDir, with the key file mode 0600', async () => {
    const stateDir = path.join(tmp.dir, 'state');
    issuer = await EmbeddedIssuer.start({ stateDir });
    const before = issuer.bundleDer()[0]!;
    await issuer.close();
    const keyFile = path.join(stateDir, 'ca.key');
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(fs.statSync(stateDir).mode & 0o777).toBe(0o700);
    issuer = await EmbeddedIssuer.start({ stateDir });
    expect(issuer.bundleDer()[0]!.equals(before)).toBe(true);
    await issuer.close();
    // another trust domain must not silently take over the stored CA
    await expect(EmbeddedIssuer.start({ stateDir, trustDomain: 'other.td' })).rejects.toThrow(/cannot serve trust domain other.td/);
    issuer = undefined;
  });

  it('refuses identities outside its trust domain and a socket already in use', async () => {
    issuer = await EmbeddedIssuer.start();
    await expect(issuer.addWorkload('spiffe://elsewhere/x', path.join(tmp.dir, 'a.sock'))).rejects.toThrow(/not in this issuer's trust domain/);
    await issuer.addWorkload('spiffe://nsmesh.local/a', path.join(tmp.dir, 'a.sock'));
    await expect(issuer.addWorkload('spiffe://nsmesh.local/b', path.join(tmp.dir, 'a.sock'))).rejects.toThrow(/already serves/);
  });

  it('gives its own daemon an in-process source that rotates and follows federation', async () => {
    issuer = await EmbeddedIssuer.start({ trustDomain: 'c1.nsm', svidTtlMs: 4000, rotateAfterMs: 500 });
    const src = issuer.x509Source('spiffe://c1.nsm/nsmd');
    const first = src.svid().serial;
    expect(src.svid().spiffeId).toBe('spiffe://c1.nsm/nsmd');
    expect([...src.bundles().keys()]).toEqual(['c1.nsm']);
    await waitFor('rotation', () => src.svid().serial !== first, 5000);
    issuer.addFederatedBundle('spiffe://c2.nsm', createCa('c2.nsm').certDer);
    expect([...src.bundles().keys()].sort()).toEqual(['c1.nsm', 'c2.nsm']);
    expect(() => issuer!.addFederatedBundle('c1.nsm', createCa('c1.nsm').certDer)).toThrow(/own trust domain/);
  });

  it('stops serving a removed workload and applies a socket mode', async () => {
    issuer = await EmbeddedIssuer.start();
    const sock = path.join(tmp.dir, 'm.sock');
    const url = await issuer.addWorkload('spiffe://nsmesh.local/m', sock, { mode: 0o666 });
    expect(fs.statSync(sock).mode & 0o777).toBe(0o666);
    client = new ApiClient('SpiffeWorkloadAPI', url);
    const s = follow(client.stream('FetchX509SVID', {}, { metadata: header() }));
    let ended = false;
    client.stream('FetchX509Bundles', {}, { metadata: header() }).on('end', () => (ended = true)).on('data', () => {});
    await waitFor('the first SVID', () => s.messages.length > 0);
    await issuer.removeWorkload(sock);
    await waitFor('the streams to end', () => ended);
    expect(fs.existsSync(sock)).toBe(false);
  });
});
