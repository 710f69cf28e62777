/**
 * The Kubernetes (CRD) registry against a stand-in API server.
 *
 * There is no Kubernetes API server on these machines, so every test here talks to FakeApiServer
 * (./fake-api-server.ts): a real HTTPS server in this process that serves the custom-object endpoints with the API
 * server's semantics (resourceVersions, conditional writes, Status errors, watch streams with replay and 410), seeded
 * with recorded objects (./fixtures, `kubectl get -o yaml` output). The registry under test is the real one, using
 * @kubernetes/client-node over the network exactly as nsmd does in a cluster.
 */
import { status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { KubeConfig } from '@kubernetes/client-node';
import { RegistryRequestError } from '../../src/registry/embedded/index.js';
import {
  createK8sRegistry,
  K8sRegistryError,
  objectNameFor,
  parseK8sRegistryUrl,
  type K8sRegistryOptions,
} from '../../src/registry/k8s/index.js';
import { msToTimestamp, timestampToMs } from '../../src/registry/timestamp.js';
import type { NseEvent, NsEvent, Registry } from '../../src/registry/types.js';
import { endpoint, ns, nse } from '../registry/helpers.js';
import { recorder } from '../registry-etcd/util.js';
import { waitFor } from '../helpers/wait.js';
import { FakeApiServer, loadFixture, type StoredObject } from './fake-api-server.js';

const NSES = 'networkserviceendpoints';
const NSS = 'networkservices';

const servers: FakeApiServer[] = [];
const opened: Registry[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((r) => r.close()));
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function server(fixtures: StoredObject[] = []): Promise<FakeApiServer> {
  const s = await FakeApiServer.start(fixtures);
  servers.push(s);
  return s;
}

function recorded(): StoredObject[] {
  return [...loadFixture('networkservices.yaml'), ...loadFixture('networkserviceendpoints.yaml')];
}

async function open(s: FakeApiServer, extra: Partial<K8sRegistryOptions> = {}): Promise<Registry> {
  const r = await createK8sRegistry({
    namespace: 'nsm-system',
    env: { NSM_KUBECONFIG: s.kubeconfigPath },
    callTimeoutMs: 2_000,
    startTimeoutMs: 5_000,
    backoffMinMs: 20,
    backoffMaxMs: 200,
    ...extra,
  });
  opened.push(r);
  return r;
}

const names = (items: { name: string }[]) => items.map((i) => i.name).sort();

describe('parseK8sRegistryUrl', () => {
  it('takes the namespace from the URL, else NSM_K8S_NAMESPACE, else nsm-system', () => {
    expect(parseK8sRegistryUrl('k8s://')).toEqual({ namespace: 'nsm-system' });
    expect(parseK8sRegistryUrl('k8s://', { NSM_K8S_NAMESPACE: 'mesh' })).toEqual({ namespace: 'mesh' });
    expect(parseK8sRegistryUrl('k8s://team-a/', { NSM_K8S_NAMESPACE: 'mesh' })).toEqual({ namespace: 'team-a' });
  });

  it.each([
    ['etcd://a:1', /scheme must be k8s:\/\//],
    ['k8s://Team_A', /namespace "Team_A" is not a Kubernetes namespace name/],
    ['k8s://api.example:6443', /not a Kubernetes namespace name/],
    ['k8s://a/b', /not a Kubernetes namespace name/],
  ])('refuses %s with what is expected', (url, why) => {
    expect(() => parseK8sRegistryUrl(url)).toThrow(why);
    expect(() => parseK8sRegistryUrl(url)).toThrow(/expected k8s:\/\/ or k8s:\/\/<namespace>/);
  });
});

describe('object names', () => {
  it('keeps names Kubernetes accepts and derives distinct valid ones for the others', () => {
    expect(objectNameFor('icmp-responder')).toBe('icmp-responder');
    expect(objectNameFor('nse.node-1')).toBe('nse.node-1');
    const derived = ['icmp@my.cluster2', 'Web_1', 'web_1', 'WEB-1', '-x-', '@'].map(objectNameFor);
    for (const d of derived) expect(d).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/);
    expect(new Set(derived).size).toBe(derived.length);
    expect(derived[0]).toMatch(/^icmp-my\.cluster2-[0-9a-f]{10}$/);
    expect(objectNameFor('A'.repeat(300)).length).toBeLessThanOrEqual(253);
  });
});

describe('recorded API objects', () => {
  it('reads the v1 and v0.2 forms, skips an unreadable object, and never returns a lapsed endpoint', async () => {
    const s = await server(recorded());
    const r = await open(s, { foreignCleanupGraceMs: 60_000 });

    const services = await r.findServices(ns({}));
    expect(names(services)).toEqual(['secure-intranet-connectivity', 'vpn-gateway']);
    const intranet = services.find((x) => x.name === 'secure-intranet-connectivity')!;
    expect(intranet).toEqual(
      ns({
        name: 'secure-intranet-connectivity',
        payload: 'IP',
        matches: [
          { source_selector: { app: 'firewall' }, routes: [{ destination_selector: { app: 'vpn-gateway' } }] },
          { fallthrough: true, routes: [{ destination_selector: { app: 'firewall', nodeName: '{{.nodeName}}' } }] },
          { routes: [{ destination_selector: { app: 'firewall' } }] },
        ],
      }),
    );
    // v0.2 camelCase with `route`, converted as nsmctl apply converts it (v0.2 always fell through).
    expect(services.find((x) => x.name === 'vpn-gateway')).toEqual(
      ns({
        name: 'vpn-gateway',
        payload: 'IP',
        matches: [{ source_selector: { app: 'firewall' }, routes: [{ destination_selector: { app: 'vpn-gateway' } }], fallthrough: true }],
      }),
    );
    expect(await r.lookupServices(ns({}))).toEqual(expect.arrayContaining(services));
    expect(await r.findServices(ns({ name: 'broken-service' }))).toEqual([]);

    const endpoints = await r.findEndpoints(nse({}));
    expect(names(endpoints)).toEqual(['legacy-vpn', 'static-gateway', 'vpn-gateway-1']);
    expect(endpoints.find((e) => e.name === 'vpn-gateway-1')).toEqual(
      nse({
        name: 'vpn-gateway-1',
        network_service_names: ['vpn-gateway'],
        network_service_labels: { 'vpn-gateway': { labels: { app: 'vpn-gateway' } } },
        url: 'tcp://10.0.8.16:5001',
        initial_registration_time: { seconds: Date.parse('2025-03-11T09:13:21Z') / 1000, nanos: 250_000_000 },
      }),
    );
    // v0.2: one service, its endpoint labels taken from metadata.labels.
    expect(endpoints.find((e) => e.name === 'legacy-vpn')).toEqual(
      nse({
        name: 'legacy-vpn',
        network_service_names: ['vpn-gateway'],
        network_service_labels: { 'vpn-gateway': { labels: { app: 'vpn-gateway', site: 'lab' } } },
      }),
    );
    expect(names(await r.lookupEndpoints(nse({})))).toEqual(['legacy-vpn', 'static-gateway', 'vpn-gateway-1']);
    expect(await r.findEndpoints(nse({ name: 'firewall-node-2-lapsed' }))).toEqual([]);

    const rec = recorder<NseEvent>();
    r.watchEndpoints(nse({}), rec.push);
    await waitFor('initial endpoints', () => rec.events.length === 3);
    expect(rec.events.every((e) => !e.deleted && e.nse.name !== 'firewall-node-2-lapsed')).toBe(true);
  });

  it("deletes another nsmd's lapsed endpoint object after the grace period, only at the version it saw expired", async () => {
    const s = await server(recorded());
    await open(s, { foreignCleanupGraceMs: 50 });
    await waitFor('lapsed object deleted', () => s.object(NSES, 'firewall-node-2-lapsed') === undefined);
    const del = s.requests.filter((q) => q.method === 'DELETE');
    expect(del).toHaveLength(1);
    expect(del[0]!.path).toMatch(/\/networkserviceendpoints\/firewall-node-2-lapsed$/);
    expect(del[0]!.body).toMatchObject({ preconditions: { resourceVersion: '48262' } });
    // Objects without expiration_time never lapse.
    expect(s.object(NSES, 'static-gateway')).toBeDefined();
  });

  it('leaves a lapsed object alone when it was refreshed before the cleanup ran', async () => {
    const s = await server(recorded());
    await open(s, { foreignCleanupGraceMs: 300 });
    const lapsed = s.object(NSES, 'firewall-node-2-lapsed')!;
    const future = Math.floor(Date.now() / 1000) + 3600;
    // Its node came back and re-registered it (what kubectl apply does to the object is the same).
    s.apply({ ...lapsed, spec: { ...(lapsed.spec as object), expiration_time: { seconds: future, nanos: 0 } } });
    await waitFor('the cleanup attempt', () => s.requests.some((q) => q.method === 'DELETE'), 5_000);
    expect(s.object(NSES, 'firewall-node-2-lapsed')).toBeDefined();
  });
});

describe('network services', () => {
  it('registers as v1 snake_case objects, finds by template, unregisters', async () => {
    const s = await server();
    const r = await open(s);
    const web = ns({
      name: 'web',
      payload: 'ETHERNET',
      matches: [{ source_selector: { app: 'a' }, routes: [{ destination_selector: { nodeName: '{{.nodeName}}' }, weight: 2 }], metadata: { labels: { p2p: 'true' } } }],
      path_ids: ['spiffe://nsmesh.local/ns/default/pod/x'],
    });
    expect(await r.registerService(web)).toEqual(web);
    await r.registerService(ns({ name: 'db', payload: 'IP' }));

    const obj = s.object(NSS, 'web')!;
    expect(obj.apiVersion).toBe('networkservicemesh.io/v1');
    expect(obj.spec).toEqual({
      name: 'web',
      payload: 'ETHERNET',
      matches: [{ source_selector: { app: 'a' }, routes: [{ destination_selector: { nodeName: '{{.nodeName}}' }, weight: 2 }], fallthrough: false, metadata: { labels: { p2p: 'true' } } }],
      path_ids: ['spiffe://nsmesh.local/ns/default/pod/x'],
    });

    expect(names(await r.findServices(ns({})))).toEqual(['db', 'web']);
    expect(names(await r.findServices(ns({ payload: 'IP' })))).toEqual(['db']);
    expect(names(await r.findServices(ns({ name: 'web' })))).toEqual(['web']);
    expect(await r.findServices(ns({ name: 'nope' }))).toEqual([]);

    await r.unregisterService('web');
    expect(s.object(NSS, 'web')).toBeUndefined();
    expect(names(await r.findServices(ns({})))).toEqual(['db']);
    await r.unregisterService('never-registered');
  });

  it('keeps names Kubernetes refuses in spec.name under a derived object name', async () => {
    const s = await server();
    const r = await open(s);
    await r.registerService(ns({ name: 'icmp@my.cluster2' }));
    await r.registerService(ns({ name: 'Web_1', payload: 'IP' }));
    const objectName = objectNameFor('icmp@my.cluster2');
    expect(s.object(NSS, objectName)?.spec).toMatchObject({ name: 'icmp@my.cluster2' });
    expect(names(await r.findServices(ns({ name: 'icmp@my.cluster2' })))).toEqual(['icmp@my.cluster2']);
    expect(names(await r.lookupServices(ns({})))).toEqual(['Web_1', 'icmp@my.cluster2']);
    await r.unregisterService('Web_1');
    expect(s.object(NSS, objectNameFor('Web_1'))).toBeUndefined();
  });

  it('refuses an empty name and a selector Kubernetes would not hold, before writing anything', async () => {
    const s = await server();
    const r = await open(s);
    await expect(r.registerService(ns({}))).rejects.toBeInstanceOf(RegistryRequestError);
    await expect(r.registerEndpoint(nse({}))).rejects.toBeInstanceOf(RegistryRequestError);
    const bad = r.registerService(ns({ name: 'x', matches: [{ source_selector: { 'has space': 'v' } }] }));
    await expect(bad).rejects.toMatchObject({ code: status.INVALID_ARGUMENT });
    await expect(bad).rejects.toThrow(/cannot be stored as a NetworkService object: .*has space/);
    expect(s.requests.filter((q) => q.method !== 'GET')).toEqual([]);
  });

  it('watch: current matches, then changes from any writer, deleted=true on delete', async () => {
    const s = await server(recorded());
    const r = await open(s);
    const rec = recorder<NsEvent>();
    r.watchServices(ns({ payload: 'IP' }), rec.push);
    await waitFor('initial services', () => rec.has('secure-intranet-connectivity', false) && rec.has('vpn-gateway', false));
    await r.registerService(ns({ name: 'mine', payload: 'IP' }));
    // Another writer: kubectl applying a v0.2 manifest, then deleting an object.
    s.apply({
      apiVersion: 'networkservicemesh.io/v1',
      kind: 'NetworkService',
      metadata: { name: 'applied' },
      spec: { payload: 'IP', matches: [{ sourceSelector: { app: 'x' }, route: [{ destinationSelector: { app: 'y' } }] }] },
    });
    s.remove(NSS, 'vpn-gateway');
    await waitFor('changes seen', () => rec.has('mine', false) && rec.has('applied', false) && rec.has('vpn-gateway', true));
    expect(rec.of('applied')[0]!.ns.matches).toEqual([
      { source_selector: { app: 'x' }, routes: [{ destination_selector: { app: 'y' }, weight: 0 }], fallthrough: true, metadata: null },
    ]);
    expect(rec.of('mine')).toHaveLength(1);
    expect(names(await r.lookupServices(ns({})))).toEqual(['applied', 'mine', 'secure-intranet-connectivity']);
  });
});

describe('network service endpoints', () => {
  it('registers with expiry capped and the first registration time kept; finds by template; unregisters', async () => {
    const s = await server();
    const r = await open(s, { maxExpirationMs: 30_000 });
    const before = Date.now();
    const first = await r.registerEndpoint(
      nse({ ...endpoint('nse-a', 'svc', { app: 'a', color: 'red' }), expiration_time: msToTimestamp(before + 3600_000), path_ids: ['spiffe://x/y'] }),
    );
    const expiry = timestampToMs(first.expiration_time!);
    expect(expiry).toBeGreaterThanOrEqual(before + 30_000);
    expect(expiry).toBeLessThanOrEqual(Date.now() + 30_000);
    expect(s.object(NSES, 'nse-a')!.spec).toEqual({
      name: 'nse-a',
      network_service_names: ['svc'],
      network_service_labels: { svc: { labels: { app: 'a', color: 'red' } } },
      url: 'unix:///var/lib/networkservicemesh/nse-a.sock',
      expiration_time: first.expiration_time,
      initial_registration_time: first.initial_registration_time,
      path_ids: ['spiffe://x/y'],
    });
    const refreshed = await r.registerEndpoint(endpoint('nse-a', 'svc', { app: 'a', color: 'red' }));
    expect(refreshed.initial_registration_time).toEqual(first.initial_registration_time);
    expect(s.object(NSES, 'nse-a')!.metadata.generation).toBe(2);

    await r.registerEndpoint(nse({ ...endpoint('nse-b', 'svc', { app: 'b' }), network_service_names: ['svc', 'other'], url: 'tcp://198.18.0.7:5001' }));
    await r.registerEndpoint(endpoint('peer@cluster2', 'svc'));
    const find = async (t: Parameters<Registry['findEndpoints']>[0]) => names(await r.findEndpoints(t));
    expect(await find(nse({}))).toEqual(['nse-a', 'nse-b', 'peer@cluster2']);
    expect(await find(nse({ name: 'nse-b' }))).toEqual(['nse-b']);
    expect(await find(nse({ name: 'peer@cluster2' }))).toEqual(['peer@cluster2']);
    expect(await find(nse({ network_service_names: ['svc', 'other'] }))).toEqual(['nse-b']);
    expect(await find(nse({ network_service_labels: { svc: { labels: { color: 'red' } } } }))).toEqual(['nse-a']);
    expect(await find(nse({ url: '198.18.0.7' }))).toEqual(['nse-b']);
    expect(await find(nse({ expiration_time: { seconds: 1, nanos: 0 } }))).toEqual([]);
    expect(names(await r.lookupEndpoints(nse({ url: 'unix://' })))).toEqual(['nse-a', 'peer@cluster2']);

    await r.unregisterEndpoint('nse-a');
    expect(s.object(NSES, 'nse-a')).toBeUndefined();
    expect(await find(nse({}))).toEqual(['nse-b', 'peer@cluster2']);
    await r.unregisterEndpoint('nse-a');
  });

  it('an expired endpoint: deleted=true to watchers at expiration_time, never returned, its object removed by its owner', async () => {
    const s = await server();
    const r = await open(s, { maxExpirationMs: 700, foreignCleanupGraceMs: 60_000 });
    const rec = recorder<NseEvent>();
    r.watchEndpoints(nse({ network_service_names: ['svc'] }), rec.push);
    const stored = await r.registerEndpoint(endpoint('short', 'svc'));
    const expiresAt = timestampToMs(stored.expiration_time!);
    await waitFor('registration seen', () => rec.has('short', false));
    await waitFor('expiry seen', () => rec.has('short', true), 5_000);
    expect(Date.now()).toBeGreaterThanOrEqual(expiresAt);
    expect(await r.findEndpoints(nse({}))).toEqual([]);
    expect(await r.lookupEndpoints(nse({}))).toEqual([]);
    await waitFor('object deleted by its owner', () => s.object(NSES, 'short') === undefined, 5_000);
    // A registration after expiry starts anew.
    const again = await r.registerEndpoint(endpoint('short', 'svc'));
    expect(timestampToMs(again.initial_registration_time!)).toBeGreaterThanOrEqual(expiresAt);
  });

  it('watch: objects applied and deleted with kubectl, camelCase included, reach watchers', async () => {
    const s = await server();
    const r = await open(s);
    const rec = recorder<NseEvent>();
    r.watchEndpoints(nse({ network_service_names: ['svc'] }), rec.push);
    s.apply({
      apiVersion: 'networkservicemesh.io/v1',
      kind: 'NetworkServiceEndpoint',
      metadata: { name: 'by-hand' },
      spec: {
        networkServiceNames: ['svc'],
        networkServiceLabels: { svc: { labels: { app: 'hand' } } },
        url: 'tcp://198.18.0.9:5001',
        expirationTime: new Date(Date.now() + 3600_000).toISOString(),
      },
    });
    await waitFor('applied endpoint', () => rec.has('by-hand', false));
    expect(rec.of('by-hand')[0]!.nse).toMatchObject({ network_service_labels: { svc: { labels: { app: 'hand' } } }, url: 'tcp://198.18.0.9:5001' });
    expect(names(await r.lookupEndpoints(nse({ network_service_labels: { svc: { labels: { app: 'hand' } } } })))).toEqual(['by-hand']);
    s.remove(NSES, 'by-hand');
    await waitFor('deleted endpoint', () => rec.has('by-hand', true));
    expect(await r.lookupEndpoints(nse({}))).toEqual([]);
  });

  it('two nsmds on one API: each sees the other, and conflicting writes are retried on the latest version', async () => {
    const s = await server();
    const a = await open(s);
    const b = await open(s);
    const rec = recorder<NseEvent>();
    b.watchEndpoints(nse({}), rec.push);
    await a.registerEndpoint(endpoint('shared', 'svc', { by: 'a' }));
    await waitFor('b sees a', () => rec.has('shared', false));
    // Both refresh at once from possibly stale versions: one of them hits a 409 and retries.
    await Promise.all([a.registerEndpoint(endpoint('shared', 'svc', { by: 'a' })), b.registerEndpoint(endpoint('shared', 'svc', { by: 'b' }))]);
    const final = (s.object(NSES, 'shared')!.spec as { network_service_labels: { svc: { labels: { by: string } } } }).network_service_labels.svc.labels.by;
    await waitFor('both agree', async () => {
      const [fa, fb] = await Promise.all([a.lookupEndpoints(nse({ name: 'shared' })), b.lookupEndpoints(nse({ name: 'shared' }))]);
      return fa[0]?.network_service_labels.svc?.labels.by === final && fb[0]?.network_service_labels.svc?.labels.by === final;
    });
  });

  it('keeps labels and annotations others put on the object when it refreshes it', async () => {
    const s = await server();
    const r = await open(s);
    await r.registerEndpoint(endpoint('labelled', 'svc'));
    const obj = s.object(NSES, 'labelled')!;
    s.apply({ ...obj, metadata: { ...obj.metadata, labels: { team: 'net' }, annotations: { note: 'kept' } } });
    // Whether the watch has delivered the labelled version yet or not (then the replace gets a 409 and re-reads).
    await r.registerEndpoint(endpoint('labelled', 'svc'));
    const now = s.object(NSES, 'labelled')!.metadata;
    expect(now.labels).toEqual({ team: 'net' });
    expect(now.annotations).toEqual({ note: 'kept' });
    expect(now.generation).toBe(2);
  });
});

describe('watch streams', () => {
  it('after the server drops the stream: watches again from the last version, replaying what happened meanwhile', async () => {
    const s = await server(recorded());
    const r = await open(s, { foreignCleanupGraceMs: 60_000 });
    const rec = recorder<NseEvent>();
    r.watchEndpoints(nse({}), rec.push);
    await waitFor('two watches open', () => s.openWatches === 2);
    const lists = () => s.requests.filter((q) => q.method === 'GET' && q.query.watch !== 'true' && q.path.endsWith(NSES)).length;
    const listsBefore = lists();
    const lastSeen = s.resourceVersion;

    expect(s.dropWatches()).toBe(2);
    s.apply({ apiVersion: 'networkservicemesh.io/v1', kind: 'NetworkServiceEndpoint', metadata: { name: 'during-outage' }, spec: { network_service_names: ['svc'], url: 'tcp://198.18.0.3:5001' } });
    s.remove(NSES, 'static-gateway');

    await waitFor('changes made while disconnected', () => rec.has('during-outage', false) && rec.has('static-gateway', true));
    await waitFor('watches back', () => s.openWatches === 2);
    const rewatch = s.requests.filter((q) => q.query.watch === 'true' && q.path.endsWith(NSES)).at(-1)!;
    expect(rewatch.query.resourceVersion).toBe(lastSeen);
    expect(lists()).toBe(listsBefore);
    expect(names(await r.lookupEndpoints(nse({})))).toEqual(names(await r.findEndpoints(nse({}))));
  });

  it('after 410 Gone: lists again and makes the mirror equal to the server, telling watchers only the difference', async () => {
    const s = await server(recorded());
    const r = await open(s, { foreignCleanupGraceMs: 60_000 });
    const rec = recorder<NseEvent>();
    r.watchEndpoints(nse({}), rec.push);
    await waitFor('initial', () => rec.events.length === 3);
    await waitFor('two watches open', () => s.openWatches === 2);

    // Disconnected while history is compacted away: the old version can no longer be resumed.
    s.refuseWatchesWith = 503;
    s.dropWatches();
    s.remove(NSES, 'legacy-vpn');
    const vpn = s.object(NSES, 'vpn-gateway-1')!;
    s.apply({ ...vpn, spec: { ...(vpn.spec as object), url: 'tcp://10.0.8.99:5001' } });
    s.apply({ apiVersion: 'networkservicemesh.io/v1', kind: 'NetworkServiceEndpoint', metadata: { name: 'newcomer' }, spec: { network_service_names: ['svc'] } });
    s.compact();
    const eventsBefore = rec.events.length;
    s.refuseWatchesWith = undefined;

    await waitFor('re-listed', () => rec.has('legacy-vpn', true) && rec.has('newcomer', false));
    await waitFor('url change', () => rec.of('vpn-gateway-1').some((e) => e.nse.url === 'tcp://10.0.8.99:5001'));
    expect(s.goneAnswers).toBeGreaterThanOrEqual(1);
    const changes = rec.events.slice(eventsBefore).map((e) => [e.nse.name, e.deleted]);
    expect(changes).toEqual(expect.arrayContaining([['legacy-vpn', true], ['newcomer', false], ['vpn-gateway-1', false]]));
    // static-gateway did not change: nothing is replayed for it.
    expect(changes.filter(([n]) => n === 'static-gateway')).toEqual([]);
    await waitFor('watching again', () => s.openWatches === 2);
    expect(await r.lookupEndpoints(nse({}))).toEqual(expect.arrayContaining(await r.findEndpoints(nse({}))));
    expect(names(await r.lookupEndpoints(nse({})))).toEqual(['newcomer', 'static-gateway', 'vpn-gateway-1']);
  });

  it('an ERROR 410 event inside a live stream also leads to a fresh list', async () => {
    const s = await server(recorded());
    const r = await open(s, { foreignCleanupGraceMs: 60_000 });
    await waitFor('two watches open', () => s.openWatches === 2);
    const lists = () => s.requests.filter((q) => q.method === 'GET' && q.query.watch !== 'true' && !q.path.split('/').at(-1)!.includes('-')).length;
    const before = lists();
    s.remove(NSS, 'vpn-gateway');
    await waitFor('delete seen', async () => (await r.lookupServices(ns({ name: 'vpn-gateway' }))).length === 0);
    s.compact();
    expect(s.expireWatches()).toBe(2);
    await waitFor('both kinds listed again', () => lists() >= before + 2);
    await waitFor('watching again', () => s.openWatches === 2);
    expect(names(await r.lookupServices(ns({})))).toEqual(['secure-intranet-connectivity']);
  });

  it('a 410 answer to the watch request itself also leads to a fresh list', async () => {
    const s = await server();
    const r = await open(s);
    await waitFor('two watches open', () => s.openWatches === 2);
    const lists = () => s.requests.filter((q) => q.method === 'GET' && q.query.watch !== 'true').length;
    const before = lists();
    s.refuseWatchesWith = 410;
    s.dropWatches();
    await waitFor('both kinds listed again', () => lists() >= before + 2);
    s.refuseWatchesWith = undefined;
    s.apply({ apiVersion: 'networkservicemesh.io/v1', kind: 'NetworkService', metadata: { name: 'after' }, spec: {} });
    await waitFor('watching again', async () => (await r.lookupServices(ns({ name: 'after' }))).length === 1 && s.openWatches === 2);
  });

  it('a watch the server ends (timeoutSeconds) is renewed from the last version, without listing', async () => {
    const s = await server();
    const r = await open(s, { watchTimeoutSeconds: 1 });
    const rec = recorder<NsEvent>();
    r.watchServices(ns({}), rec.push);
    await r.registerService(ns({ name: 'before' }));
    const watches = () => s.requests.filter((q) => q.query.watch === 'true' && q.path.endsWith(NSS));
    const lists = () => s.requests.filter((q) => q.method === 'GET' && q.query.watch !== 'true').length;
    const listsBefore = lists();
    await waitFor('a renewed watch', () => watches().length >= 2, 5_000);
    expect(Number(watches()[1]!.query.timeoutSeconds)).toBeGreaterThanOrEqual(1);
    expect(Number(watches()[1]!.query.timeoutSeconds)).toBeLessThanOrEqual(2);
    expect(watches()[1]!.query.resourceVersion).toBe(s.object(NSS, 'before')!.metadata.resourceVersion);
    expect(lists()).toBe(listsBefore);
    s.apply({ apiVersion: 'networkservicemesh.io/v1', kind: 'NetworkService', metadata: { name: 'later' }, spec: {} });
    await waitFor('change after renewal', () => rec.has('later', false));
  });

  it('a watch that goes silent past its timeout is given up and opened again', async () => {
    const s = await server();
    await open(s, { watchTimeoutSeconds: 1, watchGraceMs: 200 });
    s.silentWatches = true;
    const watches = () => s.requests.filter((q) => q.query.watch === 'true').length;
    const before = watches();
    s.dropWatches();
    // The renewed watches never end and never speak; the registry must notice by itself.
    await waitFor('silent watches opened', () => watches() >= before + 2);
    const silentOnes = watches();
    await waitFor('silent watches given up and renewed', () => watches() >= silentOnes + 2, 6_000);
  });

  it('lookups fall back to the API while the watch is down, and the mirror catches up once it is back', async () => {
    const s = await server();
    const r = await open(s);
    await waitFor('two watches open', () => s.openWatches === 2);
    s.refuseWatchesWith = 500;
    s.dropWatches();
    const watchRequests = () => s.requests.filter((q) => q.query.watch === 'true').length;
    const before = watchRequests();
    await waitFor('both kinds tried to watch again (and were refused)', () => watchRequests() >= before + 2);
    s.apply({ apiVersion: 'networkservicemesh.io/v1', kind: 'NetworkService', metadata: { name: 'while-down' }, spec: { payload: 'IP' } });
    // Not in the mirror (no watch), but a lookup still sees it: it reads the API while the watch is down.
    expect(names(await r.lookupServices(ns({})))).toEqual(['while-down']);
    s.refuseWatchesWith = undefined;
    const rec = recorder<NsEvent>();
    r.watchServices(ns({}), rec.push);
    await waitFor('mirror caught up', () => rec.has('while-down', false));
  });
});

describe('failures', () => {
  it('an unreachable API server fails calls in time with UNAVAILABLE and says where', async () => {
    const s = await server();
    const r = await open(s);
    await s.close();
    servers.splice(servers.indexOf(s), 1);
    const started = Date.now();
    const err = await r.registerService(ns({ name: 'x' })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(K8sRegistryError);
    expect((err as K8sRegistryError).code).toBe(status.UNAVAILABLE);
    expect((err as Error).message).toContain(s.url);
    expect(Date.now() - started).toBeLessThan(2_500);
  });

  it('a hung API server: every call ends at its deadline', async () => {
    const s = await server();
    const r = await open(s, { callTimeoutMs: 300 });
    s.hang = true;
    const started = Date.now();
    await expect(r.findEndpoints(nse({}))).rejects.toThrow(/did not answer within 300 ms \(list networkserviceendpoints\)/);
    expect(Date.now() - started).toBeLessThan(1_500);
  });

  it('startup: wrong credentials, no answer or no kubeconfig fail with what to fix', async () => {
    const s = await server();
    await expect(open(s, { env: { NSM_KUBECONFIG: s.writeKubeconfigWithToken('wrong') } })).rejects.toThrow(/401 Unauthorized.*credentials were rejected/);
    s.hang = true;
    await expect(open(s, { startTimeoutMs: 500 })).rejects.toThrow(/not listed and watched within 500 ms/);
    await expect(createK8sRegistry({ namespace: 'nsm-system', env: {} })).rejects.toThrow(/set NSM_KUBECONFIG/);
  });

  it('an API without the CRDs is reported with the command to check', async () => {
    const s = await server();
    const kc = new KubeConfig();
    kc.loadFromFile(s.kubeconfigPath);
    // Point the client below a path the fake does not serve, as a cluster without the CRDs answers.
    kc.clusters = kc.clusters.map((c) => ({ ...c, server: `${s.url}/no-crds` }));
    await expect(open(s, { kubeConfig: kc })).rejects.toThrow(/404 NotFound.*kubectl get crd networkservices\.networkservicemesh\.io/);
  });
});
