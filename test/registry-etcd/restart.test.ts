import net from 'node:net';
import type { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createEtcdRegistry, EtcdRegistryError, type EtcdRegistryOptions } from '../../src/registry/etcd/index.js';
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
beforeEach(async () => {
  etcd.resume();
  if (!etcd.running) await etcd.start();
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((r) => r.close()));
});

/** Log lines of every registry opened by a test, to check which recovery path ran. */
let logs: { msg: string; level: number; [k: string]: unknown }[] = [];
beforeEach(() => {
  logs = [];
});
const logger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
const logged = (msg: string) => logs.filter((l) => l.msg === msg);

async function open(prefix: string, extra: Partial<EtcdRegistryOptions> = {}): Promise<Registry> {
  const r = await createEtcdRegistry({ endpoints: [etcd.endpoint], prefix, logger, ...extra });
  opened.push(r);
  return r;
}

const endpointNames = async (r: Registry) => (await r.findEndpoints(nse({}))).map((e) => e.name).sort();
/** What a watcher believes exists now: the last event per name decides. */
const believed = (events: readonly NseEvent[]) => {
  const last = new Map<string, boolean>();
  for (const e of events) last.set(e.nse.name, !e.deleted);
  return [...last].filter(([, present]) => present).map(([n]) => n).sort();
};

