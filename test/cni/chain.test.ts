/**
 * nsm-cni chained after the Debian `ptp` plugin, driven as a container runtime drives CNI (test/cni/runtime.ts):
 * real plugin processes with CNI_* environment and stdin configuration, a real nsmd with an icmp-responder
 * endpoint (mutual TLS, SPIFFE identities from the test issuer), real pod namespaces, traffic checked with ping.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Connection } from '../../src/api/types.js';
import { createNetlinkDataplane } from '../../src/dataplane/veth/index.js';
import type { Dataplane } from '../../src/dataplane/types.js';
import { workloadSocket, TRUST_DOMAIN } from '../helpers/identity.js';
import { nsmctl, startIcmpResponder, startNsmd, type NsmdProc } from '../helpers/mesh.js';
import { createNetns, deleteNetns, execIn, ping, tag, type Netns } from '../helpers/netns.js';
import { CniRuntime, makeBinDir, type Attachment, type Conflist } from './runtime.js';

const SERVICE = `${tag}-svc`;
const POD_SUBNET = '198.18.77';
let nsmd: NsmdProc;
let dp: Dataplane;
let node: Netns;
let tmp: string;
let dataDir: string;
let runtime: CniRuntime;
let list: Conflist;

interface ResultShape {
  cniVersion: string;
  interfaces: { name: string; mac?: string; sandbox?: string }[];
  ips: { address: string; gateway?: string; interface?: number; version?: string }[];
  routes?: { dst: string; gw?: string }[];
}
interface CniErrorShape {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

/** The connections nsmd holds that nsm-cni made (their first path segment is the plugin's, `cni-…`). */
async function cniConnections(): Promise<Connection[]> {
  const r = await nsmctl(nsmd.url, ['get', 'connections', '--output', 'json']);
  expect(r.exitCode, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as Connection[]).filter((c) => c.path?.path_segments[0]?.name.startsWith(`cni-${tag}`));
}

const stateFiles = () => (fs.existsSync(dataDir) ? fs.readdirSync(dataDir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name) : []);
const podLinks = async (pod: Netns) => (await dp.snapshot(pod.path)).links.filter((l) => l.ifname !== 'lo');

/** Attachments a test made; afterEach deletes them the runtime's way, so a failed test leaves nothing for the next. */
const made: Attachment[] = [];

function attachment(pod: Netns, extra: Partial<Attachment> = {}): Attachment {
  const a = { containerId: `${tag}${pod.name.split('-').pop()}`, netns: pod.path, ifname: 'eth0', ...extra };
  made.push(a);
  return a;
}

/** One plugin run with this list's configuration for nsm-cni, edited by `edit`. */
async function nsmCni(command: string, a: Partial<Attachment>, edit: (conf: Record<string, unknown>) => unknown = (c) => c, prevResult?: unknown) {
  const full = { containerId: 'x', netns: '', ifname: 'eth0', ...a } as Attachment;
  const conf = edit(runtime.pluginConf(list, list.plugins[1]!, full, prevResult));
  return runtime.exec('nsm-cni', command, a, typeof conf === 'string' ? conf : JSON.stringify(conf));
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), `nsmcni-${tag}-`));
  dataDir = path.join(tmp, 'nsm');
  node = await createNetns('node');
  const nse = await createNetns('nse');
  dp = await createNetlinkDataplane();
  nsmd = await startNsmd();
  await startIcmpResponder(nse, { name: `${tag}-nse`, connectTo: nsmd.url, services: [SERVICE], cidr: '169.254.40.0/24' });
  runtime = new CniRuntime({ binDir: makeBinDir(path.join(tmp, 'bin')), nodeNetns: node.name });
  list = {
    cniVersion: '1.0.0',
    name: `nsmt-${tag}`,
    plugins: [
      {
        type: 'ptp',
        ipMasq: false,
        mtu: 1500,
        ipam: { type: 'host-local', ranges: [[{ subnet: `${POD_SUBNET}.0/24`, gateway: `${POD_SUBNET}.1` }]], dataDir: path.join(tmp, 'ipam') },
      },
      {
        type: 'nsm-cni',
        capabilities: { networkServices: true },
        nsmSocket: nsmd.url,
        dataDir,
        spiffeEndpointSocket: await workloadSocket(`spiffe://${TRUST_DOMAIN}/nsmesh/cni/node-${tag}`),
        requestTimeout: '10s',
        closeTimeout: '2s',
      },
    ],
  };
});

afterEach(async () => {
  for (const a of made.splice(0)) await runtime.del(list, a, undefined);
});

