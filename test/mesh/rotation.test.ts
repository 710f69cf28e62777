/**
 * SVID rotation under a live connection: every identity here gets a new X.509-SVID (and key) every second.
 * Refreshes must keep working over the connections already open (no reconnect) and the interface must stay
 * the one made at the start.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ApiClient } from '../../src/api/grpc.js';
import type { Connection } from '../../src/api/types.js';
import { inodeUrlOf } from '../../src/dataplane/netns.js';
import { createNetlinkDataplane } from '../../src/dataplane/veth/index.js';
import type { Dataplane } from '../../src/dataplane/types.js';
import { signOwnSegment } from '../../src/identity/outgoing.js';
import { sourceTransport, type Transport } from '../../src/identity/transport.js';
import type { X509Source } from '../../src/identity/source.js';
import { configureIssuer, ids, testIssuer } from '../helpers/identity.js';
import { startIcmpResponder, startNsmd, type NsmdProc } from '../helpers/mesh.js';
import { cleanupNetns, createNetns, ping, tag, type Netns } from '../helpers/netns.js';
import { waitFor } from '../helpers/wait.js';

const ROTATE_MS = 1000;
// Short enough that the certificates the live connections were made with expire during the test, long
// enough that a token is never used within a second of its expiry on a loaded machine.
configureIssuer({ svidTtlMs: 3500, rotateAfterMs: ROTATE_MS });

let nsmd: NsmdProc;
let dp: Dataplane;
let client: Netns;
let source: X509Source;
let me: Transport;
let ns: ApiClient<'networkservice.NetworkService'>;

beforeAll(async () => {
  client = await createNetns('client');
  const nse = await createNetns('nse');
  dp = await createNetlinkDataplane();
  nsmd = await startNsmd();
  await startIcmpResponder(nse, { name: `${tag}-nse`, connectTo: nsmd.url, services: [`${tag}-rot`] });
  source = (await testIssuer()).x509Source(ids.pod(`${tag}-client`));
  me = sourceTransport(source);
  ns = new ApiClient('networkservice.NetworkService', nsmd.url, me);
});

afterAll(async () => {
  ns?.close();
  await nsmd?.stop();
  await dp?.close();
  await cleanupNetns();
});

async function refresh(conn: Connection): Promise<Connection> {
  const metadata = await signOwnSegment(me, ns, conn, 60_000, 5000);
  return ns.unary('Request', { connection: conn, mechanism_preferences: [conn.mechanism!] }, { timeoutMs: 5000, metadata });
}

it('keeps refreshing across SVID rotations without reconnecting or touching the interface', async () => {
  const id = `${tag}-r`;
  const first = { connection: { id, network_service: `${tag}-rot`, path: { index: 0, path_segments: [{ name: 'client', id }] } }, mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: `${tag}r`, inodeURL: inodeUrlOf(client.path) } }] };
  const metadata = await signOwnSegment(me, ns, first.connection, 60_000, 5000);
  let conn = await ns.unary('Request', first, { timeoutMs: 5000, metadata });
  const link = async () => (await dp.snapshot(client.path)).links.find((l) => l.ifname === `${tag}r`);
  const before = await link();
  expect(before).toBeDefined();

  // Unary calls run on the client's own HTTP/2 session: a reconnect would show as a second session.
  const sessions = ns.unarySessionsOpened();
  expect(sessions).toBe(1);

  const serials = new Set([source.svid().serial]);
  source.on('update', () => serials.add(source.svid().serial));
  let refreshes = 0;
  // Refresh continuously until this client has been given five SVIDs after the first (the other parties
  // rotate on the same clock, and the first certificates have expired by then), then once more.
  await waitFor('five SVID rotations while refreshing', async () => {
    conn = await refresh(conn);
    refreshes++;
    return serials.size >= 6;
  }, 20 * ROTATE_MS, 100);
  conn = await refresh(conn);

  expect(refreshes).toBeGreaterThan(3);
  expect(ns.unarySessionsOpened()).toBe(sessions);
  const after = await link();
  expect(after!.index).toBe(before!.index);
  expect(after!.addrs).toEqual(before!.addrs);
  expect(await ping(client, conn.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!)).toBe(true);
  await ns.unary('Close', conn, { timeoutMs: 5000 });
  expect(await link()).toBeUndefined();
});
