/**
 * The local mesh end to end on one node: a real nsmd, real endpoints and clients in their own namespaces,
 * real gRPC over unix sockets, real veth pairs read back from the kernel.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import { ApiClient } from '../../src/api/grpc.js';
import type { Connection, NetworkServiceRequest } from '../../src/api/types.js';
import type { DeepPartial } from '../../src/api/codec.js';
import { inodeUrlOf } from '../../src/dataplane/netns.js';
import { createNetlinkDataplane } from '../../src/dataplane/veth/index.js';
import type { Dataplane } from '../../src/dataplane/types.js';
import { cleanupNetns, createNetns, ping, tag, type Netns } from '../helpers/netns.js';
import { nsmctl, runNsc, startIcmpResponder, startNsmd, waitFor, type NsmdProc } from '../helpers/mesh.js';
import { signOwnSegment } from '../../src/identity/outgoing.js';
import { toTimestamp } from '../../src/chain/elements/expire.js';
import type { Transport } from '../../src/identity/transport.js';
import { ids, testTransport } from '../helpers/identity.js';

let nsmd: NsmdProc;
let dp: Dataplane;
let ns: ApiClient<'networkservice.NetworkService'>;
let nseReg: ApiClient<'registry.NetworkServiceEndpointRegistry'>;
let admin: ApiClient<'networkservice.NetworkService'>;
let me: Transport;

/** A Request as a client makes it: its own path segment signed for nsmd, valid for `lifetimeMs`. */
async function request(req: DeepPartial<NetworkServiceRequest>, lifetimeMs = 60_000): Promise<Connection> {
  const metadata = await signOwnSegment(me, ns, req.connection!, lifetimeMs, 5000);
  return ns.unary('Request', req, { timeoutMs: 10_000, metadata });
}
const pods: Record<string, Netns> = {};

const SERVICE_YAML = `
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata:
  name: ${tag}-svc
spec:
  payload: IP
  matches:
    - source_selector: {app: blue}
      routes:
        - destination_selector: {color: blue}
    - source_selector: {app: green}
      routes:
        - destination_selector: {color: green}
    - source_selector: {app: mine}
      routes:
        - destination_selector: {owner: "{{.podName}}"}
    - source_selector: {app: picky}
      fallthrough: true
      routes:
        - destination_selector: {color: purple}
    - source_selector: {app: picky}
      routes:
        - destination_selector: {color: green}
    - source_selector: {app: strict}
      routes:
        - destination_selector: {color: purple}
    - routes:
        - destination_selector: {color: blue}
---
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata:
  name: ${tag}-any
spec:
  payload: IP
`;

function kernelRequest(pod: Netns, id: string, service: string, extra: { ifname?: string; labels?: Record<string, string>; inodeURL?: string } = {}): DeepPartial<NetworkServiceRequest> {
  return {
    connection: {
      id,
      network_service: service,
      labels: extra.labels ?? {},
      path: { index: 0, path_segments: [{ name: 'test-client', id }] },
    },
    mechanism_preferences: [
      { cls: 'LOCAL', type: 'KERNEL', parameters: { name: extra.ifname ?? `${tag}x`, inodeURL: extra.inodeURL ?? inodeUrlOf(pod.path) } },
    ],
  };
}

const linkNames = async (pod: Netns) => (await dp.snapshot(pod.path)).links.map((l) => l.ifname).filter((n) => n !== 'lo');