afterAll(async () => {
  await nsmd?.stop();
  await dp?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('nsm-cni chained after ptp', () => {
  it('VERSION lists the supported versions', async () => {
    const r = await runtime.exec('nsm-cni', 'VERSION', {}, JSON.stringify({ cniVersion: '1.0.0' }));
    expect(r.exitCode).toBe(0);
    expect(r.json).toEqual({ cniVersion: '1.0.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] });
  });

  it('ADD → traffic over both interfaces → CHECK → DEL leaves nothing; DEL twice is fine', async () => {
    const pod = await createNetns('p1');
    const a = attachment(pod, { capabilityArgs: { networkServices: `${SERVICE}/nsm0` } });
    const { result: raw, runs } = await runtime.add(list, a);
    const result = raw as unknown as ResultShape;

    expect(result.cniVersion).toBe('1.0.0');
    const names = result.interfaces.map((i) => i.name);
    expect(names).toContain('eth0');
    const nsmIdx = names.indexOf('nsm0');
    expect(nsmIdx).toBeGreaterThan(names.indexOf('eth0'));
    const nsmIf = result.interfaces[nsmIdx]!;
    expect(nsmIf.sandbox).toBe(pod.path);
    const links = await podLinks(pod);
    expect(links.map((l) => l.ifname).sort()).toEqual(['eth0', 'nsm0']);
    const kernelMac = (await execIn(pod, ['cat', '/sys/class/net/nsm0/address'])).stdout;
    expect(nsmIf.mac).toBe(String(kernelMac).trim());

    // ptp's address and ours, each pointing at its own interface.
    const ptpIp = result.ips.find((i) => i.address.startsWith(`${POD_SUBNET}.`))!;
    expect(result.interfaces[ptpIp.interface!]!.name).toBe('eth0');
    const nsmIp = result.ips.find((i) => i.interface === nsmIdx)!;
    expect(nsmIp.address).toMatch(/^169\.254\.40\.\d+\/32$/);
    expect(links.find((l) => l.ifname === 'nsm0')!.addrs).toContain(nsmIp.address);
    expect(nsmIp.gateway).toMatch(/^169\.254\.40\.\d+$/);

    expect(await ping(pod, `${POD_SUBNET}.1`)).toBe(true); // ptp's host side, in the node namespace
    expect(await ping(node, ptpIp.address.split('/')[0]!)).toBe(true);
    expect(await ping(pod, nsmIp.gateway!)).toBe(true); // the endpoint, over the mesh

    const conns = await cniConnections();
    expect(conns).toHaveLength(1);
    expect(conns[0]!.network_service).toBe(SERVICE);
    expect(conns[0]!.state).toBe('UP');
    expect(stateFiles()).toHaveLength(1);

    // CHECK as libcni runs it: every plugin in order, each given the cached final result. Debian's ptp
    // (1.1.1) takes every address in that result as its own and looks for it on CNI_IFNAME, so it fails on the
    // addresses any chained plugin appends; on its own result it passes.
    await expect(runtime.check(list, a, raw)).rejects.toThrow(`Failed to match addr ${nsmIp.address} on interface eth0`);
    expect((await runtime.check({ ...list, plugins: [list.plugins[0]!] }, a, runs[0]!.json!)).map((r) => r.exitCode)).toEqual([0]);
    const check = await nsmCni('CHECK', a, undefined, raw);
    expect([check.exitCode, check.stdout, check.stderr]).toEqual([0, '', '']);

    const dels = await runtime.del(list, a, raw);
    expect(dels.map((r) => [r.plugin, r.exitCode, r.stdout])).toEqual([
      ['nsm-cni', 0, ''],
      ['ptp', 0, ''],
    ]);
    expect(await podLinks(pod)).toEqual([]);
    expect(await cniConnections()).toEqual([]);
    expect(stateFiles()).toEqual([]);

    const again = await runtime.del(list, a, raw);
    expect(again.map((r) => r.exitCode)).toEqual([0, 0]);
    // A runtime that lost its cache deletes without prevResult.
    expect((await nsmCni('DEL', a)).exitCode).toBe(0);
    console.log(`ADD ms: ${runs.map((r) => `${r.plugin} ${r.ms.toFixed(0)}`).join(', ')}; DEL ms: ${dels.map((r) => `${r.plugin} ${r.ms.toFixed(0)}`).join(', ')}`);
  });

  it('takes the services from CNI_ARGS and labels the request with the pod name', async () => {
    const pod = await createNetns('p2');
    const a = attachment(pod, { args: { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: `${tag}-web`, NSM_NETWORK_SERVICES: `kernel://${SERVICE}/mesh1?app%3Dweb%26tier%3Dfront` } });
    const { result } = await runtime.add(list, a);
    expect((result as unknown as ResultShape).interfaces.map((i) => i.name)).toContain('mesh1');
    const [conn] = await cniConnections();
    expect(conn!.labels).toMatchObject({ app: 'web', tier: 'front', podName: `${tag}-web` });
    expect((await runtime.del(list, a, result)).map((r) => r.exitCode)).toEqual([0, 0]);
    expect(await cniConnections()).toEqual([]);
  });

  it('speaks the 0.4.0 result format when the list says 0.4.0 (IPs carry their version)', async () => {
    const pod = await createNetns('p10');
    const old: Conflist = { ...list, cniVersion: '0.4.0' };
    const a = attachment(pod, { capabilityArgs: { networkServices: SERVICE } });
    const { result } = await runtime.add(old, a);
    const r = result as unknown as ResultShape;
    expect(r.cniVersion).toBe('0.4.0');
    expect(r.ips.map((i) => i.version)).toEqual(['4', '4']);
    const check = await runtime.exec('nsm-cni', 'CHECK', a, JSON.stringify(runtime.pluginConf(old, old.plugins[1]!, a, result)));
    expect(check.exitCode, check.stdout).toBe(0);
    expect((await runtime.del(old, a, result)).map((x) => x.exitCode)).toEqual([0, 0]);
    expect(await cniConnections()).toEqual([]);
  });

  it('passes the previous result through untouched when the pod asks for no service', async () => {
    const pod = await createNetns('p3');
    const a = attachment(pod);
    const { result, runs } = await runtime.add(list, a);
    expect(result).toEqual(runs[0]!.json);
    expect(stateFiles()).toEqual([]);
    expect((await runtime.check(list, a, result)).map((r) => r.exitCode)).toEqual([0, 0]); // nothing of ours to trip ptp
    expect((await runtime.del(list, a, result)).map((r) => r.exitCode)).toEqual([0, 0]);
  });

  it('CHECK fails with the cause when an address is gone or nsmd closed the connection', async () => {
    const pod = await createNetns('p4');
    const a = attachment(pod, { capabilityArgs: { networkServices: `${SERVICE}/nsm0` } });
    const { result } = await runtime.add(list, a);
    const addr = (result as unknown as ResultShape).ips.find((i) => i.address.startsWith('169.254.'))!.address;

    await execIn(pod, ['ip', 'addr', 'del', addr, 'dev', 'nsm0']);
    const lost = await nsmCni('CHECK', a, undefined, result);
    expect(lost.exitCode).not.toBe(0);
    expect(lost.json).toMatchObject({ code: 101 });
    expect((lost.json as unknown as CniErrorShape).msg).toContain(`lacks address(es) ${addr}`);

    const [conn] = await cniConnections();
    expect((await nsmctl(nsmd.url, ['close', conn!.id])).exitCode).toBe(0);
    const closed = await nsmCni('CHECK', a, undefined, result);
    expect(closed.json).toMatchObject({ code: 102 });
    expect((closed.json as unknown as CniErrorShape).msg).toMatch(/has no connection .*closed or expired/);

    expect((await runtime.del(list, a, result)).map((r) => r.exitCode)).toEqual([0, 0]);
    expect(stateFiles()).toEqual([]);
  });

  it('ADD is all or nothing: an unknown second service leaves no interface, connection or record', async () => {
    const pod = await createNetns('p5');
    const a = attachment(pod, { capabilityArgs: { networkServices: [`${SERVICE}/nsm0`, `${tag}-nosuch/nsm1`] } });
    const prev = (await runtime.exec('ptp', 'ADD', a, JSON.stringify(runtime.pluginConf(list, list.plugins[0]!, a, undefined)))).json;
    const r = await nsmCni('ADD', a, undefined, prev);
    expect(r.exitCode).toBe(1);
    expect(r.json).toMatchObject({ cniVersion: '1.0.0', code: 100, details: 'gRPC status NOT_FOUND' });
    expect((r.json as unknown as CniErrorShape).msg).toContain(`${tag}-nosuch`);
    expect((await podLinks(pod)).map((l) => l.ifname)).toEqual(['eth0']);
    expect(await cniConnections()).toEqual([]);
    expect(stateFiles()).toEqual([]);
    expect((await runtime.del(list, a, prev)).map((r) => r.exitCode)).toEqual([0, 0]);
  });

  it('DEL succeeds after the pod namespace is gone, and nsmd forgets the connection', async () => {
    const pod = await createNetns('p6');
    const a = attachment(pod, { capabilityArgs: { networkServices: SERVICE } });
    const { result } = await runtime.add(list, a);
    expect(await cniConnections()).toHaveLength(1);
    await deleteNetns(pod);
    expect((await runtime.del(list, a, result)).map((r) => r.exitCode)).toEqual([0, 0]);
    expect(await cniConnections()).toEqual([]);
    expect(stateFiles()).toEqual([]);
  });

  it('answers bad input with a CNI error object carrying the spec code', async () => {
    const pod = await createNetns('p7');
    const a = attachment(pod);
    const cases: [string, Promise<Awaited<ReturnType<typeof nsmCni>>>, number, RegExp][] = [
      ['bad JSON', nsmCni('ADD', a, () => '{"cniVersion": "1.0.0",'), 6, /not JSON/],
      ['missing cniVersion', nsmCni('ADD', a, ({ cniVersion: _, ...c }) => c), 7, /no "cniVersion"/],
      ['unsupported version', nsmCni('ADD', a, (c) => ({ ...c, cniVersion: '0.2.0' })), 1, /"0\.2\.0" is not supported/],
      ['bad services (runtimeConfig)', nsmCni('ADD', { ...a, capabilityArgs: { networkServices: 'vxlan://svc' } }), 7, /runtimeConfig\.networkServices: .*not supported .*accepted forms/],
      ['bad services (CNI_ARGS)', nsmCni('ADD', { ...a, args: { NSM_NETWORK_SERVICES: 'svc/this-name-is-far-too-long' } }), 4, /CNI_ARGS NSM_NETWORK_SERVICES: .*at most 15/],
      ['missing CNI_NETNS', nsmCni('ADD', { ...a, netns: undefined }), 4, /CNI_NETNS is not set/],
      ['missing CNI_CONTAINERID', nsmCni('DEL', { ...a, containerId: undefined }), 4, /CNI_CONTAINERID is not set/],
      ['ipam given', nsmCni('ADD', a, (c) => ({ ...c, ipam: { type: 'host-local' } })), 2, /takes no "ipam"/],
      ['bad field type', nsmCni('ADD', a, (c) => ({ ...c, insecure: 'yes', requestTimeout: '10' })), 7, /insecure: Expected boolean.*requestTimeout: duration "10" has no unit/],
      ['CHECK on 0.3.1', nsmCni('CHECK', a, (c) => ({ ...c, cniVersion: '0.3.1', prevResult: {} })), 1, /CHECK needs cniVersion 0\.4\.0/],
      ['CHECK without prevResult', nsmCni('CHECK', a), 7, /CHECK needs prevResult/],
      ['vanished namespace', nsmCni('ADD', { ...a, netns: `/var/run/netns/nsmt-${tag}-gone`, capabilityArgs: { networkServices: SERVICE } }), 3, /does not exist/],
    ];
    const bad = await runtime.exec('nsm-cni', 'FROB', a, '{}');
    expect(bad.json).toMatchObject({ code: 4, msg: expect.stringMatching(/CNI_COMMAND "FROB"/) });
    for (const [what, pending, code, msg] of cases) {
      const r = await pending;
      expect(r.exitCode, what).toBe(1);
      expect(r.json, `${what}: ${r.stdout}`).toMatchObject({ code, msg: expect.stringMatching(msg) });
      expect(Object.keys(r.json!).sort(), what).toEqual(['cniVersion', 'code', 'details', 'msg']);
    }
    expect(stateFiles()).toEqual([]);
  });

  // Last: stops nsmd.
  it('DEL succeeds with nsmd gone and still removes its record; ADD then asks to retry later', async () => {
    const pod = await createNetns('p8');
    const a = attachment(pod, { capabilityArgs: { networkServices: SERVICE } });
    const { result } = await runtime.add(list, a);
    expect(stateFiles()).toHaveLength(1);
    await nsmd.stop();
    const dels = await runtime.del(list, a, result);
    expect(dels.map((r) => r.exitCode)).toEqual([0, 0]);
    expect(dels[0]!.ms).toBeLessThan(5000);
    expect(stateFiles()).toEqual([]);

    const pod2 = await createNetns('p9');
    const retry = await nsmCni('ADD', attachment(pod2, { capabilityArgs: { networkServices: SERVICE } }));
    expect(retry.json).toMatchObject({ code: 11, msg: expect.stringMatching(/nsmd's socket .* does not exist: is nsmd running/) });
    expect(retry.ms).toBeLessThan(5000);
    expect(stateFiles()).toEqual([]);
  });
});

