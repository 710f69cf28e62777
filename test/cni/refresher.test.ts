/**
 * nsm-cni-refresher against a real nsmd that grants connections only a few seconds of life
 * (NSM_MAX_TOKEN_LIFETIME), with an icmp-responder endpoint: nsm-cni run as a runtime runs it
 * (test/cni/runtime.ts), the refresher as the node daemon it is (a process with nsm-cni's SPIFFE identity),
 * real pod namespaces, traffic checked with ping.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Connection } from '../../src/api/types.js';
import { earliestExpiry } from '../../src/client/nsc.js';
import { createNetlinkDataplane } from '../../src/dataplane/veth/index.js';
import type { Dataplane } from '../../src/dataplane/types.js';
import { TRUST_DOMAIN, workloadSocket } from '../helpers/identity.js';
import { nsmctl, startIcmpResponder, startNsmd, type EndpointProc, type NsmdProc } from '../helpers/mesh.js';
import { createNetns, deleteNetns, ping, tag, type Netns } from '../helpers/netns.js';
import { FatalError, waitFor } from '../helpers/wait.js';
import { CniRuntime, makeBinDir, type Attachment, type Conflist } from './runtime.js';

const REFRESHER_JS = path.resolve(import.meta.dirname, '../../dist/cni/src/nsm-cni-refresher.js');
/** nsmd closes a connection this long after its last Request unless it is refreshed. */
const LIFETIME_MS = 5000;
const SERVICE = `${tag}-svc`;
const CNI_ID = `spiffe://${TRUST_DOMAIN}/nsmesh/cni/node-${tag}`;

let nsmd: NsmdProc;
let dp: Dataplane;
let nseNs: Netns;
let tmp: string;
let dataDir: string;
let cniSocket: string;
let runtime: CniRuntime;
/** The refresher's network: records in dataDir. */
let list: Conflist;
/** The same network recording elsewhere, where no refresher looks. */
let unrefreshed: Conflist;

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

interface RefresherProc {
  proc: ResultPromise;
  logs: LogLine[];
  stop(signal?: NodeJS.Signals): Promise<void>;
}

const refreshers: RefresherProc[] = [];

async function startRefresher(env: Record<string, string> = {}): Promise<RefresherProc> {
  const proc = execa('node', [REFRESHER_JS], {
    env: { NSM_CNI_DATA_DIR: dataDir, NSM_CONNECT_TO: nsmd.url, SPIFFE_ENDPOINT_SOCKET: cniSocket, NSM_LOG_LEVEL: 'DEBUG', ...env },
    reject: false,
  });
  const logs: LogLine[] = [];
  let partial = '';
  proc.stderr!.on('data', (d: Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop()!;
    for (const l of lines) {
      try {
        logs.push(JSON.parse(l) as LogLine);
      } catch {
        logs.push({ level: 60, msg: l });
      }
    }
  });
  const r: RefresherProc = {
    proc,
    logs,
    async stop(signal = 'SIGTERM') {
      proc.kill(signal);
      await proc;
    },
  };
  refreshers.push(r);
  await waitFor('the refresher to start', () => {
    if (proc.exitCode !== null) throw new FatalError(`nsm-cni-refresher exited ${proc.exitCode}: ${logs.map((l) => l.msg).join('; ')}`);
    return logs.some((l) => l.msg === 'keeping nsm-cni connections alive');
  });
  return r;
}

/** Attachments a test made; afterEach deletes them the runtime's way. */
const made: { list: Conflist; a: Attachment }[] = [];

function attachment(l: Conflist, pod: Netns, services = `${SERVICE}/nsm0`): Attachment {
  const a: Attachment = { containerId: `${tag}${pod.name.split('-').pop()}`, netns: pod.path, ifname: 'eth0', capabilityArgs: { networkServices: services } };
  made.push({ list: l, a });
  return a;
}

