import type { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { messageCodec } from '../../src/api/codec.js';
import { RegistryRequestError } from '../../src/registry/embedded/index.js';
import { createEtcdRegistry, parseEtcdRegistryUrl, type EtcdRegistryOptions } from '../../src/registry/etcd/index.js';
import { msToTimestamp, timestampToMs } from '../../src/registry/timestamp.js';
import type { NseEvent, NsEvent, Registry } from '../../src/registry/types.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { endpoint, ns, nse } from '../registry/helpers.js';
import { waitFor } from '../helpers/wait.js';
import { freshPrefix, rawClient, recorder } from './util.js';

let etcd: EtcdServer;
let raw: Etcd3;
const opened: Registry[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
  raw = rawClient(etcd.endpoint);
});
afterAll(async () => {
  raw?.close();
  await etcd?.cleanup();
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((r) => r.close()));
});

async function open(prefix: string, extra: Partial<EtcdRegistryOptions> = {}): Promise<Registry> {
  const r = await createEtcdRegistry({ endpoints: [etcd.endpoint], prefix, ...extra });
  opened.push(r);
  return r;
}

describe('parseEtcdRegistryUrl', () => {
  it('accepts host:port lists', () => {
    expect(parseEtcdRegistryUrl('etcd://127.0.0.1:2379')).toEqual({ endpoints: ['127.0.0.1:2379'] });
    expect(parseEtcdRegistryUrl('etcd://a.example:2379,b:2379,[::1]:2380/')).toEqual({
      endpoints: ['a.example:2379', 'b:2379', '[::1]:2380'],
    });
  });

  it.each([
    ['http://127.0.0.1:2379', /scheme must be etcd:\/\//],
    ['etcd://', /no endpoints/],
    ['etcd://host', /has no port/],
    ['etcd://host:', /has no port/],
    ['etcd://a:1,,b:2', /empty endpoint/],
    ['etcd://a:70000', /out of range/],
    ['etcd://a:0', /out of range/],
    ['etcd://a:1/registry', /path, query/],
    ['etcd://user@a:1', /path, query, credentials/],
    ['etcd://a:b:c', /not host:port/],
  ])('rejects %s clearly', (url, why) => {
    expect(() => parseEtcdRegistryUrl(url)).toThrow(why);
    expect(() => parseEtcdRegistryUrl(url)).toThrow(/invalid etcd registry URL .*expected etcd:\/\/host:port/);
  });
});

describe('etcd registry: services', () => {
  it('registers, finds by template, stores protobuf under <prefix>ns/<name>, unregisters', async () => {
    const prefix = freshPrefix();
    const r = await open(prefix);
    const stored = await r.registerService(ns({ name: 'web', payload: 'ETHERNET' }));
    expect(stored).toEqual(ns({ name: 'web', payload: 'ETHERNET' }));
    await r.registerService(ns({ name: 'db', payload: 'IP' }));

    const bytes = await raw.get(`${prefix}ns/web`).buffer();
    expect(bytes).not.toBeNull();
    expect(messageCodec('registry.NetworkService').decode(bytes!)).toEqual(stored);

    const names = async (t: Parameters<Registry['findServices']>[0]) =>
      (await r.findServices(t)).map((s) => s.name).sort();
    expect(await names(ns({}))).toEqual(['db', 'web']);
    expect(await names(ns({ name: 'web' }))).toEqual(['web']);
    expect(await names(ns({ payload: 'IP' }))).toEqual(['db']);
    expect(await names(ns({ name: 'nope' }))).toEqual([]);

    await r.unregisterService('web');
    expect(await names(ns({}))).toEqual(['db']);
    expect(await raw.get(`${prefix}ns/web`).string()).toBeNull();
    await r.unregisterService('never-registered');
  });

  it('reads registries larger than one range page, for finds and for a new instance\'s watch state', async () => {
    const prefix = freshPrefix();
    const writer = await open(prefix);
    const names = Array.from({ length: 1_234 }, (_, i) => `svc-${String(i).padStart(4, '0')}`);
    for (let i = 0; i < names.length; i += 200) {
      await Promise.all(names.slice(i, i + 200).map((name) => writer.registerService(ns({ name }))));
    }
    expect((await writer.findServices(ns({}))).map((s) => s.name).sort()).toEqual(names);
    const reader = await open(prefix);
    const rec = recorder<NsEvent>();
    reader.watchServices(ns({}), rec.push);
    await waitFor('initial state of all services', () => rec.events.length === names.length);
    expect(new Set(rec.events.map((e) => e.ns.name)).size).toBe(names.length);
  });

  it('refuses an empty name', async () => {
    const r = await open(freshPrefix());
    await expect(r.registerService(ns({}))).rejects.toBeInstanceOf(RegistryRequestError);
    await expect(r.registerEndpoint(nse({}))).rejects.toBeInstanceOf(RegistryRequestError);
  });

  it('watch: current matches first, then puts and deleted=true on unregister', async () => {
    const r = await open(freshPrefix());
    await r.registerService(ns({ name: 'a', payload: 'IP' }));
    await r.registerService(ns({ name: 'b', payload: 'ETHERNET' }));
    const rec = recorder<NsEvent>();
    const stop = r.watchServices(ns({ payload: 'IP' }), rec.push);
    await waitFor('initial service a', () => rec.has('a', false));
    await r.registerService(ns({ name: 'c', payload: 'IP' }));
    await r.unregisterService('a');
    await waitFor('c put and a deleted', () => rec.has('c', false) && rec.has('a', true));
    expect(rec.has('b', false)).toBe(false);
    expect(rec.events.map((e) => [e.ns.name, e.deleted])).toEqual([
      ['a', false],
      ['c', false],
      ['a', true],
    ]);
    stop();
  });
});

describe('etcd registry: endpoints', () => {
  it('registers with a capped expiration and its own lease; refresh keeps initial time, swaps the lease', async () => {
    const prefix = freshPrefix();
    const r = await open(prefix, { maxExpirationMs: 30_000 });
    const before = Date.now();
    const first = await r.registerEndpoint(
      nse({ ...endpoint('nse-1', 'svc'), expiration_time: msToTimestamp(Date.now() + 3_600_000) }),
    );
    const exp = timestampToMs(first.expiration_time!);
    expect(exp).toBeGreaterThanOrEqual(before + 30_000);
    expect(exp).toBeLessThanOrEqual(Date.now() + 30_000);
    const initial = first.initial_registration_time!;
    expect(timestampToMs(initial)).toBeGreaterThanOrEqual(before - 1);

    const kv1 = (await raw.getAll().prefix(`${prefix}nse/`).exec()).kvs;
    expect(kv1).toHaveLength(1);
    expect(messageCodec('registry.NetworkServiceEndpoint').decode(kv1[0]!.value)).toEqual(first);
    const lease1 = kv1[0]!.lease;
    expect(lease1).not.toBe('0');
    const ttl1 = await raw.leaseClient.leaseTimeToLive({ ID: lease1 });
    // Whole seconds, rounded up from the time left when the lease was granted.
    expect(Number(ttl1.grantedTTL)).toBeGreaterThanOrEqual(30);
    expect(Number(ttl1.grantedTTL)).toBeLessThanOrEqual(31);

    const refreshed = await r.registerEndpoint(endpoint('nse-1', 'svc'));
    expect(refreshed.initial_registration_time).toEqual(initial);
    const kv2 = (await raw.getAll().prefix(`${prefix}nse/`).exec()).kvs;
    expect(kv2[0]!.lease).not.toBe(lease1);
    // The replaced lease is revoked rather than left to run out.
    expect(Number((await raw.leaseClient.leaseTimeToLive({ ID: lease1 })).TTL)).toBe(-1);

    expect((await r.findEndpoints(nse({ name: 'nse-1' }))).map((e) => e.name)).toEqual(['nse-1']);
    await r.unregisterEndpoint('nse-1');
    expect(await r.findEndpoints(nse({}))).toEqual([]);
    expect(await raw.getAll().prefix(`${prefix}nse/`).keys()).toEqual([]);
    expect(Number((await raw.leaseClient.leaseTimeToLive({ ID: kv2[0]!.lease })).TTL)).toBe(-1);
  });

  it('finds by template: labels per service, names subset, url substring', async () => {
    const r = await open(freshPrefix());
    await r.registerEndpoint(endpoint('fwd-1', 'forwarder', { p2p: 'true' }));
    await r.registerEndpoint(endpoint('fwd-2', 'forwarder', { p2p: 'false' }));
    await r.registerEndpoint(
      nse({
        name: 'multi',
        network_service_names: ['a', 'b'],
        network_service_labels: { a: { labels: { x: '1' } } },
        url: 'tcp://10.0.0.7:5001',
      }),
    );
    const names = async (t: Parameters<Registry['findEndpoints']>[0]) =>
      (await r.findEndpoints(t)).map((e) => e.name).sort();
    expect(await names(nse({}))).toEqual(['fwd-1', 'fwd-2', 'multi']);
    expect(await names(nse({ network_service_labels: { forwarder: { labels: { p2p: 'true' } } } }))).toEqual(['fwd-1']);
    expect(await names(nse({ network_service_names: ['forwarder'] }))).toEqual(['fwd-1', 'fwd-2']);
    expect(await names(nse({ network_service_names: ['b', 'a'] }))).toEqual(['multi']);
    expect(await names(nse({ network_service_names: ['a', 'c'] }))).toEqual([]);
    expect(await names(nse({ url: '10.0.0.7' }))).toEqual(['multi']);
    expect(await names(nse({ name: 'fwd-2', network_service_names: ['forwarder'] }))).toEqual(['fwd-2']);
  });

  it('never returns an expired endpoint although etcd still holds its key', async () => {
    const prefix = freshPrefix();
    const r = await open(prefix);
    // 1.05 s asks for a 2 s lease, so the key outlives expiration_time by almost a second.
    const expiresAt = Date.now() + 1_050;
    await r.registerEndpoint(nse({ ...endpoint('short', 'svc'), expiration_time: msToTimestamp(expiresAt) }));
    expect(await r.findEndpoints(nse({ name: 'short' }))).toHaveLength(1);
    await waitFor('expiration_time to pass', () => Date.now() > expiresAt + 5);
    const [found, stillInEtcd] = await Promise.all([
      r.findEndpoints(nse({ name: 'short' })),
      raw.get(`${prefix}nse/short`).buffer(),
    ]);
    expect(found).toEqual([]);
    expect(stillInEtcd).not.toBeNull();
  });

  it('watch: initial matches, put, deleted=true on unregister and on expiry', async () => {
    const prefix = freshPrefix();
    const r = await open(prefix);
    await r.registerEndpoint(endpoint('old', 'svc'));
    await r.registerEndpoint(endpoint('other', 'elsewhere'));
    const rec = recorder<NseEvent>();
    const stop = r.watchEndpoints(nse({ network_service_names: ['svc'] }), rec.push);
    await waitFor('initial event for old', () => rec.has('old', false));

    await r.registerEndpoint(endpoint('new', 'svc'));
    await waitFor('put of new', () => rec.has('new', false));
    await r.unregisterEndpoint('new');
    await waitFor('deleted=true for new', () => rec.has('new', true));

    const expiresAt = Date.now() + 1_500;
    await r.registerEndpoint(nse({ ...endpoint('brief', 'svc'), expiration_time: msToTimestamp(expiresAt) }));
    await waitFor('deleted=true for brief on expiry', () => rec.has('brief', true), 5_000);
    expect(Date.now()).toBeGreaterThanOrEqual(expiresAt - 5);
    // Its lease (2 s) ends after expiration_time; etcd's own delete must not produce a second event.
    const gone = async (name: string) => (await raw.get(`${prefix}nse/${name}`).buffer()) === null;
    await waitFor('etcd to drop the key', () => gone('brief'), 5_000);
    await r.registerEndpoint(endpoint('marker', 'svc'));
    await waitFor('marker', () => rec.has('marker', false));
    expect(rec.of('brief').map((e) => e.deleted)).toEqual([false, true]);
    expect(rec.has('other', false)).toBe(false);
    expect(rec.events.find((e) => e.deleted && e.nse.name === 'new')?.nse.url).toContain('new.sock');
    stop();
  });

  it('two instances (two nodes) see each other\'s endpoints', async () => {
    const prefix = freshPrefix();
    const node1 = await open(prefix);
    const node2 = await open(prefix);
    const rec2 = recorder<NseEvent>();
    node2.watchEndpoints(nse({}), rec2.push);
    await node1.registerEndpoint(endpoint('on-node1', 'svc'));
    await node2.registerEndpoint(endpoint('on-node2', 'svc'));
    expect((await node1.findEndpoints(nse({}))).map((e) => e.name).sort()).toEqual(['on-node1', 'on-node2']);
    expect((await node2.findEndpoints(nse({ name: 'on-node1' }))).map((e) => e.name)).toEqual(['on-node1']);
    await waitFor('node2 watcher sees node1 endpoint', () => rec2.has('on-node1', false));
    await node1.unregisterEndpoint('on-node1');
    await waitFor('node2 watcher sees node1 unregister', () => rec2.has('on-node1', true));
  });

  it('an instance closed without unregistering: its endpoints vanish within the lease TTL, services stay', async () => {
    const prefix = freshPrefix();
    const dying = await createEtcdRegistry({ endpoints: [etcd.endpoint], prefix });
    const survivor = await open(prefix);
    const rec = recorder<NseEvent>();
    survivor.watchEndpoints(nse({}), rec.push);
    await dying.registerService(ns({ name: 'svc' }));
    const registered = await dying.registerEndpoint(
      nse({ ...endpoint('orphan', 'svc'), expiration_time: msToTimestamp(Date.now() + 2_000) }),
    );
    await waitFor('survivor sees orphan', () => rec.has('orphan', false));
    await dying.close();
    // Nothing is removed on close: an nsmd restart must not drop the node's endpoints.
    expect(await survivor.findEndpoints(nse({ name: 'orphan' }))).toHaveLength(1);

    await waitFor('orphan deleted for watchers', () => rec.has('orphan', true), 5_000);
    expect(Date.now()).toBeGreaterThanOrEqual(timestampToMs(registered.expiration_time!) - 5);
    const gone = async () => (await raw.get(`${prefix}nse/orphan`).buffer()) === null;
    await waitFor('lease to remove the key', gone, 5_000);
    expect(await survivor.findEndpoints(nse({}))).toEqual([]);
    expect((await survivor.findServices(ns({}))).map((s) => s.name)).toEqual(['svc']);
  });

  it('a lost lease is replaced: the owner re-registers an endpoint that is still valid', async () => {
    const prefix = freshPrefix();
    const owner = await open(prefix);
    const other = await open(prefix);
    const rec = recorder<NseEvent>();
    other.watchEndpoints(nse({}), rec.push);
    await owner.registerEndpoint(endpoint('kept', 'svc'));
    const lease = (await raw.getAll().prefix(`${prefix}nse/`).exec()).kvs[0]!.lease;
    // What etcd does when a lease runs out while its owner cannot reach etcd.
    await raw.leaseClient.leaseRevoke({ ID: lease });
    await waitFor('watchers see the loss', () => rec.has('kept', true));
    await waitFor('owner re-registers with a new lease', async () => {
      const kvs = (await raw.getAll().prefix(`${prefix}nse/`).exec()).kvs;
      return kvs.length === 1 && kvs[0]!.lease !== lease && kvs[0]!.lease !== '0';
    });
    await waitFor('watchers see it back', () => rec.of('kept').length === 3);
    expect(rec.of('kept').map((e) => e.deleted)).toEqual([false, true, false]);
  });

  it('an endpoint deleted by someone else while its lease lives is given up, not resurrected', async () => {
    const prefix = freshPrefix();
    const owner = await open(prefix);
    const rec = recorder<NseEvent>();
    owner.watchEndpoints(nse({}), rec.push);
    await owner.registerEndpoint(endpoint('victim', 'svc'));
    await waitFor('put seen', () => rec.has('victim', false));
    const lease = (await raw.getAll().prefix(`${prefix}nse/`).exec()).kvs[0]!.lease;
    await raw.delete().key(`${prefix}nse/victim`);
    await waitFor('delete seen', () => rec.has('victim', true));
    // Giving up revokes the now keyless lease; a repair would have left it alone and put a new key.
    await waitFor('owner to give the endpoint up', async () =>
      Number((await raw.leaseClient.leaseTimeToLive({ ID: lease })).TTL) === -1,
    );
    expect(await owner.findEndpoints(nse({ name: 'victim' }))).toEqual([]);
    expect(await raw.get(`${prefix}nse/victim`).buffer()).toBeNull();
    expect(rec.of('victim').map((e) => e.deleted)).toEqual([false, true]);
  });
});
