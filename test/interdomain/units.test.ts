/**
 * The parts of interdomain that need no namespaces: names, the NAT address map, SPIFFE bundles and bundle
 * endpoints, federation filtering, refused handshakes explained, path tokens across trust domains, and the
 * resolver against a DNS server that answers badly on purpose (faulty-dns.mjs, on loopback).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createServer } from 'node:net';
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addService, startServer, type RunningServer } from '../../src/api/grpc.js';
import { domainProblem, nameProblem } from '../../src/api/validate.js';
import { parseNsUrl } from '../../src/client/nsurl.js';
import { DomainNotFoundError, DomainResolutionError, SrvResolver } from '../../src/dns/index.js';
import { BundleEndpointFollower, fetchSpiffeBundle, startBundleEndpoint } from '../../src/identity/bundle-endpoint.js';
import { decodeSpiffeBundle, encodeSpiffeBundle } from '../../src/identity/bundle-format.js';
import { FederatedSource, parseFederatesWith } from '../../src/identity/federation.js';
import { EmbeddedIssuer } from '../../src/identity/issuer.js';
import { checkIncomingPath, issueToken } from '../../src/identity/path-tokens.js';
import { StaticX509Source, Svid } from '../../src/identity/source.js';
import { sourceTransport } from '../../src/identity/transport.js';
import { createCa, issueSvid, type Ca } from '../../src/identity/x509.js';
import { AddressMap } from '../../src/interdomain/address-map.js';
import { diagnoseHandshake } from '../../src/interdomain/handshake.js';
import { connectionFromDomain, connectionToDomain, endpointFromDomain, endpointQueryDomain, stripEndpoint } from '../../src/interdomain/names.js';
import { networkServiceRegistryHandlers } from '../../src/nsmd/registry-server.js';
import { createEmbeddedRegistry } from '../../src/registry/embedded/index.js';
import { InterdomainRegistry } from '../../src/interdomain/registry.js';
import { remoteEndpointRegistryHandlers, remoteServiceRegistryHandlers } from '../../src/interdomain/remote-api.js';
import type { Registry } from '../../src/registry/types.js';
import { silentLogger } from '../../src/util/log.js';
import { messageCodec } from '../../src/api/codec.js';
import type { Path } from '../../src/api/types.js';
import { waitFor } from '../../src/util/wait-for.js';
import { createWebCa } from './pki.js';

const nse = messageCodec('registry.NetworkServiceEndpoint').normalize;
const svidOf = (ca: Ca, id: string) => {
  const s = issueSvid(ca, id, 3600_000);
  return Svid.fromDer(id, s.chainDer, s.keyPkcs8Der);
};

describe('names', () => {
  it('accepts service@domain with a DNS name or a literal ip:port, and says what is wrong otherwise', () => {
    for (const ok of ['svc', 'svc@onprem.test', 'a.b_c-d@x.y', 'svc@198.18.0.5:5001', 'svc@[fd00::5]:5001']) expect(nameProblem(ok)).toBeUndefined();
    expect(nameProblem('svc@')).toMatch(/empty/);
    expect(nameProblem('svc@bad_domain')).toMatch(/not a DNS name/);
    expect(nameProblem('svc@198.18.0.5')).toBeUndefined(); // a bare IP is a DNS-name-shaped domain; DNS decides
    expect(domainProblem('198.18.0.5:99999')).toMatch(/neither a DNS name nor a literal ip:port/);
    expect(domainProblem('[fd00::5]')).toMatch(/neither/);
    expect(nameProblem('bad name@x.test')).toMatch(/letters, digits/);
  });

  it('takes @domain in both NSM_NETWORK_SERVICES forms', () => {
    expect(parseNsUrl('kernel://icmp@onprem.test/nsm0?app=a')).toMatchObject({ service: 'icmp@onprem.test', ifname: 'nsm0', labels: { app: 'a' } });
    expect(parseNsUrl('icmp@198.18.0.5:5001/nsm1')).toMatchObject({ service: 'icmp@198.18.0.5:5001', ifname: 'nsm1' });
    expect(parseNsUrl('kernel://icmp@[fd00::5]:5001/nsm2')).toMatchObject({ service: 'icmp@[fd00::5]:5001', ifname: 'nsm2' });
    expect(() => parseNsUrl('icmp@bad_domain/nsm0')).toThrow(/not a valid network service name: domain "bad_domain" is not a DNS name/);
  });

  it('strips @domain on the way out and appends it on the way back', () => {
    const q = nse({ name: '', network_service_names: ['svc@onprem.test'], network_service_labels: { 'svc@onprem.test': { labels: { a: 'b' } } } });
    expect(endpointQueryDomain(q)).toBe('onprem.test');
    expect(stripEndpoint(q)).toMatchObject({ network_service_names: ['svc'], network_service_labels: { svc: { labels: { a: 'b' } } } });
    const back = endpointFromDomain(nse({ name: 'icmp', network_service_names: ['svc'], url: 'tcp://198.18.0.5:5001' }), 'onprem.test');
    expect(back).toMatchObject({ name: 'icmp@onprem.test', network_service_names: ['svc@onprem.test'], url: 'tcp://198.18.0.5:5001' });
    expect(() => endpointQueryDomain(nse({ name: 'a@x.test', network_service_names: ['b@y.test'] }))).toThrow(/several domains/);
    const out = connectionToDomain({ network_service: 'svc@onprem.test', network_service_endpoint_name: 'icmp@onprem.test' });
    expect(out).toEqual({ network_service: 'svc', network_service_endpoint_name: 'icmp' });
    const conn = { network_service: 'svc', network_service_endpoint_name: 'icmp' } as Parameters<typeof connectionFromDomain>[0];
    connectionFromDomain(conn, 'onprem.test');
    expect(conn).toMatchObject({ network_service: 'svc@onprem.test', network_service_endpoint_name: 'icmp@onprem.test' });
  });
});

describe('NAT address map', () => {
  it('maps internal addresses and URLs to external ones, leaving others alone', () => {
    const m = AddressMap.parse('198.18.10.1: 198.18.0.11\n"fd00:10::1": "fd00::11"\n');
    expect(m.external('198.18.10.1')).toBe('198.18.0.11');
    expect(m.external('fd00:10:0::1')).toBe('fd00::11');
    expect(m.external('198.18.10.2')).toBe('198.18.10.2');
    expect(m.externalUrl('tcp://198.18.10.1:5001')).toBe('tcp://198.18.0.11:5001');
    expect(m.externalUrl('tcp://[fd00:10::1]:5001')).toBe('tcp://[fd00::11]:5001');
    expect(m.externalUrl('unix:///x.sock')).toBe('unix:///x.sock');
    expect(AddressMap.parse('').size).toBe(0);
  });

  it('refuses what is not an address map, saying where', () => {
    expect(() => AddressMap.parse('198.18.10.1: not-an-ip')).toThrow(/198\.18\.10\.1: not an IP address/);
    expect(() => AddressMap.parse('[1, 2]')).toThrow(/expected "internal-ip: external-ip"/);
    expect(() => AddressMap.load('/nonexistent/map.yaml')).toThrow(/address map \/nonexistent\/map\.yaml/);
  });
});

describe('SPIFFE bundles', () => {
  const ca = createCa('onprem.test');
  it('round-trips a bundle document and refuses forged or empty ones', () => {
    const doc = encodeSpiffeBundle([ca.cert], { refreshHintS: 60, sequence: 3 });
    const b = decodeSpiffeBundle(doc, 'onprem.test');
    expect(b.x509Authorities.map((c) => c.fingerprint256)).toEqual([ca.cert.fingerprint256]);
    expect(b).toMatchObject({ refreshHintS: 60, sequence: 3 });
    const forged = JSON.parse(doc);
    forged.keys[0].x5c = [createCa('evil.test').cert.raw.toString('base64')];
    expect(() => decodeSpiffeBundle(JSON.stringify(forged), 'onprem.test')).toThrow(/different public key than its x5c/);
    expect(() => decodeSpiffeBundle('{"keys":[]}', 'onprem.test')).toThrow(/no X.509 authority/);
    expect(() => decodeSpiffeBundle('nope', 'onprem.test')).toThrow(/not JSON/);
    expect(() => decodeSpiffeBundle('{"keys":3}', 'onprem.test')).toThrow(/not a SPIFFE bundle/);
  });

  it('is served by a bundle endpoint and followed at its refresh hint', async () => {
    const web = createWebCa();
    let served = [ca.cert];
    const ep = await startBundleEndpoint({ listen: '127.0.0.1:0', ...web.issue('127.0.0.1'), bundle: () => served, refreshHintS: 0 });
    try {
      const b = await fetchSpiffeBundle(ep.url, 'onprem.test', { ca: web.certPem });
      expect(b.x509Authorities[0]!.fingerprint256).toBe(ca.cert.fingerprint256);
      await expect(fetchSpiffeBundle(ep.url, 'onprem.test')).rejects.toThrow(/bundle endpoint https:\/\/127\.0\.0\.1:\d+\/: .*(self-signed|unable to verify|UNABLE_TO_GET_ISSUER)/i);
      await expect(fetchSpiffeBundle(ep.url.replace('https', 'http'), 'onprem.test')).rejects.toThrow(/must be https/);

      const f = new BundleEndpointFollower('onprem.test', ep.url, { ca: web.certPem, minRefreshMs: 50 });
      const updates: string[] = [];
      f.on('update', () => updates.push(f.certs()![0]!.fingerprint256));
      expect(await f.start()).toBe(true);
      const rotated = createCa('onprem.test');
      served = [rotated.cert];
      await waitFor('the rotated bundle', () => updates.includes(rotated.cert.fingerprint256), 5000);
      f.close();
    } finally {
      await ep.close();
    }
  });

  it("lets the embedded issuer follow another trust domain's bundle endpoint and hand it to workloads", async () => {
    const web = createWebCa();
    const onprem = await EmbeddedIssuer.start({ trustDomain: 'onprem.test' });
    const cluster = await EmbeddedIssuer.start({ trustDomain: 'cluster.test' });
    try {
      const ep = await onprem.serveBundleEndpoint({ listen: '127.0.0.1:0', ...web.issue('127.0.0.1') });
      const source = cluster.x509Source('spiffe://cluster.test/nsmesh/nsmd/a');
      expect(await cluster.followFederatedBundle('onprem.test', ep.url, { ca: web.certPem })).toBe(true);
      await waitFor('the federated bundle', () => source.bundles().get('onprem.test')?.[0]?.fingerprint256 === onprem.bundle()[0]!.fingerprint256);
    } finally {
      await cluster.close();
      await onprem.close();
    }
  });
});

describe('federation', () => {
  const own = createCa('cluster.test');
  const a = createCa('onprem.test');
  const b = createCa('other.test');
  const inner = () => new StaticX509Source(svidOf(own, 'spiffe://cluster.test/nsmesh/nsmd/x'), new Map([['cluster.test', [own.cert]], ['onprem.test', [a.cert]], ['other.test', [b.cert]]]));

  it('parses NSM_FEDERATES_WITH', () => {
    expect(parseFederatesWith('onprem.test, other.test=https://198.18.0.5:8443/')).toEqual([
      { trustDomain: 'onprem.test' },
      { trustDomain: 'other.test', bundleEndpoint: 'https://198.18.0.5:8443/' },
    ]);
    expect(() => parseFederatesWith('a.test,a.test')).toThrow(/listed twice/);
    expect(() => parseFederatesWith('a.test=http://x')).toThrow(/https/);
  });

  it('trusts only its own and the configured trust domains, whatever the Workload API sends', async () => {
    const src = await FederatedSource.open(inner(), [{ trustDomain: 'onprem.test' }, { trustDomain: 'far.test' }]);
    expect([...src.bundles().keys()].sort()).toEqual(['cluster.test', 'onprem.test']);
    expect(src.explain('onprem.test')).toBeUndefined();
    expect(src.explain('cluster.test')).toBeUndefined();
    expect(src.explain('other.test')).toMatch(/other\.test is not federated with this one \(cluster\.test; NSM_FEDERATES_WITH: onprem\.test,far\.test\)/);
    expect(src.explain('far.test')).toMatch(/Workload API supplies no bundle for it/);
    src.close();
  });

  it('explains a refused handshake, whichever side refuses', async () => {
    const onprem = new StaticX509Source(svidOf(a, 'spiffe://onprem.test/nsmesh/nsmd/o'), new Map([['onprem.test', [a.cert]]]));
    const reg = await createEmbeddedRegistry();
    const server: RunningServer = await startServer('tcp://127.0.0.1:0', (s) => addService(s, 'registry.NetworkServiceRegistry', networkServiceRegistryHandlers(reg, { transport: sourceTransport(onprem), isAdmin: () => false })), sourceTransport(onprem).serverCredentials());
    try {
      const notFederated = await FederatedSource.open(inner(), []);
      const us = await diagnoseHandshake(server.url, sourceTransport(notFederated, notFederated), 2000);
      expect(us).toMatchObject({ kind: 'refused', by: 'us', peerId: 'spiffe://onprem.test/nsmesh/nsmd/o', reason: expect.stringMatching(/onprem\.test is not federated with this one/) });
      // We accept onprem.test, but onprem.test does not accept cluster.test.
      const federated = await FederatedSource.open(inner(), [{ trustDomain: 'onprem.test' }]);
      const them = await diagnoseHandshake(server.url, sourceTransport(federated, federated), 2000);
      expect(them).toMatchObject({ kind: 'refused', by: 'them', peerId: 'spiffe://onprem.test/nsmesh/nsmd/o' });
      // Both sides federated: nothing to explain.
      const both = new StaticX509Source(svidOf(a, 'spiffe://onprem.test/nsmesh/nsmd/o2'), new Map([['onprem.test', [a.cert]], ['cluster.test', [own.cert]]]));
      const server2 = await startServer('tcp://127.0.0.1:0', (s) => addService(s, 'registry.NetworkServiceRegistry', networkServiceRegistryHandlers(reg, { transport: sourceTransport(both), isAdmin: () => false })), sourceTransport(both).serverCredentials());
      expect(await diagnoseHandshake(server2.url, sourceTransport(federated, federated), 2000)).toEqual({ kind: 'accepted' });
      await server2.close();
      // Nothing listening: not an identity problem.
      expect(await diagnoseHandshake('tcp://127.0.0.1:9', sourceTransport(federated, federated), 2000)).toEqual({ kind: 'unknown' });
    } finally {
      await server.close();
      await reg.close();
    }
  });

  it("verifies a path token signed in another trust domain with that trust domain's bundle", () => {
    const id = 'spiffe://onprem.test/nsmesh/nsmd/o';
    const self = 'spiffe://cluster.test/nsmesh/nsmd/x';
    const old = svidOf(a, id);
    const rotated = svidOf(a, id);
    const peer = { spiffeId: id, trustDomain: 'onprem.test', leaf: old.leaf, notAfter: old.notAfter };
    const path = (): Path => ({
      index: 1,
      path_segments: [
        { name: 'nsmd-o', id: 'p0', token: '', expires: null, metrics: {} },
        { name: 'nsmd-x', id: 'p1', token: '', expires: null, metrics: {} },
      ],
    });
    // Signed with the rotated key while the connection still shows the old certificate: x5c names the signer.
    const { token } = issueToken(rotated, self, 60_000);
    const withBundle = new Map<string, X509Certificate[]>([['cluster.test', [own.cert]], ['onprem.test', [a.cert]]]);
    expect(checkIncomingPath(path(), 1, token, peer, self, withBundle)).toBe(id);
    const { token: t2 } = issueToken(svidOf(a, id), self, 60_000);
    expect(() => checkIncomingPath(path(), 1, t2, peer, self, new Map([['cluster.test', [own.cert]]]))).toThrow(/signer certificate refused: .*trust domain onprem\.test is not trusted/);
    const { token: t3 } = issueToken(svidOf(a, id), self, 60_000);
    expect(() => checkIncomingPath(path(), 1, t3, peer, self, new Map([['cluster.test', [own.cert]], ['onprem.test', [b.cert]]]))).toThrow(/signed by no CA of trust domain onprem\.test/);
  });
});

describe("another domain's registry through nsmd", () => {
  const cluster = createCa('cluster.test');
  const onprem = createCa('onprem.test');
  const both = new Map([['cluster.test', [cluster.cert]], ['onprem.test', [onprem.cert]]]);
  const ns = messageCodec('registry.NetworkService').normalize;
  let remote: Registry;
  const asked = { ns: 0, nse: 0 };
  let server: RunningServer | undefined;
  let port = 0;
  const serve = async () => {
    const t = sourceTransport(new StaticX509Source(svidOf(onprem, 'spiffe://onprem.test/nsmesh/nsmd/o'), both));
    server = await startServer(`tcp://127.0.0.1:${port}`, (s) => {
      addService(s, 'registry.NetworkServiceRegistry', remoteServiceRegistryHandlers(remote));
      addService(s, 'registry.NetworkServiceEndpointRegistry', remoteEndpointRegistryHandlers(remote, t, AddressMap.parse('198.18.10.1: 198.18.0.11')));
    }, t.serverCredentials());
    port = Number(server.url.split(':').pop());
  };
  let reg: InterdomainRegistry;
  const domain = () => `127.0.0.1:${port}`;

  beforeAll(async () => {
    const inner = await createEmbeddedRegistry();
    await inner.registerService(ns({ name: 'svc' }));
    await inner.registerEndpoint(nse({ name: 'icmp', network_service_names: ['svc'], url: 'tcp://198.18.10.1:5001' }));
    await inner.registerEndpoint(nse({ name: 'local-only', network_service_names: ['svc'], url: 'unix:///run/x.sock' }));
    // Counts what reaches the other domain's registry.
    remote = {
      ...inner,
      findServices: (t) => (asked.ns++, inner.findServices(t)),
      findEndpoints: (t) => (asked.nse++, inner.findEndpoints(t)),
      watchServices: (t, f) => inner.watchServices(t, f),
      watchEndpoints: (t, f) => inner.watchEndpoints(t, f),
    } as Registry;
    await serve();
    reg = new InterdomainRegistry(await createEmbeddedRegistry(), {
      resolver: new SrvResolver({ servers: ['127.0.0.1:9'] }),
      transport: sourceTransport(new StaticX509Source(svidOf(cluster, 'spiffe://cluster.test/nsmesh/nsmd/c'), both)),
      dialTimeoutMs: 1000,
      queryTimeoutMs: 2000,
      lookupTtlMs: 60_000,
      log: silentLogger,
    });
  });
  afterAll(async () => {
    await reg?.close();
    await server?.close();
  });

  it("asks for a service and its endpoints at once, names them with @domain, and gives outsiders the NAT map's URLs", async () => {
    const [svc] = await reg.lookupServices(ns({ name: `svc@${domain()}` }));
    expect(svc!.name).toBe(`svc@${domain()}`);
    const eps = await reg.lookupEndpoints(nse({ network_service_names: [svc!.name] }));
    expect(eps).toEqual([expect.objectContaining({ name: `icmp@${domain()}`, network_service_names: [`svc@${domain()}`], url: 'tcp://198.18.0.11:5001' })]);
    expect(asked).toEqual({ ns: 1, nse: 1 });
  });

  it('reuses answers on the Request path while their nsmd stays connected, but not for Find', async () => {
    await reg.lookupServices(ns({ name: `svc@${domain()}` }));
    await reg.lookupEndpoints(nse({ network_service_names: [`svc@${domain()}`] }));
    expect(asked).toEqual({ ns: 1, nse: 1 });
    expect(await reg.findEndpoints(nse({ name: `icmp@${domain()}` }))).toHaveLength(1);
    expect(asked.nse).toBe(2);
    await server!.close();
    await serve();
    await reg.lookupEndpoints(nse({ network_service_names: [`svc@${domain()}`] }));
    expect(asked.nse).toBe(3);
  });

  it('uses an nsmd that is back at once, not after the backoff of its failure', async () => {
    await server!.close();
    await expect(reg.findServices(ns({ name: `svc@${domain()}` }))).rejects.toThrow(/none of its 1 nsmd\(s\) answered/);
    await serve();
    expect(await reg.findServices(ns({ name: `svc@${domain()}` }))).toHaveLength(1);
  });

  it('refuses registrations in another domain', async () => {
    await expect(reg.registerEndpoint(nse({ name: 'x@onprem.test', network_service_names: ['svc'], url: 'tcp://1.2.3.4:5' }))).rejects.toThrow(/belongs to domain "onprem.test": register it with an nsmd of that domain/);
  });

  it('names the domain when none of its nsmds answers', async () => {
    await expect(reg.findServices(ns({ name: 'svc@127.0.0.1:9' }))).rejects.toThrow(/domain "127\.0\.0\.1:9": none of its 1 nsmd\(s\) answered/);
  });
});

describe('resolver against a DNS server that answers badly', () => {
  let dns: ChildProcess;
  let server = '';
  beforeAll(async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    dns = spawn(process.execPath, [path.join(import.meta.dirname, 'faulty-dns.mjs'), '127.0.0.1', String(port), '198.18.9.9'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      dns.stdout!.once('data', () => resolve());
      dns.once('exit', (c) => reject(new Error(`faulty-dns exited ${c}`)));
    });
    server = `127.0.0.1:${port}`;
  });
  afterAll(() => {
    dns?.kill();
  });

  const resolve = (domain: string) => new SrvResolver({ servers: [server], timeoutMs: 1000 }).resolveDomain(domain);

  it('asks A when the additional section has no address', async () => {
    expect(await resolve('noadd.test')).toEqual([{ host: 't.noadd.test', port: 5001, address: '198.18.9.9', priority: 0, weight: 1, url: 'tcp://198.18.9.9:5001' }]);
  });

  it.each([
    ['nxdomain.test', DomainNotFoundError, /"nxdomain\.test": _nsm\._tcp\.nxdomain\.test → NXDOMAIN; registry\.nsm-system\.nxdomain\.test → NXDOMAIN/],
    ['servfail.test', DomainResolutionError, /"servfail\.test": no DNS server answered SRV _nsm\._tcp\.servfail\.test: 127\.0\.0\.1:\d+: SERVFAIL/],
    ['trunc.test', DomainResolutionError, /"trunc\.test": .*truncated and the TCP retry failed/],
    ['big.test', DomainResolutionError, /"big\.test": the answer for SRV _nsm\._tcp\.big\.test has 200 records; at most 64/],
    ['malformed.test', DomainResolutionError, /"malformed\.test": .*malformed UDP reply/],
  ])('%s gives a clear error naming the domain', async (domain, type, message) => {
    const err = await resolve(domain).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(type);
    expect((err as Error).message).toMatch(message);
  });
});