const recordFile = (l: Conflist, a: Attachment) => path.join(l.plugins[0]!.dataDir as string, l.name, `${a.containerId}-${a.ifname}.json`);
const readRecord = (l: Conflist, a: Attachment): { netns: string; connections: Connection[] } | undefined =>
  fs.existsSync(recordFile(l, a)) ? JSON.parse(fs.readFileSync(recordFile(l, a), 'utf8')) : undefined;
const connectionId = (a: Attachment) => `cni-${a.containerId}-${a.ifname}-0`;

/** nsmd's view of the connection nsm-cni made for `a` (found by the plugin's own path segment). */
async function inNsmd(a: Attachment): Promise<Connection | undefined> {
  const r = await nsmctl(nsmd.url, ['get', 'connections', '--output', 'json']);
  expect(r.exitCode, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as Connection[]).find((c) => c.path?.path_segments[0]?.id === connectionId(a));
}

async function link(pod: Netns, name = 'nsm0') {
  return (await dp.snapshot(pod.path)).links.find((l) => l.ifname === name);
}

const gatewayOf = (conn: Connection) => conn.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), `nsmcnir-${tag}-`));
  dataDir = path.join(tmp, 'nsm');
  nseNs = await createNetns('nse');
  dp = await createNetlinkDataplane();
  nsmd = await startNsmd({ env: { NSM_MAX_TOKEN_LIFETIME: `${LIFETIME_MS}ms` } });
  await startIcmpResponder(nseNs, { name: `${tag}-nse`, connectTo: nsmd.url, services: [SERVICE], cidr: '169.254.41.0/24' });
  runtime = new CniRuntime({ binDir: makeBinDir(path.join(tmp, 'bin')) });
  cniSocket = await workloadSocket(CNI_ID);
  const plugin = { type: 'nsm-cni', capabilities: { networkServices: true }, nsmSocket: nsmd.url, spiffeEndpointSocket: cniSocket, requestTimeout: '10s', closeTimeout: '2s' };
  list = { cniVersion: '1.0.0', name: `nsmt-${tag}`, plugins: [{ ...plugin, dataDir }] };
  unrefreshed = { ...list, plugins: [{ ...plugin, dataDir: path.join(tmp, 'unrefreshed') }] };
});

afterEach(async () => {
  for (const r of refreshers.splice(0)) await r.stop('SIGKILL');
  for (const { list: l, a } of made.splice(0)) await runtime.del(l, a, undefined);
});