beforeAll(async () => {
  for (const p of ['c1', 'c2', 'c3', 'blue', 'green', 'mine']) pods[p] = await createNetns(p);
  dp = await createNetlinkDataplane();
  nsmd = await startNsmd();
  me = await testTransport(ids.pod('test-client'));
  ns = new ApiClient('networkservice.NetworkService', nsmd.url, me);
  admin = new ApiClient('networkservice.NetworkService', nsmd.url, await testTransport(ids.admin));
  nseReg = new ApiClient('registry.NetworkServiceEndpointRegistry', nsmd.url, await testTransport(ids.admin));
  const applied = await nsmctl(nsmd.url, ['apply', '-f', '-'], SERVICE_YAML);
  expect(applied.stderr).toBe('');
  expect(applied.exitCode).toBe(0);
  await startIcmpResponder(pods.blue!, { name: `${tag}-blue`, connectTo: nsmd.url, services: [`${tag}-svc`, `${tag}-any`], labels: { color: 'blue' }, cidr: '169.254.10.0/24' });
  await startIcmpResponder(pods.green!, { name: `${tag}-green`, connectTo: nsmd.url, services: [`${tag}-svc`], labels: { color: 'green' }, cidr: '169.254.20.0/24' });
  await startIcmpResponder(pods.mine!, { name: `${tag}-mine`, connectTo: nsmd.url, services: [`${tag}-svc`], labels: { owner: `${tag}-pod3` }, cidr: '169.254.30.0/24' });
});

afterAll(async () => {
  ns?.close();
  admin?.close();
  nseReg?.close();
  await nsmd?.stop();
  await dp?.close();
  await cleanupNetns();
});

