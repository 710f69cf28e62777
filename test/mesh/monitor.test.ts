/**
 * connection.MonitorConnection over the real socket: the initial state, then UPDATE and DELETE, filtered by
 * the selector; an endpoint that leaves takes its connections DOWN; nsc --keep-alive refreshes and closes on
 * SIGTERM; state on disk is private.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { execa } from 'execa';
import type { ClientReadableStream } from '@grpc/grpc-js';
import { ApiClient } from '../../src/api/grpc.js';
import type { ConnectionEvent, DeepPartial, MonitorScopeSelector } from '../../src/api/types.js';
import { inodeUrlOf } from '../../src/dataplane/netns.js';
import { signOwnSegment } from '../../src/identity/outgoing.js';
import type { Transport } from '../../src/identity/transport.js';
import { ids, testTransport, workloadSocket } from '../helpers/identity.js';
import { BIN, startIcmpResponder, startNsmd, type EndpointProc, type NsmdProc } from '../helpers/mesh.js';
import { cleanupNetns, createNetns, ping, tag, type Netns } from '../helpers/netns.js';
import { waitFor } from '../helpers/wait.js';

let nsmd: NsmdProc;
let client: Netns;
let nse: EndpointProc;
let me: Transport;
let ns: ApiClient<'networkservice.NetworkService'>;
let mon: ApiClient<'connection.MonitorConnection'>;
const service = `${tag}-mon`;
const streams: ClientReadableStream<ConnectionEvent>[] = [];

beforeAll(async () => {
  client = await createNetns('client');
  nsmd = await startNsmd();
  nse = await startIcmpResponder(await createNetns('nse'), { name: `${tag}-nse`, connectTo: nsmd.url, services: [service] });
  me = await testTransport(ids.pod(`${tag}-client`));
  ns = new ApiClient('networkservice.NetworkService', nsmd.url, me);
  mon = new ApiClient('connection.MonitorConnection', nsmd.url, me);
});

afterAll(async () => {
  for (const s of streams) s.cancel();
  ns?.close();
  mon?.close();
  await nsmd?.stop();
  await cleanupNetns();
});

function watch(selector: DeepPartial<MonitorScopeSelector>, via = mon): ConnectionEvent[] {
  const events: ConnectionEvent[] = [];
  const s = via.stream('MonitorConnections', selector);
  s.on('data', (e: ConnectionEvent) => events.push(e));
  s.on('error', () => {});
  streams.push(s);
  return events;
}

async function connect(id: string, ifname: string) {
  const r = {
    connection: { id, network_service: service, path: { index: 0, path_segments: [{ name: 'client', id }] } },
    mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: ifname, inodeURL: inodeUrlOf(client.path) } }],
  };
  const metadata = await signOwnSegment(me, ns, r.connection, 60_000, 5000);
  return ns.unary('Request', r, { timeoutMs: 10_000, metadata });
}

it('streams the initial state, then UPDATE and DELETE for connections the selector matches', async () => {
  const first = await connect(`${tag}-a`, `${tag}a`);
  const mine = watch({ path_segments: [{ id: `${tag}-b` }] });
  const all = watch({});
  const other = watch({ network_services: ['something-else'] });
  await waitFor('initial state transfers', () => mine.length === 1 && all.length === 1 && other.length === 1);
  expect(mine[0]!.type).toBe('INITIAL_STATE_TRANSFER');
  expect(Object.keys(mine[0]!.connections)).toEqual([]);
  expect(Object.values(all[0]!.connections).map((c) => c.path!.path_segments[0]!.id)).toEqual([`${tag}-a`]);

  const second = await connect(`${tag}-b`, `${tag}b`);
  await waitFor('the UPDATE for the new connection', () => mine.length === 2);
  expect(mine[1]!.type).toBe('UPDATE');
  expect(Object.values(mine[1]!.connections)[0]!.state).toBe('UP');
  await ns.unary('Close', second, { timeoutMs: 5000 });
  await waitFor('the DELETE', () => mine.length === 3);
  expect(mine[2]!.type).toBe('DELETE');
  await ns.unary('Close', first, { timeoutMs: 5000 });
  await waitFor('both deletes on the unfiltered stream', () => all.filter((e) => e.type === 'DELETE').length === 2);
  expect(other.length).toBe(1);
});

it('reports a connection DOWN when its endpoint leaves the registry', async () => {
  const conn = await connect(`${tag}-d`, `${tag}d`);
  const events = watch({ path_segments: [{ id: `${tag}-d` }] });
  await waitFor('the initial state', () => events.length === 1);
  await nse.stop();
  await waitFor('a DOWN update', () => events.some((e) => e.type === 'UPDATE' && Object.values(e.connections)[0]!.state === 'DOWN'));
  await ns.unary('Close', conn, { timeoutMs: 5000 });
});

it('keeps state on disk private to nsmd', async () => {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        expect(fs.statSync(p).mode & 0o077, `${p} is readable by others`).toBe(0);
        walk(p);
      } else files.push(p);
    }
  };
  walk(path.join(nsmd.dir, 'state'));
  expect(files.length).toBeGreaterThan(0);
  for (const f of files) {
    // A connection file may be removed between listing and looking (a Close finishing): that is fine.
    const st = fs.statSync(f, { throwIfNoEntry: false });
    if (st) expect(st.mode & 0o077, `${f} is readable by others`).toBe(0);
  }
});

it('nsc --keep-alive refreshes its connections and closes them on SIGTERM', async () => {
  const nse2 = await startIcmpResponder(await createNetns('nse2'), { name: `${tag}-nse2`, connectTo: nsmd.url, services: [service] });
  const name = `${tag}-ka`;
  const proc = execa('ip', ['netns', 'exec', client.name, 'node', BIN.nsc, '--keep-alive', '--output', 'json'], {
    env: {
      SPIFFE_ENDPOINT_SOCKET: await workloadSocket(ids.pod(name)),
      NSM_NAME: name,
      NSM_CONNECT_TO: nsmd.url,
      NSM_NETWORK_SERVICES: `${service}/${tag}k`,
      // Shorter than the test: without refreshes nsmd would close the connection by itself.
      NSM_MAX_TOKEN_LIFETIME: '1500ms',
    },
    reject: false,
  });
  const links = async () => (await execa('ip', ['-n', client.name, '-o', 'link', 'show'])).stdout;
  await waitFor('the keep-alive connection', async () => (await links()).includes(`${tag}k`));
  // The connection is nsc's, not this test's: watching it takes an admin identity.
  const admin = new ApiClient('connection.MonitorConnection', nsmd.url, await testTransport(ids.admin));
  const events = watch({ path_segments: [{ id: `${name}-0` }] }, admin);
  // Two lifetimes later the connection must still be there, refreshed.
  await waitFor('two refreshes', () => events.filter((e) => e.type === 'UPDATE').length >= 2, 10_000);
  expect(await links()).toContain(`${tag}k`);
  proc.kill('SIGTERM');
  const r = await proc;
  expect(r.exitCode).toBe(0);
  expect(await links()).not.toContain(`${tag}k`);
  admin.close();
  await nse2.stop();
});

it('heals a refresh whose endpoint crashed (still registered) onto another endpoint, same id and interface', async () => {
  const svc = `${tag}-heal`;
  const a = await startIcmpResponder(await createNetns('ha'), { name: `${tag}-ha`, connectTo: nsmd.url, services: [svc], cidr: '169.254.81.0/24' });
  const b = await startIcmpResponder(await createNetns('hb'), { name: `${tag}-hb`, connectTo: nsmd.url, services: [svc], cidr: '169.254.82.0/24' });
  const id = `${tag}-h`;
  const r = {
    connection: { id, network_service: svc, path: { index: 0, path_segments: [{ name: 'client', id }] } },
    mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: `${tag}h`, inodeURL: inodeUrlOf(client.path) } }],
  };
  const first = await ns.unary('Request', r, { timeoutMs: 10_000, metadata: await signOwnSegment(me, ns, r.connection, 60_000, 5000) });
  const [gone, other] = first.network_service_endpoint_name === `${tag}-ha` ? [a, b] : [b, a];
  const events = watch({ path_segments: [{ id }] });
  await waitFor('the initial state', () => events.length === 1);
  // SIGKILL: no unregistration, so the registry still lists it; only its silence tells.
  await gone.stop('SIGKILL');
  await waitFor('a DOWN update', () => events.some((e) => e.type === 'UPDATE' && Object.values(e.connections)[0]!.state === 'DOWN'));
  const healed = await ns.unary('Request', { connection: first, mechanism_preferences: [first.mechanism!] }, {
    timeoutMs: 10_000,
    metadata: await signOwnSegment(me, ns, first, 60_000, 5000),
  });
  expect(healed.id).toBe(first.id);
  expect(healed.state).toBe('UP');
  expect(healed.network_service_endpoint_name).toBe(other.name);
  expect(healed.path!.path_segments.at(-1)!.name).toBe(other.name);
  const links = (await execa('ip', ['-n', client.name, '-o', 'link', 'show'])).stdout;
  expect(links).toContain(`${tag}h`);
  const dst = healed.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!;
  expect(dst.startsWith(other.name === `${tag}-ha` ? '169.254.81.' : '169.254.82.')).toBe(true);
  expect(await ping(client, dst)).toBe(true);
  await ns.unary('Close', healed, { timeoutMs: 5000 });
  await other.stop();
});

it('nsc --keep-alive heals at once when its connection goes DOWN, without waiting for the refresh period', async () => {
  const svc = `${tag}-kheal`;
  const a = await startIcmpResponder(await createNetns('ka'), { name: `${tag}-ka1`, connectTo: nsmd.url, services: [svc], cidr: '169.254.83.0/24' });
  const name = `${tag}-kh`;
  const proc = execa('ip', ['netns', 'exec', client.name, 'node', BIN.nsc, '--keep-alive', '--output', 'json'], {
    env: {
      SPIFFE_ENDPOINT_SOCKET: await workloadSocket(ids.pod(name)),
      NSM_NAME: name,
      NSM_CONNECT_TO: nsmd.url,
      NSM_NETWORK_SERVICES: `${svc}/${tag}q`,
      // The periodic refresh (a third of this) comes long after the test's deadlines.
      NSM_MAX_TOKEN_LIFETIME: '10m',
    },
    reject: false,
  });
  const admin = new ApiClient('connection.MonitorConnection', nsmd.url, await testTransport(ids.admin));
  try {
    const events = watch({ path_segments: [{ id: `${name}-0` }] }, admin);
    await waitFor('the keep-alive connection', () => events.some((e) => Object.values(e.connections).some((c) => c.state === 'UP')), 15_000);
    const b = await startIcmpResponder(await createNetns('kb'), { name: `${tag}-ka2`, connectTo: nsmd.url, services: [svc], cidr: '169.254.84.0/24' });
    await a.stop();
    const healed = await waitFor('the connection healed onto the other endpoint', () =>
      events.flatMap((e) => Object.values(e.connections)).find((c) => c.state === 'UP' && c.network_service_endpoint_name === b.name), 15_000);
    expect(await ping(client, healed.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!)).toBe(true);
    proc.kill('SIGTERM');
    expect((await proc).exitCode).toBe(0);
    await b.stop();
  } finally {
    proc.kill('SIGKILL');
    admin.close();
  }
});
