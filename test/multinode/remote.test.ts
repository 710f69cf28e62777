/**
 * Two nodes on one underlay, a real etcd as the shared registry, nsmd in each node namespace: a client pod
 * on node 0 reaches an endpoint pod on node 1 through a VXLAN tunnel that each nsmd builds on its side.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { EmbeddedIssuer } from '../../src/identity/issuer.js';
import { ApiClient } from '../../src/api/grpc.js';
import type { Connection, ConnectionEvent, DeepPartial, NetworkServiceRequest } from '../../src/api/types.js';
import { inodeUrlOf } from '../../src/dataplane/netns.js';
import { createNetlinkDataplane } from '../../src/dataplane/veth/index.js';
import type { Dataplane } from '../../src/dataplane/types.js';
import { signOwnSegment } from '../../src/identity/outgoing.js';
import type { Transport } from '../../src/identity/transport.js';
import { ids, testTransport } from '../helpers/identity.js';
import { nsmctl, startIcmpResponder, type EndpointProc } from '../helpers/mesh.js';
import { createNetns, ping, tag, type Netns } from '../helpers/netns.js';
import { createUnderlay, startEtcdIn, startNsmdOnNode, type NodeNsmdProc, type Underlay, type UnderlayEtcd } from '../helpers/nodes.js';
import { waitFor } from '../helpers/wait.js';

let ul: Underlay;
let etcd: UnderlayEtcd;
let a: NodeNsmdProc;
let b: NodeNsmdProc;
let pod: Netns;
let nsePod: Netns;
let nse: EndpointProc;
let dp: Dataplane;
let me: Transport;
let ns: ApiClient<'networkservice.NetworkService'>;
const service = `${tag}-remote`;

beforeAll(async () => {
  ul = await createUnderlay(2);
  etcd = await startEtcdIn(ul);
  const env = { NSM_REGISTRY_EXPIRATION: '3s' };
  a = await startNsmdOnNode(ul.nodes[0]!, { registryUrl: etcd.url, env });
  b = await startNsmdOnNode(ul.nodes[1]!, { registryUrl: etcd.url, env });
  pod = await createNetns('pod');
  nsePod = await createNetns('nsepod');
  nse = await startIcmpResponder(nsePod, { name: `${tag}-far`, connectTo: b.url, services: [service], cidr: '169.254.40.0/22' });
  dp = await createNetlinkDataplane();
  me = await testTransport(ids.pod(`${tag}-client`));
  ns = new ApiClient('networkservice.NetworkService', a.url, me);
}, 60_000);

afterAll(async () => {
  ns?.close();
  await dp?.close();
  await ul?.cleanup();
});

function kernelRequest(id: string, ifname: string): DeepPartial<NetworkServiceRequest> {
  return {
    connection: { id, network_service: service, path: { index: 0, path_segments: [{ name: 'client', id }] } },
    mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: ifname, inodeURL: inodeUrlOf(pod.path) } }],
  };
}

async function request(id: string, ifname: string): Promise<Connection> {
  const r = kernelRequest(id, ifname);
  const metadata = await signOwnSegment(me, ns, r.connection!, 60_000, 5000);
  return ns.unary('Request', r, { timeoutMs: 15_000, metadata });
}

const links = async (n: Netns) => (await dp.snapshot(n.path)).links.filter((l) => l.ifname !== 'lo');
const dst = (c: Connection) => c.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!;

describe('remote connections', () => {
  it('finds the endpoint on the other node through etcd and carries traffic over VXLAN', async () => {
    const c = await request(`${tag}-r1`, `${tag}v`);
    expect(c.network_service_endpoint_name).toBe(`${tag}-far`);
    expect(c.path!.path_segments.map((s) => s.name)).toEqual(['client', a.name, b.name, `${tag}-far`]);
    const [mine] = await links(pod);
    expect(mine!.kind).toBe('vxlan');
    expect(mine!.mtu).toBe(1500 - 54);
    expect(c.context!.MTU).toBe(1500 - 54);
    expect(await ping(pod, dst(c))).toBe(true);
    await ns.unary('Close', c, { timeoutMs: 10_000 });
    expect(await links(pod)).toEqual([]);
    await waitFor('the far end to be removed', async () => (await links(nsePod)).length === 0);
  });

  it('gives concurrent remote connections distinct VNIs, and all of them carry traffic', async () => {
    const n = 100;
    const conns = await Promise.all(Array.from({ length: n }, (_, i) => request(`${tag}-m${i}`, `${tag}m${i}`)));
    const shown = JSON.parse((await execa('ip', ['-n', pod.name, '-d', '-j', 'link', 'show', 'type', 'vxlan'])).stdout) as { linkinfo: { info_data: { id: number } } }[];
    const vnis = new Set(shown.map((l) => l.linkinfo.info_data.id));
    expect(shown).toHaveLength(n);
    expect(vnis.size).toBe(n);
    for (let i = 0; i < n; i += 10) {
      const ok = await Promise.all(conns.slice(i, i + 10).map(async (c) => ping(pod, dst(c))));
      expect(ok.every(Boolean)).toBe(true);
    }
    await Promise.all(conns.map((c) => ns.unary('Close', c, { timeoutMs: 20_000 })));
    expect(await links(pod)).toEqual([]);
    await waitFor('every far end to be removed', async () => (await links(nsePod)).length === 0);
  });

  it('tears down both ends when the serving node closes the connection', async () => {
    const c = await request(`${tag}-r2`, `${tag}w`);
    const farId = c.path!.path_segments[2]!.id;
    const r = await nsmctl(b.url, ['close', farId]);
    expect(r.stderr).toBe('');
    await waitFor('the client end to be removed after the far close', async () => (await links(pod)).length === 0);
    expect(await links(nsePod)).toEqual([]);
  });

  it('gets registrations back after etcd restarts with its data wiped', async () => {
    const reg = new ApiClient('registry.NetworkServiceEndpointRegistry', a.url, me);
    const find = async () => (await reg.collect('Find', { network_service_endpoint: { name: `${tag}-far` } }, { timeoutMs: 2000 })).length;
    try {
      expect(await find()).toBe(1);
      await etcd.restart({ wipe: true });
      await waitFor('the endpoint to be registered again', async () => (await find()) === 1, 15_000);
      // The endpoint registered its service through node 1 too; both came back from node 1's registrations.
      const c = await request(`${tag}-r4`, `${tag}e`);
      expect(await ping(pod, dst(c))).toBe(true);
      await ns.unary('Close', c, { timeoutMs: 10_000 });
    } finally {
      reg.close();
    }
  });

  it('refuses a peer whose certificate is from a trust domain it does not trust', async () => {
    const dir = fs.mkdtempSync('/tmp/nsmevil-');
    const foreign = await EmbeddedIssuer.start({ trustDomain: 'evil.test', stateDir: path.join(dir, 'ca') });
    try {
      const socket = await foreign.addWorkload('spiffe://evil.test/nsmesh/nsmd/intruder', path.join(dir, 'w.sock'));
      const dist = path.resolve(import.meta.dirname, '../../dist/src');
      // The remote API is reachable only on the underlay, so the probe runs inside node 0.
      const probe = `
        const { connectX509Source } = await import('${dist}/identity/workload-client.js');
        const { sourceTransport } = await import('${dist}/identity/transport.js');
        const { ApiClient } = await import('${dist}/api/grpc.js');
        const t = sourceTransport(await connectX509Source('${socket}', { timeoutMs: 5000 }));
        const c = new ApiClient('networkservice.NetworkService', '${b.remoteUrl}', t);
        try { await c.unary('Close', { id: 'x' }, { timeoutMs: 3000 }); console.log('ACCEPTED'); }
        catch (e) { console.log('REFUSED ' + e.code); }
        process.exit(0);`;
      const r = await execa('ip', ['netns', 'exec', ul.nodes[0]!.name, 'node', '--input-type=module', '-e', probe]);
      expect(r.stdout).toMatch(/^REFUSED 14/);
    } finally {
      await foreign.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports DOWN when the other node dies, and its endpoints leave the registry within the lease TTL', async () => {
    const c = await request(`${tag}-r3`, `${tag}d`);
    const mon = new ApiClient('connection.MonitorConnection', a.url, me);
    const events: ConnectionEvent[] = [];
    const stream = mon.stream('MonitorConnections', { path_segments: [{ id: `${tag}-r3` }] });
    stream.on('data', (e: ConnectionEvent) => events.push(e));
    stream.on('error', () => {});
    await waitFor('the initial state', () => events.length > 0);
    const t0 = Date.now();
    await b.stop('SIGKILL');
    await waitFor('a DOWN update', () => events.some((e) => Object.values(e.connections).some((x) => x.state === 'DOWN')), 10_000);
    expect(Date.now() - t0).toBeLessThan(5_000);
    const reg = new ApiClient('registry.NetworkServiceEndpointRegistry', a.url, me);
    await waitFor('the dead node\'s endpoint to leave the registry', async () => (await reg.collect('Find', { network_service_endpoint: { name: `${tag}-far` } }, { timeoutMs: 2000 })).length === 0, 10_000);
    stream.cancel();
    mon.close();
    reg.close();
    await ns.unary('Close', c, { timeoutMs: 10_000 });
    expect(await links(pod)).toEqual([]);
    await nse.stop();
  });
});
