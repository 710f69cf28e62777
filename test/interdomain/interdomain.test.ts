/**
 * Three domains, each with its own nsmd(s), registry and trust domain, on one underlay:
 * - cluster.test: nsmd c0 (DNS: dnsmasq; federates with onprem.test through its bundle endpoint) and c1 (DNS:
 *   faulty-dns.mjs, for the failure paths); an embedded issuer in this process, which also holds other.test's
 *   bundle — so refusing other.test is nsmd's own decision, not a missing bundle.
 * - onprem.test: a plain host o0 running nsm-issuer (bundle endpoint, cluster.test's bundle from a file) and
 *   nsmd, behind NAT as other domains see it (its tunnel address and remote URL are internal — on its
 *   loopback, routable from nowhere else — mapped to its underlay address by NSM_MAP_IP_FILE), with an endpoint that is a process of the
 *   host itself; and o1, a second entry point with its own registry and an endpoint in a pod namespace.
 *   Separate registries make visible which entry point answered a query.
 * - other.test: nsmd x0 with an endpoint; it would accept cluster.test, but cluster.test does not federate with it.
 * dnsmasq (Debian dnsmasq-base) in the underlay namespace serves the SRV and address records, TTL 3 s.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../src/api/grpc.js';
import type { Connection, DeepPartial, NetworkServiceRequest } from '../../src/api/types.js';
import { inodeUrlOf } from '../../src/dataplane/netns.js';
import { signOwnSegment } from '../../src/identity/outgoing.js';
import type { Transport } from '../../src/identity/transport.js';
import { BIN } from '../helpers/mesh.js';
import { createNetns, ping, tag, type Netns } from '../helpers/netns.js';
import { createUnderlay, type Underlay, type UnderlayNode } from '../helpers/nodes.js';
import { waitFor } from '../helpers/wait.js';
import {
  dir,
  inProcessDomain,
  issuerProcessDomain,
  startDnsmasq,
  startEndpoint,
  startFaultyDns,
  startNsmd,
  stopAll,
  type Dnsmasq,
  type Domain,
  type NsmdHandle,
} from './lab.js';
import { createWebCa } from './pki.js';

const TTL_S = 3;
let ul: Underlay;
let c0: UnderlayNode, c1: UnderlayNode, o0: UnderlayNode, o1: UnderlayNode, x0: UnderlayNode;
let dns: Dnsmasq;
let cluster: Domain & { issuer: import('../../src/identity/issuer.js').EmbeddedIssuer };
let onprem: Domain & { stop(): Promise<void> };
let other: Domain & { issuer: import('../../src/identity/issuer.js').EmbeddedIssuer };
let nsmdC0: NsmdHandle, nsmdC1: NsmdHandle, nsmdO0: NsmdHandle;
let internalO0 = '';
let pod: Netns;
let me: Transport;
let admin: Transport;
let ns: ApiClient<'networkservice.NetworkService'>;
let nsFaulty: ApiClient<'networkservice.NetworkService'>;
let nseReg: ApiClient<'registry.NetworkServiceEndpointRegistry'>;

const records = (moving: UnderlayNode) => [
  'srv-host=_nsm._tcp.onprem.test,o0.onprem.test,5001,10,50',
  'srv-host=_nsm._tcp.onprem.test,o1.onprem.test,5001,20,50',
  'srv-host=_nsm._tcp.lb.onprem.test,o0.onprem.test,5001,10,20',
  'srv-host=_nsm._tcp.lb.onprem.test,o1.onprem.test,5001,10,80',
  `srv-host=_nsm._tcp.moving.test,${moving === o0 ? 'o0' : 'o1'}.onprem.test,5001,10,10`,
  // other.test publishes only upstream v1's name.
  'srv-host=registry.nsm-system.other.test,x0.other.test,5001,0,0',
  `host-record=o0.onprem.test,${o0.ip}`,
  `host-record=o1.onprem.test,${o1.ip}`,
  `host-record=x0.other.test,${x0.ip}`,
];

beforeAll(async () => {
  ul = await createUnderlay(5);
  [c0, c1, o0, o1, x0] = ul.nodes as [UnderlayNode, UnderlayNode, UnderlayNode, UnderlayNode, UnderlayNode];
  dns = await startDnsmasq(ul.underlay, ul.underlay.ip, records(o0), TTL_S);
  const faulty = await startFaultyDns(ul.underlay, ul.underlay.ip, 5353, o1.ip);

  // onprem.test's host: its nsmd is reached at the underlay address but knows itself by an internal one.
  const [, a, b] = ul.underlay.ip.split('.');
  internalO0 = `198.${a === '18' ? 19 : 18}.${b}.2`;
  await execa('ip', ['-n', o0.name, 'addr', 'add', `${internalO0}/32`, 'dev', 'lo']);
  const mapFile = path.join(dir, 'map-ip.yaml');
  fs.writeFileSync(mapFile, `${internalO0}: ${o0.ip}\n`);

  const web = createWebCa();
  const webCaFile = path.join(dir, 'web-ca.pem');
  const { certPem, keyPem } = web.issue(o0.ip);
  fs.writeFileSync(webCaFile, web.certPem);
  fs.writeFileSync(path.join(dir, 'be.crt'), certPem);
  fs.writeFileSync(path.join(dir, 'be.key'), keyPem, { mode: 0o600 });

  cluster = await inProcessDomain('cluster.test');
  other = await inProcessDomain('other.test');
  fs.writeFileSync(path.join(dir, 'cluster-bundle.pem'), cluster.bundlePem());
  onprem = await issuerProcessDomain(o0, 'onprem.test', {
    identities: ['spiffe://onprem.test/nsmesh/nsmd/nsmd-o0', 'spiffe://onprem.test/nsmesh/nsmd/nsmd-o1', 'spiffe://onprem.test/ns/default/pod/icmp-a', 'spiffe://onprem.test/ns/default/pod/icmp-b'],
    bundleEndpoint: `${o0.ip}:8443`,
    certFile: path.join(dir, 'be.crt'),
    keyFile: path.join(dir, 'be.key'),
    federatesWith: [`cluster.test=${path.join(dir, 'cluster-bundle.pem')}`],
  });
  other.issuer.addFederatedBundle('cluster.test', cluster.issuer.bundleDer());
  cluster.issuer.addFederatedBundle('other.test', other.issuer.bundleDer());

  const onpremAdmin = await onprem.transport(onprem.admin);
  const otherAdmin = await other.transport(other.admin);
  admin = await cluster.transport(cluster.admin);

  nsmdO0 = await startNsmd(o0, onprem, 'nsmd-o0', onpremAdmin, {
    NSM_REMOTE_LISTEN_ON: 'tcp://0.0.0.0:5001',
    NSM_REMOTE_URL: `tcp://${internalO0}:5001`,
    NSM_MAP_IP_FILE: mapFile,
    NSM_FEDERATES_WITH: 'cluster.test',
  });
  const nsmdO1 = await startNsmd(o1, onprem, 'nsmd-o1', onpremAdmin, { NSM_FEDERATES_WITH: 'cluster.test' });
  const nsmdX0 = await startNsmd(x0, other, 'nsmd-x0', otherAdmin, { NSM_FEDERATES_WITH: 'cluster.test' });
  const clusterEnv = { NSM_FEDERATES_WITH: `onprem.test=https://${o0.ip}:8443/`, NODE_EXTRA_CA_CERTS: webCaFile };
  nsmdC0 = await startNsmd(c0, cluster, 'nsmd-c0', admin, { ...clusterEnv, NSM_DNS_SERVERS: dns.server });
  nsmdC1 = await startNsmd(c1, cluster, 'nsmd-c1', admin, { ...clusterEnv, NSM_DNS_SERVERS: faulty, NSM_REMOTE_LISTEN_ON: '' });

  // icmp-a is a process of the plain host itself; icmp-b and icmp-x live in pod namespaces.
  await startEndpoint(o0, onprem, nsmdO0, { name: 'icmp-a', services: ['svc'], cidr: '169.254.10.0/24', probe: onpremAdmin });
  await startEndpoint(await createNetns('ob'), onprem, nsmdO1, { name: 'icmp-b', services: ['svc'], cidr: '169.254.11.0/24', probe: onpremAdmin });
  await startEndpoint(await createNetns('xp'), other, nsmdX0, { name: 'icmp-x', services: ['svc'], cidr: '169.254.12.0/24', probe: otherAdmin });

  pod = await createNetns('cp');
  me = await cluster.transport(cluster.podId('client'));
  ns = new ApiClient('networkservice.NetworkService', nsmdC0.url, me);
  nsFaulty = new ApiClient('networkservice.NetworkService', nsmdC1.url, me);
  nseReg = new ApiClient('registry.NetworkServiceEndpointRegistry', nsmdC0.url, admin);
}, 120_000);

afterAll(async () => {
  for (const c of [ns, nsFaulty, nseReg]) c?.close();
  await stopAll();
  await Promise.allSettled([cluster?.close(), other?.close(), onprem?.close()]);
  await ul?.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

function request(id: string, service: string, ifname: string): DeepPartial<NetworkServiceRequest> {
  return {
    connection: { id, network_service: service, path: { index: 0, path_segments: [{ name: 'client', id }] } },
    mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: ifname, inodeURL: inodeUrlOf(pod.path) } }],
  };
}

async function connect(client: ApiClient<'networkservice.NetworkService'>, r: DeepPartial<NetworkServiceRequest>): Promise<Connection> {
  const metadata = await signOwnSegment(me, client, r.connection!, 60_000, 5000);
  return client.unary('Request', r, { timeoutMs: 20_000, metadata });
}

const refusal = async (p: Promise<unknown>) => (await p.then(() => undefined, (e: unknown) => e)) as { code: number; details: string } | undefined;

type Link = { ifname: string; mtu: number; linkinfo?: { info_kind: string } };
const podLinks = async (n: Netns = pod): Promise<Link[]> =>
  (JSON.parse((await execa('ip', ['-n', n.name, '-j', '-d', 'link', 'show'])).stdout) as Link[]).filter((l) => l.ifname !== 'lo');
const dst = (c: Connection) => c.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!;
const endpointsOf = async (service: string) =>
  (await nseReg.collect('Find', { network_service_endpoint: { network_service_names: [service] } }, { timeoutMs: 5000 })).map((r) => r.network_service_endpoint!);
/** The devices of the wireguard-go processes running in a node's namespace (`wireguard-go -f <device>`). */
const wireguardDevicesIn = async (node: Netns): Promise<string[]> => {
  const pids = (await execa('ip', ['netns', 'pids', node.name])).stdout.split('\n').filter(Boolean);
  const cmdlines = await Promise.all(pids.map((p) => fs.promises.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')));
  return cmdlines.map((c) => c.split('\0').filter(Boolean)).filter((a) => a[0]?.endsWith('wireguard-go')).map((a) => a[a.length - 1]!);
};
const wireguardGoIn = async (node: Netns) => (await wireguardDevicesIn(node)).length;

describe('service@domain across three domains', () => {
  it('resolves svc@onprem.test, connects it over WireGuard through the NAT map, and carries traffic', async () => {
    const svc = await new ApiClient('registry.NetworkServiceRegistry', nsmdC0.url, admin).collect('Find', { network_service: { name: 'svc@onprem.test' } }, { timeoutMs: 5000 });
    expect(svc.map((r) => r.network_service!.name)).toEqual(['svc@onprem.test']);

    const c = await connect(ns, request(`${tag}-i1`, 'svc@onprem.test', `${tag}i1`));
    expect(c.network_service).toBe('svc@onprem.test');
    expect(c.network_service_endpoint_name).toBe('icmp-a@onprem.test');
    expect(c.path!.path_segments.map((s) => s.name)).toEqual(['client', 'nsmd-c0', 'nsmd-o0', 'icmp-a']);
    const [link] = await podLinks();
    expect(link!.linkinfo?.info_kind).toBe('tun');
    expect(await ping(pod, dst(c))).toBe(true);
    // The client's end sends to o0's outside address: its internal one is not even routable from here.
    const [device] = await wireguardDevicesIn(c0);
    const endpoint = (await execa('wg', ['show', device!, 'endpoints'])).stdout.trim().split(/\s+/).pop();
    expect(endpoint).toMatch(new RegExp(`^${o0.ip.replace(/\./g, '\\.')}:\\d+$`));
    // The endpoint's end is in the host's own namespace: a process of the plain host serves it.
    expect((await podLinks(o0)).some((l) => l.linkinfo?.info_kind === 'tun')).toBe(true);

    await ns.unary('Close', c, { timeoutMs: 10_000 });
    expect(await podLinks()).toEqual([]);
    await waitFor('both WireGuard ends to go', async () => (await wireguardGoIn(c0)) + (await wireguardGoIn(o0)) === 0);
  });

  it('takes service@domain in the annotation form from nsc', async () => {
    const p2 = await createNetns('cp2');
    const r = await execa('ip', ['netns', 'exec', p2.name, 'node', BIN.nsc, '--output', 'json'], {
      env: {
        SPIFFE_ENDPOINT_SOCKET: await cluster.socket(cluster.podId('nsc')),
        NSM_NAME: `${tag}-nsc`,
        NSM_CONNECT_TO: nsmdC0.url,
        NSM_NETWORK_SERVICES: 'svc@onprem.test/nsm1',
      },
      reject: false,
    });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const [conn] = JSON.parse(String(r.stdout)) as Connection[];
    expect(conn!.network_service_endpoint_name).toBe('icmp-a@onprem.test');
    expect(await ping(p2, dst(conn!))).toBe(true);
    await new ApiClient('networkservice.NetworkService', nsmdC0.url, admin).unary('Close', conn!, { timeoutMs: 10_000 });
    expect(await podLinks(p2)).toEqual([]);
  });

  it('takes a literal ip:port domain from nsmctl, without DNS', async () => {
    const r = await execa('node', [BIN.nsmctl, 'get', 'endpoints', `svc@${o1.ip}:5001`, '--output', 'json'], {
      env: { SPIFFE_ENDPOINT_SOCKET: await cluster.socket(cluster.admin), NSM_CONNECT_TO: nsmdC0.url },
      reject: false,
    });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const list = JSON.parse(String(r.stdout)) as { name: string; network_service_names: string[]; url: string }[];
    expect(list).toEqual([expect.objectContaining({ name: `icmp-b@${o1.ip}:5001`, network_service_names: [`svc@${o1.ip}:5001`], url: `tcp://${o1.ip}:5001` })]);
  });

  it("gives other domains the NAT map's address for a node, and keeps unix endpoints to itself", async () => {
    const [a] = await endpointsOf('svc@onprem.test');
    expect(a).toMatchObject({ name: 'icmp-a@onprem.test', url: `tcp://${o0.ip}:5001` });
  });

  it('splits queries between two SRV targets of one priority by their weights', async () => {
    // Each query is resolved anew (from the cache while the TTL lasts: RFC 2782 order is drawn per query),
    // and the two entry points have their own registries, so the endpoint found tells which one answered.
    const N = 400;
    let b = 0;
    for (let i = 0; i < N; i++) if ((await endpointsOf('svc@lb.onprem.test'))[0]!.name === 'icmp-b@lb.onprem.test') b++;
    // Weights 20/80: the share of o1 has a standard deviation of 2 % at N = 400; ±10 % is five of them.
    expect(Math.abs(b / N - 0.8)).toBeLessThan(0.1);
  });

  it('resolves a changed record again once its TTL has passed', async () => {
    const first = Date.now();
    expect((await endpointsOf('svc@moving.test'))[0]!.name).toBe('icmp-a@moving.test');
    await dns.reload(records(o1));
    // Still cached: the record's TTL has not run out.
    expect((await endpointsOf('svc@moving.test'))[0]!.name).toBe('icmp-a@moving.test');
    expect(Date.now() - first).toBeLessThan(TTL_S * 1000);
    await waitFor('the changed record', async () => (await endpointsOf('svc@moving.test'))[0]!.name === 'icmp-b@moving.test', TTL_S * 1000 + 5000, 100);
    expect(Date.now() - first).toBeGreaterThanOrEqual(TTL_S * 1000 - 100);
  });

  it('refuses a domain whose trust domain is not federated, and plumbs nothing', async () => {
    const err = await refusal(connect(ns, request(`${tag}-x1`, 'svc@other.test', `${tag}x1`)));
    expect(err?.code).toBe(status.PERMISSION_DENIED);
    expect(err?.details).toMatch(
      new RegExp(
        `domain "other\\.test": its nsmd at tcp://${x0.ip.replace(/\./g, '\\.')}:5001 presents spiffe://other\\.test/nsmesh/nsmd/nsmd-x0, which this nsmd does not accept: trust domain other\\.test is not federated with this one \\(cluster\\.test; NSM_FEDERATES_WITH: onprem\\.test\\)`,
      ),
    );
    expect(await podLinks()).toEqual([]);
  });

  it.each([
    ['nowhere.test', 'c0', status.NOT_FOUND, /cannot resolve NSM domain "nowhere\.test": _nsm\._tcp\.nowhere\.test → NXDOMAIN; registry\.nsm-system\.nowhere\.test → NXDOMAIN/],
    ['nxdomain.test', 'c1', status.NOT_FOUND, /cannot resolve NSM domain "nxdomain\.test": .*NXDOMAIN/],
    ['servfail.test', 'c1', status.UNAVAILABLE, /cannot resolve NSM domain "servfail\.test": no DNS server answered SRV _nsm\._tcp\.servfail\.test: .*SERVFAIL/],
    ['trunc.test', 'c1', status.UNAVAILABLE, /cannot resolve NSM domain "trunc\.test": .*truncated and the TCP retry failed/],
    ['big.test', 'c1', status.UNAVAILABLE, /cannot resolve NSM domain "big\.test": .*200 records; at most 64 are accepted/],
    ['malformed.test', 'c1', status.UNAVAILABLE, /cannot resolve NSM domain "malformed\.test": .*malformed UDP reply/],
  ])('svc@%s: a clear error naming the domain', async (domain, via, code, message) => {
    const err = await refusal(connect(via === 'c0' ? ns : nsFaulty, request(`${tag}-d-${domain}`, `svc@${domain}`, `${tag}d`)));
    expect(err?.code).toBe(code);
    expect(err?.details).toMatch(message);
    expect(await podLinks()).toEqual([]);
  });

  it('survives every bad answer and refuses a malformed domain at the edge', async () => {
    expect(nsmdC1.proc.exited()).toBe(false);
    const err = await refusal(connect(nsFaulty, request(`${tag}-bad`, 'svc@bad_domain', `${tag}b`)));
    expect(err?.code).toBe(status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/connection\.network_service "svc@bad_domain" is not valid: domain "bad_domain" is not a DNS name/);
    // The faulty server's A record works; the nsmd at that address answers.
    await expect(new ApiClient('registry.NetworkServiceEndpointRegistry', nsmdC1.url, admin).collect('Find', { network_service_endpoint: { network_service_names: ['svc@noadd.test'] } }, { timeoutMs: 5000 })).resolves.toHaveLength(1);
  });

  it('uses the next priority when the primary target is down', async () => {
    expect((await endpointsOf('svc@onprem.test'))[0]!.name).toBe('icmp-a@onprem.test');
    await nsmdO0.stop();
    const c = await connect(ns, request(`${tag}-p1`, 'svc@onprem.test', `${tag}p1`));
    expect(c.network_service_endpoint_name).toBe('icmp-b@onprem.test');
    expect(await ping(pod, dst(c))).toBe(true);
    await ns.unary('Close', c, { timeoutMs: 10_000 });
    expect(await podLinks()).toEqual([]);
  });
});