describe('local mesh', () => {
  it('connects a client, carries traffic, and Close leaves nothing in either namespace', async () => {
    const before = { client: await dp.snapshot(pods.c1!.path), nse: await dp.snapshot(pods.blue!.path) };
    const r = await runNsc(pods.c1!, { name: `${tag}-c1`, connectTo: nsmd.url, services: `kernel://${tag}-svc/${tag}a?app=blue` });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    const conn = r.json[0] as Connection;
    expect(conn.network_service_endpoint_name).toBe(`${tag}-blue`);
    expect(conn.state).toBe('UP');
    expect(conn.path!.path_segments.map((s) => s.name)).toEqual([`${tag}-c1`, `nsmd-${tag}`, `${tag}-blue`]);
    const [src] = conn.context!.ip_context!.src_ip_addrs;
    const [dst] = conn.context!.ip_context!.dst_ip_addrs;
    expect(src).toMatch(/^169\.254\.10\.\d+\/32$/);
    expect(await ping(pods.c1!, dst!.split('/')[0]!)).toBe(true);
    expect(await ping(pods.blue!, src!.split('/')[0]!)).toBe(true);

    const clientSide = await dp.snapshot(pods.c1!.path);
    const link = clientSide.links.find((l) => l.ifname === `${tag}a`)!;
    expect(link.up).toBe(true);
    expect(link.mtu).toBe(1500);
    expect(link.addrs).toContain(src);
    expect(link.alias).toMatch(/^nsmesh:/);

    const closed = await nsmctl(nsmd.url, ['close', conn.id]);
    expect(closed.stderr).toBe('');
    expect(closed.exitCode).toBe(0);
    expect(await dp.snapshot(pods.c1!.path)).toEqual(before.client);
    expect(await dp.snapshot(pods.blue!.path)).toEqual(before.nse);
  });

  it('sends two clients to different endpoints by their labels', async () => {
    const blue = await request(kernelRequest(pods.c1!, `${tag}-lb1`, `${tag}-svc`, { labels: { app: 'blue' } }));
    const green = await request(kernelRequest(pods.c2!, `${tag}-lb2`, `${tag}-svc`, { labels: { app: 'green' } }));
    expect(blue.network_service_endpoint_name).toBe(`${tag}-blue`);
    expect(green.network_service_endpoint_name).toBe(`${tag}-green`);
    expect(await ping(pods.c2!, green.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!)).toBe(true);
    await ns.unary('Close', blue, { timeoutMs: 10_000 });
    await ns.unary('Close', green, { timeoutMs: 10_000 });
  });

  it('renders {{.podName}} in destination selectors from the request labels', async () => {
    const r = await runNsc(pods.c3!, { name: `${tag}-c3`, connectTo: nsmd.url, services: `${tag}-svc/${tag}m?app=mine`, env: { POD_NAME: `${tag}-pod3` } });
    expect(r.stderr).toBe('');
    expect(r.json[0].network_service_endpoint_name).toBe(`${tag}-mine`);
    await admin.unary('Close', r.json[0], { timeoutMs: 10_000 });
  });

  it('falls through a match with no candidates only when the match says so', async () => {
    const picky = await request(kernelRequest(pods.c1!, `${tag}-ft`, `${tag}-svc`, { labels: { app: 'picky' } }));
    expect(picky.network_service_endpoint_name).toBe(`${tag}-green`);
    await ns.unary('Close', picky, { timeoutMs: 10_000 });
    const err = await request(kernelRequest(pods.c1!, `${tag}-st`, `${tag}-svc`, { labels: { app: 'strict' } })).catch((e) => e);
    expect(err.code).toBe(status.NOT_FOUND);
    expect(err.details).toContain(`${tag}-svc`);
    expect(await linkNames(pods.c1!)).toEqual([]);
  });

  it('never selects an expired endpoint', async () => {
    // Registered for 300 ms at a URL that would fail anyway; it must vanish and never be tried.
    await nseReg.unary(
      'Register',
      { name: `${tag}-ghost`, network_service_names: [`${tag}-any`], url: `unix://${nsmd.dir}/ghost.sock`, expiration_time: toTimestamp(Date.now() + 300) },
      { timeoutMs: 5000 },
    );
    await waitFor('the ghost registration to expire', async () => (await nseReg.collect('Find', { network_service_endpoint: { name: `${tag}-ghost` } }, { timeoutMs: 1000 })).length === 0);
    for (let i = 0; i < 4; i++) {
      const c = await request(kernelRequest(pods.c2!, `${tag}-ex${i}`, `${tag}-any`, { ifname: `${tag}e${i}` }));
      expect(c.network_service_endpoint_name).toBe(`${tag}-blue`);
      await ns.unary('Close', c, { timeoutMs: 10_000 });
    }
  });

  it('tries the next candidate when an endpoint is dead', async () => {
    await nseReg.unary('Register', { name: `${tag}-dead`, network_service_names: [`${tag}-any`], url: `unix://${nsmd.dir}/dead.sock` }, { timeoutMs: 5000 });
    for (let i = 0; i < 4; i++) {
      const c = await request(kernelRequest(pods.c2!, `${tag}-dd${i}`, `${tag}-any`, { ifname: `${tag}d${i}` }));
      expect(c.network_service_endpoint_name).toBe(`${tag}-blue`);
      await ns.unary('Close', c, { timeoutMs: 10_000 });
    }
    await nseReg.unary('Unregister', { name: `${tag}-dead` }, { timeoutMs: 5000 });
  });

  it('treats a repeated Request as a refresh of the same connection', async () => {
    const req = kernelRequest(pods.c1!, `${tag}-rf`, `${tag}-svc`, { labels: { app: 'blue' }, ifname: `${tag}r` });
    const first = await request(req);
    const again = await request({ connection: first, mechanism_preferences: [first.mechanism!] });
    const lost = await request(req);
    expect(again.context!.ip_context!.src_ip_addrs).toEqual(first.context!.ip_context!.src_ip_addrs);
    expect(lost.path!.path_segments[1]!.id).toBe(first.path!.path_segments[1]!.id);
    expect((await linkNames(pods.c1!)).filter((n) => n === `${tag}r`)).toHaveLength(1);
    await ns.unary('Close', again, { timeoutMs: 10_000 });
    expect(await linkNames(pods.c1!)).toEqual([]);
  });

  it('closes a connection that is not refreshed before it expires, devices and all', async () => {
    const c = await request(kernelRequest(pods.c2!, `${tag}-lt`, `${tag}-svc`, { labels: { app: 'green' }, ifname: `${tag}l` }), 1500);
    expect(await linkNames(pods.c2!)).toEqual([`${tag}l`]);
    await waitFor('the expired connection to be removed', async () => (await linkNames(pods.c2!)).length === 0, 10_000);
    expect(await linkNames(pods.green!)).toEqual([]);
    const listed = async () => JSON.parse((await nsmctl(nsmd.url, ['get', 'connections', '--output', 'json'])).stdout) as Connection[];
    await waitFor('nsmd to forget the expired connection', async () => !(await listed()).some((x) => x.id === c.path!.path_segments[1]!.id));
    const err = await ns.unary('Close', c, { timeoutMs: 5000 }).catch((e) => e);
    expect(err.code).toBe(status.NOT_FOUND);
  });

  describe('refuses bad input with an actionable status and leaves the kernel untouched', () => {
    const cases: [string, () => DeepPartial<NetworkServiceRequest>, status, RegExp][] = [
      ['an unknown service', () => kernelRequest(pods.c1!, `${tag}-b1`, `${tag}-nope`), status.NOT_FOUND, /network service ".*-nope" is not found/],
      ['an interface name over 15 characters', () => kernelRequest(pods.c1!, `${tag}-b2`, `${tag}-any`, { ifname: 'a-very-long-name0' }), status.INVALID_ARGUMENT, /at most 15/],
      ['a malformed inodeURL', () => kernelRequest(pods.c1!, `${tag}-b3`, `${tag}-any`, { inodeURL: 'inode://x/y' }), status.INVALID_ARGUMENT, /inodeURL/],
      ['a namespace that does not exist', () => kernelRequest(pods.c1!, `${tag}-b4`, `${tag}-any`, { inodeURL: 'inode://4/1' }), status.NOT_FOUND, /does not exist/],
      ['a label value over the limit', () => kernelRequest(pods.c1!, `${tag}-b5`, `${tag}-any`, { labels: { app: 'x'.repeat(64) } }), status.INVALID_ARGUMENT, /at most 63/],
    ];
    for (const [what, req, code, msg] of cases) {
      it(what, async () => {
        const err = await request(req()).catch((e) => e);
        expect(err.code).toBe(code);
        expect(err.details).toMatch(msg);
        expect(await linkNames(pods.c1!)).toEqual([]);
      });
    }

    it('an interface name already taken', async () => {
      const first = await request(kernelRequest(pods.c1!, `${tag}-t1`, `${tag}-any`, { ifname: `${tag}t` }));
      const err = await request(kernelRequest(pods.c1!, `${tag}-t2`, `${tag}-any`, { ifname: `${tag}t` })).catch((e) => e);
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details).toMatch(/already exists/);
      expect(await linkNames(pods.c1!)).toEqual([`${tag}t`]);
      await ns.unary('Close', first, { timeoutMs: 10_000 });
    });

    it('a Close for an unknown id', async () => {
      const err = await ns.unary('Close', { id: `${tag}-unknown` }, { timeoutMs: 5000 }).catch((e) => e);
      expect(err.code).toBe(status.NOT_FOUND);
      expect(err.details).toContain(`${tag}-unknown`);
    });

    it('malformed NetworkService YAML', async () => {
      const r = await nsmctl(nsmd.url, ['apply', '-f', '-'], 'apiVersion: networkservicemesh.io/v1\nkind: NetworkService\nmetadata: {name: bad}\nspec:\n  matches: [{routes: [{destination_selector: [1,2]}]}]\n');
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(/destination_selector/);
    });

    it('a malformed NSM_NETWORK_SERVICES entry in nsc', async () => {
      const r = await runNsc(pods.c1!, { name: `${tag}-bad`, connectTo: nsmd.url, services: 'kernel://svc/interface-name-too-long' });
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(/accepted forms/);
    });
  });

  it('keeps connections across an nsmd restart and still closes them cleanly', async () => {
    const c = await request(kernelRequest(pods.c3!, `${tag}-rs`, `${tag}-svc`, { labels: { app: 'green' }, ifname: `${tag}s` }));
    await nsmd.stop();
    nsmd = await startNsmd({ dir: nsmd.dir });
    expect(await linkNames(pods.c3!)).toEqual([`${tag}s`]);
    expect(await ping(pods.c3!, c.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!)).toBe(true);
    const refreshed = await request({ connection: c, mechanism_preferences: [c.mechanism!] });
    expect(refreshed.context!.ip_context!.src_ip_addrs).toEqual(c.context!.ip_context!.src_ip_addrs);
    await ns.unary('Close', refreshed, { timeoutMs: 10_000 });
    expect(await linkNames(pods.c3!)).toEqual([]);
    expect(await linkNames(pods.green!)).toEqual([]);
  });
});