describe('etcd registry across etcd restarts', () => {
  it('same data dir: registrations stay, the instance keeps working, watches resume without duplicates', async () => {
    const prefix = freshPrefix();
    const node1 = await open(prefix);
    const node2 = await open(prefix);
    await node1.registerService(ns({ name: 'svc' }));
    await node1.registerEndpoint(endpoint('e1', 'svc'));
    const rec = recorder<NseEvent>();
    const nsRec = recorder<NsEvent>();
    node2.watchEndpoints(nse({}), rec.push);
    node2.watchServices(ns({}), nsRec.push);
    await waitFor('node2 sees e1', () => rec.has('e1', false) && nsRec.has('svc', false));

    await etcd.restart();

    // The first calls after the restart go over a new connection; they must not need a retry by the caller.
    await node1.registerEndpoint(endpoint('e2', 'svc'));
    await node1.registerEndpoint(endpoint('e1', 'svc'));
    await waitFor('node2 watch resumed and sees e2', () => rec.has('e2', false));
    expect(await endpointNames(node1)).toEqual(['e1', 'e2']);
    expect(await endpointNames(node2)).toEqual(['e1', 'e2']);
    expect((await node2.findServices(ns({}))).map((s) => s.name)).toEqual(['svc']);
    // e1's refresh changed its expiration_time, so exactly two puts; the resync itself added nothing.
    await waitFor('e1 refresh seen', () => rec.of('e1').length === 2);
    expect(rec.of('e1').map((e) => e.deleted)).toEqual([false, false]);
    expect(nsRec.events.map((e) => [e.ns.name, e.deleted])).toEqual([['svc', false]]);
    expect(logged('etcd registry watch re-established')).toHaveLength(2);
    expect(logs.filter((l) => String(l.msg).startsWith('re-registered'))).toEqual([]);
  });

  it('wiped data dir: live instances re-register their own services and endpoints; watches resync', async () => {
    const prefix = freshPrefix();
    const node1 = await open(prefix);
    const node2 = await open(prefix);
    await node1.registerService(ns({ name: 'svc-1' }));
    await node1.registerEndpoint(endpoint('e1', 'svc-1'));
    await node1.registerEndpoint(endpoint('gone', 'svc-1'));
    await node1.unregisterEndpoint('gone');
    await node2.registerEndpoint(endpoint('e2', 'svc-2'));
    const rec = recorder<NseEvent>();
    node2.watchEndpoints(nse({}), rec.push);
    await waitFor('node2 watcher has both', () => believed(rec.events).join() === 'e1,e2');

    await etcd.restart({ wipe: true });

    await waitFor('both endpoints back in etcd with leases', async () => {
      const kvs = (await raw.getAll().prefix(`${prefix}nse/`).exec()).kvs;
      return kvs.length === 2 && kvs.every((kv) => kv.lease !== '0');
    });
    expect(await raw.get(`${prefix}ns/svc-1`).buffer()).not.toBeNull();
    expect(await endpointNames(node1)).toEqual(['e1', 'e2']);
    expect(await endpointNames(node2)).toEqual(['e1', 'e2']);
    expect((await node2.findServices(ns({}))).map((s) => s.name)).toEqual(['svc-1']);

    // The watch now follows the new etcd: a put after the wipe arrives, and the watcher's view is right.
    await node1.registerEndpoint(endpoint('e3', 'svc-1'));
    await waitFor('node2 watcher sees e3 and ends up consistent', () => believed(rec.events).join() === 'e1,e2,e3');
    expect(rec.has('gone', false)).toBe(false);
    expect(logged('re-registered network service endpoint in etcd').map((l) => l.nse).sort()).toEqual(['e1', 'e2']);
    expect(logged('re-registered network service in etcd').map((l) => l.ns)).toEqual(['svc-1']);
  });

  it('dead etcd: calls fail within the deadline with a clear error; recovery once etcd is back', async () => {
    const prefix = freshPrefix();
    const node = await open(prefix, { callTimeoutMs: 1_000 });
    await node.registerEndpoint(endpoint('e1', 'svc'));
    const rec = recorder<NseEvent>();
    node.watchEndpoints(nse({}), rec.push);

    await etcd.stop();
    const unreachable = new RegExp(`registry etcd at ${etcd.endpoint.replace(/\./g, '\\.')} unreachable`);
    for (const call of [
      () => node.registerEndpoint(endpoint('e2', 'svc')),
      () => node.findEndpoints(nse({})),
      () => node.findServices(ns({})),
      () => node.unregisterEndpoint('e1'),
      () => node.registerService(ns({ name: 'x' })),
    ]) {
      const t0 = Date.now();
      const err = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(EtcdRegistryError);
      expect((err as Error).message).toMatch(unreachable);
      expect(Date.now() - t0).toBeLessThan(1_500);
    }
    const t0 = Date.now();
    await expect(createEtcdRegistry({ endpoints: [etcd.endpoint], dialTimeoutMs: 1_000 })).rejects.toThrow(unreachable);
    expect(Date.now() - t0).toBeLessThan(1_500);

    await etcd.start();
    await waitFor('registrations work again', async () => {
      await node.registerEndpoint(endpoint('e3', 'svc'));
      return true;
    });
    await waitFor('the watch resumed', () => rec.has('e3', false));
    expect(await endpointNames(node)).toContain('e3');
  });

  it('hung etcd (no answers, sockets open): calls and startup end at the deadline', async () => {
    const prefix = freshPrefix();
    const node = await open(prefix, { callTimeoutMs: 500 });
    await node.registerEndpoint(endpoint('e1', 'svc'));
    etcd.pause();
    try {
      const t0 = Date.now();
      await expect(node.findEndpoints(nse({}))).rejects.toThrow(/registry etcd at .* unreachable/);
      const elapsed = Date.now() - t0;
      expect(elapsed).toBeGreaterThanOrEqual(450);
      expect(elapsed).toBeLessThan(1_500);
    } finally {
      etcd.resume();
    }
    await waitFor('answers again', async () => (await endpointNames(node)).join() === 'e1');

    // A listener that accepts connections but never speaks gRPC.
    const silent = net.createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const port = (silent.address() as net.AddressInfo).port;
      const t0 = Date.now();
      await expect(createEtcdRegistry({ endpoints: [`127.0.0.1:${port}`], dialTimeoutMs: 500 })).rejects.toThrow(
        `registry etcd at 127.0.0.1:${port} unreachable`,
      );
      expect(Date.now() - t0).toBeLessThan(1_500);
    } finally {
      silent.close();
    }
  });
});