afterAll(async () => {
  await nsmd?.stop();
  await dp?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('nsm-cni-refresher', () => {
  it('--help lists its settings', async () => {
    const r = await execa('node', [REFRESHER_JS, '--help']);
    for (const env of ['NSM_CNI_DATA_DIR', 'NSM_CONNECT_TO', 'NSM_REFRESH_INTERVAL', 'NSM_MAX_TOKEN_LIFETIME', 'NSM_REQUEST_TIMEOUT', 'SPIFFE_ENDPOINT_SOCKET', 'NSM_INSECURE', 'NSM_LOG_LEVEL']) {
      expect(r.stdout).toContain(env);
    }
    const bad = await execa('node', [REFRESHER_JS, '--connect-to', 'nsmd.sock'], { reject: false });
    expect([bad.exitCode, bad.stderr]).toEqual([2, expect.stringMatching(/--connect-to: .*unix:\/\/\/path/)]);
  });

  it('keeps a connection alive over several lifetimes with traffic flowing; without it nsmd closes the connection', async () => {
    // Default settings: a 10m lifetime asked for, refreshes every 3m20s, brought forward by the recorded expiries.
    // Already running, as on a node: it notices the new record in dataDir.
    const refresher = await startRefresher();
    const kept = await createNetns('kept');
    const lapsing = await createNetns('lapse');
    const a = attachment(list, kept);
    const b = attachment(unrefreshed, lapsing);
    const { result } = await runtime.add(list, a);
    const firstExpiry = earliestExpiry(readRecord(list, a)!.connections[0]!);
    expect(firstExpiry - Date.now()).toBeLessThanOrEqual(LIFETIME_MS); // nsmd's cap, not the 10m the plugin asked for
    const original = (await link(kept))!;
    await runtime.add(unrefreshed, b);

    // Without a refresher nsmd closes the connection at its expiry and takes the interface away.
    await waitFor('nsmd to close the connection nobody refreshes', async () => !(await inNsmd(b)) && !(await link(lapsing)), 4 * LIFETIME_MS, 100);
    expect(readRecord(unrefreshed, b)).toBeDefined(); // nothing else changed there

    // The refreshed one lives on: the same interface throughout, until nsmd has extended it three lifetimes past
    // its first expiry (so it has now lived more than three lifetimes).
    await waitFor(
      'the connection to be extended three lifetimes past its first expiry',
      async () => {
        const l = await link(kept);
        if (l?.index !== original.index) throw new FatalError(`nsm0 in the pod changed: ${JSON.stringify(l)} (was ifindex ${original.index})`);
        return earliestExpiry(readRecord(list, a)!.connections[0]!) > firstExpiry + 3 * LIFETIME_MS;
      },
      8 * LIFETIME_MS,
      50,
    );
    const conn = await inNsmd(a);
    expect(conn?.state).toBe('UP');
    expect(await ping(kept, gatewayOf(readRecord(list, a)!.connections[0]!))).toBe(true);
    const refreshes = refresher.logs.filter((l) => l.msg === 'refreshed' && l.record === recordFile(list, a));
    expect(refreshes.length).toBeGreaterThanOrEqual(3);
    expect(refresher.logs.filter((l) => l.level >= 40)).toEqual([]);
    // The interface nsm-cni reported is the one that kept working.
    expect((result as { interfaces: { name: string }[] }).interfaces.map((i) => i.name)).toContain('nsm0');
  });

  it('closes the connections of a pod namespace deleted without DEL and removes its record', async () => {
    const refresher = await startRefresher({ NSM_REFRESH_INTERVAL: '500ms' });
    const pod = await createNetns('gone');
    const a = attachment(list, pod);
    await runtime.add(list, a);
    expect(await inNsmd(a)).toBeDefined();
    await deleteNetns(pod);

    const line = await waitFor(
      'the refresher to close the connections and remove the record',
      () => !fs.existsSync(recordFile(list, a)) && refresher.logs.find((l) => l.msg.startsWith('pod namespace is gone') && l.record === recordFile(list, a)),
      4 * LIFETIME_MS,
    );
    // Closed by the refresher (not expired first in nsmd, which would show as "gone").
    expect(line).toMatchObject({ closed: [connectionId(a)], gone: [], failed: [] });
    expect(await inNsmd(a)).toBeUndefined();
    expect(fs.readdirSync(path.dirname(recordFile(list, a))).filter((f) => f.startsWith(a.containerId))).toEqual([]); // no lock file left
  });

  it('heals a connection closed behind its back in nsmd while its namespace exists', async () => {
    const refresher = await startRefresher({ NSM_REFRESH_INTERVAL: '500ms' });
    const pod = await createNetns('heal');
    const a = attachment(list, pod);
    await runtime.add(list, a);
    const before = (await inNsmd(a))!;
    expect((await nsmctl(nsmd.url, ['close', before.id])).exitCode).toBe(0);

    await waitFor('nsmd to have the connection again, UP, with its interface in the pod', async () => (await inNsmd(a))?.state === 'UP' && (await link(pod)) !== undefined, 4 * LIFETIME_MS, 100);
    const record = readRecord(list, a)!;
    expect(record.connections.map((c) => c.id)).toEqual([connectionId(a)]);
    expect(await ping(pod, gatewayOf(record.connections[0]!))).toBe(true);
  });

  it('moves onto another endpoint when its endpoint is gone (nsmd heals the refresh)', async () => {
    const service = `${tag}-svc2`;
    const first = await startIcmpResponder(await createNetns('nse-a'), { name: `${tag}-nse-a`, connectTo: nsmd.url, services: [service], cidr: '169.254.42.0/24' });
    await startRefresher({ NSM_REFRESH_INTERVAL: '500ms' });
    const pod = await createNetns('moved');
    const a = attachment(list, pod, `${service}/nsm1`);
    await runtime.add(list, a);
    expect(readRecord(list, a)!.connections[0]!.network_service_endpoint_name).toBe(first.name);

    // The next refresh after the endpoint left finds it gone from the registry, and nsmd selects the new one for
    // the same connection id and interface.
    await first.stop();
    const second = await startIcmpResponder(await createNetns('nse-b'), { name: `${tag}-nse-b`, connectTo: nsmd.url, services: [service], cidr: '169.254.43.0/24' });
    await waitFor('the connection to move to the new endpoint', () => readRecord(list, a)?.connections[0]?.network_service_endpoint_name === second.name, 6 * LIFETIME_MS, 50);
    const conn = readRecord(list, a)!.connections[0]!;
    expect(conn.id).toBe(connectionId(a));
    expect((await link(pod, 'nsm1'))?.addrs).toEqual(conn.context!.ip_context!.src_ip_addrs);
    expect(gatewayOf(conn)).toMatch(/^169\.254\.43\./);
    expect(await ping(pod, gatewayOf(conn))).toBe(true);
    await second.stop();
  });

  it('never brings back what DEL closed, however ADD and DEL interleave with its refreshes', async () => {
    // Refreshes as often as it ever does (every 100 ms), so they overlap the plugin's runs.
    const refresher = await startRefresher({ NSM_REFRESH_INTERVAL: '1ms' });
    const sentinel = attachment(list, await createNetns('sentinel'));
    await runtime.add(list, sentinel);
    const pod = await createNetns('churn');
    const a = attachment(list, pod);
    for (let i = 0; i < 8; i++) {
      await runtime.add(list, a);
      expect((await runtime.del(list, a, undefined)).map((r) => r.exitCode)).toEqual([0]);
      expect(readRecord(list, a)).toBeUndefined();
    }
    // Whatever refresh was in flight at the last DEL has finished once the sentinel has been refreshed twice more.
    const refreshesOf = (x: Attachment) => refresher.logs.filter((l) => l.msg === 'refreshed' && l.record === recordFile(list, x)).length;
    const seen = refreshesOf(sentinel);
    await waitFor('two more refreshes of the sentinel', () => refreshesOf(sentinel) >= seen + 2);
    expect(readRecord(list, a)).toBeUndefined();
    expect(await inNsmd(a)).toBeUndefined();
    expect(await link(pod)).toBeUndefined();
    expect(fs.readdirSync(path.dirname(recordFile(list, a))).filter((f) => f.startsWith(a.containerId))).toEqual([]);
    expect((await inNsmd(sentinel))?.state).toBe('UP');
    expect(refresher.logs.filter((l) => l.level >= 40)).toEqual([]);
  });

  it('stops on SIGTERM and leaves the connections up', async () => {
    const refresher = await startRefresher({ NSM_REFRESH_INTERVAL: '500ms' });
    const pod = await createNetns('term');
    const a = attachment(list, pod);
    await runtime.add(list, a);
    const added = earliestExpiry(readRecord(list, a)!.connections[0]!);
    await waitFor('a refresh', () => earliestExpiry(readRecord(list, a)!.connections[0]!) > added);

    const t0 = Date.now();
    await refresher.stop('SIGTERM');
    expect(refresher.proc.exitCode).toBe(0);
    expect(Date.now() - t0).toBeLessThan(LIFETIME_MS);
    expect(refresher.logs.at(-1)?.msg).toBe('stopped; the connections stay up');
    const conn = await inNsmd(a);
    expect(conn?.state).toBe('UP');
    expect(await link(pod)).toBeDefined();
    expect(await ping(pod, gatewayOf(readRecord(list, a)!.connections[0]!))).toBe(true);
  });
});
