import { afterEach, describe, expect, it, vi } from 'vitest';
import { createEmbeddedRegistry, RegistryRequestError } from '../../src/registry/embedded/index.js';
import { msToTimestamp } from '../../src/registry/timestamp.js';
import type { NseEvent, NsEvent, Registry } from '../../src/registry/types.js';
import { endpoint, nse, ns, settle } from './helpers.js';
import { waitFor } from '../helpers/wait.js';

const T0 = 1_700_000_000_000;

function clock(start = T0) {
  let t = start;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

let registry: Registry | undefined;
afterEach(async () => {
  await registry?.close();
  registry = undefined;
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('embedded registry: endpoints', () => {
  it('caps expiration_time at now + max and fills it when unset', async () => {
    const c = clock();
    registry = await createEmbeddedRegistry({ now: c.now, maxExpirationMs: 60_000 });

    const unset = await registry.registerEndpoint(endpoint('a', 'svc'));
    expect(unset.expiration_time).toEqual(msToTimestamp(T0 + 60_000));

    const tooLate = await registry.registerEndpoint(
      nse({ name: 'b', expiration_time: msToTimestamp(T0 + 3_600_000) }),
    );
    expect(tooLate.expiration_time).toEqual(msToTimestamp(T0 + 60_000));

    const sooner = { seconds: Math.floor(T0 / 1000) + 10, nanos: 123_456_789 };
    const kept = await registry.registerEndpoint(nse({ name: 'c', expiration_time: sooner }));
    expect(kept.expiration_time).toEqual(sooner);
  });

  it('keeps initial_registration_time from the first registration across refreshes', async () => {
    const c = clock();
    registry = await createEmbeddedRegistry({ now: c.now });
    const first = await registry.registerEndpoint(endpoint('a', 'svc'));
    expect(first.initial_registration_time).toEqual(msToTimestamp(T0));
    c.advance(40_000);
    const refreshed = await registry.registerEndpoint(endpoint('a', 'svc'));
    expect(refreshed.initial_registration_time).toEqual(msToTimestamp(T0));
    expect(refreshed.expiration_time).toEqual(msToTimestamp(T0 + 40_000 + 60_000));
  });

  it('never returns an expired endpoint, even before the timer fires', async () => {
    const c = clock();
    registry = await createEmbeddedRegistry({ now: c.now, maxExpirationMs: 60_000 });
    await registry.registerEndpoint(endpoint('a', 'svc'));
    c.advance(30_000);
    await registry.registerEndpoint(endpoint('b', 'svc'));
    expect((await registry.findEndpoints(nse({}))).map((e) => e.name).sort()).toEqual(['a', 'b']);

    // The real timer is a minute away; only the injected clock moved.
    c.advance(30_000);
    expect((await registry.findEndpoints(nse({}))).map((e) => e.name)).toEqual(['b']);
    c.advance(30_000);
    expect(await registry.findEndpoints(nse({}))).toEqual([]);
  });

  it('restarts initial_registration_time when an endpoint re-registers after expiring', async () => {
    const c = clock();
    registry = await createEmbeddedRegistry({ now: c.now, maxExpirationMs: 1_000 });
    await registry.registerEndpoint(endpoint('a', 'svc'));
    c.advance(5_000);
    const again = await registry.registerEndpoint(endpoint('a', 'svc'));
    expect(again.initial_registration_time).toEqual(msToTimestamp(T0 + 5_000));
  });

  it('removes expired endpoints on its timer and tells watchers deleted=true', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'], now: T0 });
    registry = await createEmbeddedRegistry({ maxExpirationMs: 60_000 });
    const events: NseEvent[] = [];
    registry.watchEndpoints(nse({}), (e) => events.push(e));
    await registry.registerEndpoint(endpoint('a', 'svc'));
    vi.advanceTimersByTime(20_000);
    await registry.registerEndpoint(endpoint('b', 'svc'));
    await settle();
    expect(events.map((e) => [e.nse.name, e.deleted])).toEqual([
      ['a', false],
      ['b', false],
    ]);

    vi.advanceTimersByTime(40_000);
    await settle();
    expect(events.slice(2).map((e) => [e.nse.name, e.deleted])).toEqual([['a', true]]);

    vi.advanceTimersByTime(20_000);
    await settle();
    expect(events.slice(3).map((e) => [e.nse.name, e.deleted])).toEqual([['b', true]]);
  });

  it('expires on a real clock too (short timeouts, condition waits)', async () => {
    registry = await createEmbeddedRegistry({ maxExpirationMs: 30 });
    const deleted: string[] = [];
    registry.watchEndpoints(nse({}), (e) => e.deleted && deleted.push(e.nse.name));
    await registry.registerEndpoint(endpoint('short', 'svc'));
    await waitFor('the expiry deletion event', () => deleted.includes('short'), 5000);
    expect(await registry.findEndpoints(nse({ name: 'short' }))).toEqual([]);
  });

  it('uses one timer for all expiries rather than one per endpoint', async () => {
    const c = clock();
    registry = await createEmbeddedRegistry({ now: c.now });
    const spy = vi.spyOn(globalThis, 'setTimeout');
    for (let i = 0; i < 200; i++) await registry.registerEndpoint(endpoint(`nse-${i}`, 'svc'));
    expect(spy.mock.calls.length).toBeLessThanOrEqual(1);
  });

  it('finds by template', async () => {
    registry = await createEmbeddedRegistry();
    await registry.registerEndpoint(endpoint('fw-1', 'firewall', { app: 'firewall' }));
    await registry.registerEndpoint(endpoint('gw-1', 'vpn', { app: 'gw' }));
    const byService = await registry.findEndpoints(nse({ network_service_names: ['vpn'] }));
    expect(byService.map((e) => e.name)).toEqual(['gw-1']);
    const byLabel = await registry.findEndpoints(nse({ network_service_labels: { firewall: { labels: { app: 'firewall' } } } }));
    expect(byLabel.map((e) => e.name)).toEqual(['fw-1']);
    expect(await registry.findEndpoints(nse({ url: 'gw-1.sock' }))).toHaveLength(1);
  });

  it('returns copies, so callers cannot change what is stored', async () => {
    registry = await createEmbeddedRegistry();
    const out = await registry.registerEndpoint(endpoint('a', 'svc', { app: 'x' }));
    out.network_service_labels.svc!.labels.app = 'changed';
    const [found] = await registry.findEndpoints(nse({ name: 'a' }));
    expect(found!.network_service_labels.svc!.labels.app).toBe('x');
  });

  it('rejects a nameless endpoint and tolerates unregistering an unknown one', async () => {
    registry = await createEmbeddedRegistry();
    await expect(registry.registerEndpoint(nse({}))).rejects.toBeInstanceOf(RegistryRequestError);
    await expect(registry.unregisterEndpoint('nobody')).resolves.toBeUndefined();
  });

  it('lets watchers see the current matches, then changes, then unregister as deleted=true', async () => {
    registry = await createEmbeddedRegistry();
    await registry.registerEndpoint(endpoint('existing', 'svc'));
    await registry.registerEndpoint(endpoint('unrelated', 'other'));
    const events: NseEvent[] = [];
    const stop = registry.watchEndpoints(nse({ network_service_names: ['svc'] }), (e) => events.push(e));
    await registry.registerEndpoint(endpoint('new', 'svc'));
    await registry.registerEndpoint(endpoint('new-other', 'other'));
    await registry.unregisterEndpoint('existing');
    await settle();
    expect(events.map((e) => [e.nse.name, e.deleted])).toEqual([
      ['existing', false],
      ['new', false],
      ['existing', true],
    ]);
    stop();
    await registry.unregisterEndpoint('new');
    await settle();
    expect(events).toHaveLength(3);
  });

  it('does not deliver watcher events inside the register call, and survives a throwing watcher', async () => {
    registry = await createEmbeddedRegistry();
    const seen: string[] = [];
    registry.watchEndpoints(nse({}), () => {
      throw new Error('bad watcher');
    });
    registry.watchEndpoints(nse({}), (e) => seen.push(e.nse.name));
    const p = registry.registerEndpoint(endpoint('a', 'svc'));
    expect(seen).toEqual([]);
    await p;
    await settle();
    expect(seen).toEqual(['a']);
  });
});

describe('embedded registry: services', () => {
  it('registers, finds by template, watches and unregisters', async () => {
    registry = await createEmbeddedRegistry();
    await registry.registerService(ns({ name: 'vpn', payload: 'IP' }));
    const events: NsEvent[] = [];
    registry.watchServices(ns({ payload: 'ETHERNET' }), (e) => events.push(e));
    await registry.registerService(ns({ name: 'l2', payload: 'ETHERNET' }));
    expect((await registry.findServices(ns({ name: 'vpn' }))).map((s) => s.name)).toEqual(['vpn']);
    expect((await registry.findServices(ns({}))).map((s) => s.name).sort()).toEqual(['l2', 'vpn']);
    await registry.unregisterService('l2');
    await registry.unregisterService('vpn');
    await settle();
    expect(events.map((e) => [e.ns.name, e.deleted])).toEqual([
      ['l2', false],
      ['l2', true],
    ]);
    await expect(registry.registerService(ns({}))).rejects.toBeInstanceOf(RegistryRequestError);
  });

  it('refuses calls after close and closes idempotently', async () => {
    const r = await createEmbeddedRegistry();
    await r.close();
    await r.close();
    await expect(r.findServices(ns({}))).rejects.toThrow(/closed/);
  });
});
