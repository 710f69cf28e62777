/**
 * The seed's flagship example end to end, as real processes in real namespaces, identity on: a client pod
 * annotated `ns.networkservicemesh.io: secure-intranet-connectivity` → nsmd → nse-firewall → nsmd →
 * nse-vpn-gateway → WireGuard → the intranet's VPN concentrator → an intranet host serving TCP. The
 * NetworkService is the seed's own YAML, applied as it ships in examples/.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../src/api/grpc.js';
import type { Connection, DeepPartial, NetworkServiceRequest } from '../../src/api/types.js';
import { inodeUrlOf } from '../../src/dataplane/netns.js';
import { createNetlinkDataplane } from '../../src/dataplane/veth/index.js';
import type { Dataplane } from '../../src/dataplane/types.js';
import { overlaps, readNftCounters } from '../../src/endpoint/index.js';
import { signOwnSegment } from '../../src/identity/outgoing.js';
import type { Transport } from '../../src/identity/transport.js';
import { buildIntranet, INTRANET, startTcpService, tcpProbe, type Intranet, type TcpService } from '../../examples/secure-intranet-connectivity/lab.js';
import { DEFAULT_DENY_COUNTER, FIREWALL_TABLE } from '../../examples/firewall/rules.js';
import { SEED_NETWORK_SERVICE_YAML } from '../helpers/fixtures.js';
import { ids, testTransport } from '../helpers/identity.js';
import { nsmctl, runNsc, startNsmd, type NsmdProc } from '../helpers/mesh.js';
import { cleanupNetns, createNetns, execIn, ping, tag, TEST_PREFIX, type Netns } from '../helpers/netns.js';
import { waitFor } from '../helpers/wait.js';
import { CHAIN_BIN, startEndpointProcess, type EndpointProcess } from './processes.js';

const SERVICE = 'secure-intranet-connectivity';
const NSMD = `nsmd-${tag}`;
const FIREWALL = `${tag}-firewall`;
const GATEWAY = `${tag}-vpn-gateway`;
const FIREWALL_POOL = '169.254.64.0/18';
const ALLOWED = 8080;
const DENIED = 22;
const UNLISTED = 9000;

const RULES = `rules:
  - name: intranet-web
    action: allow
    protocol: tcp
    ports: [${ALLOWED}]
    destinations: [${INTRANET.prefix}]
  - name: no-ssh
    action: deny
    protocol: tcp
    ports: [${DENIED}]
  - name: ping
    action: allow
    protocol: icmp
    destinations: [${INTRANET.prefix}]
`;

let dir: string;
let dp: Dataplane;
let nsmd: NsmdProc;
let intranet: Intranet;
let service: TcpService;
let firewall: EndpointProcess;
let gateway: EndpointProcess;
const pods = {} as Record<'fw' | 'gw' | 'corp' | 'host', Netns>;
let baseline: Record<'gw' | 'corp' | 'host', string[]>;

// The gateway lets in only what comes through the firewall: a client's own app=firewall label does not get it there.
const startGateway = () =>
  startEndpointProcess(pods.gw, CHAIN_BIN.vpnGateway, {
    name: GATEWAY,
    connectTo: nsmd.url,
    env: { NSM_VPN_CONFIG: intranet.gatewayConfig, NSM_ACCEPT_VIA: ids.pod(FIREWALL) },
  });
const startFirewall = () =>
  startEndpointProcess(pods.fw, CHAIN_BIN.firewall, {
    name: FIREWALL,
    connectTo: nsmd.url,
    env: { NSM_FIREWALL_CONFIG: path.join(dir, 'firewall.yaml'), NSM_CIDR_PREFIX: FIREWALL_POOL },
  });

const linkNames = async (ns: Netns) => (await dp.snapshot(ns.path)).links.map((l) => l.ifname).filter((n) => n !== 'lo').sort();
const routesTo = async (ns: Netns, prefix: string) => (await dp.snapshot(ns.path)).routes.filter((r) => overlaps(r.prefix, prefix));
const counters = async () => Object.fromEntries((await readNftCounters('inet', FIREWALL_TABLE, { netns: pods.fw.name })).map((c) => [c.name, c.packets]));
const policyRules = async () => (JSON.parse(String((await execIn(pods.fw, ['ip', '-j', 'rule'])).stdout)) as { priority: number }[]).filter((r) => r.priority >= 1000 && r.priority < 32766);

interface Client {
  ns: Netns;
  name: string;
  conn: Connection;
}

/** A client pod as the seed has it: nsc reads the annotation (NS_NETWORKSERVICEMESH_IO), service and interface name. */
async function nscClient(short: string): Promise<Client> {
  const ns = await createNetns(short);
  const name = `${tag}-${short}`;
  const r = await runNsc(ns, { name, connectTo: nsmd.url, services: '', env: { NS_NETWORKSERVICEMESH_IO: `${SERVICE}/${tag}i0` } });
  expect(r.exitCode, r.stderr).toBe(0);
  return { ns, name, conn: r.json[0] as Connection };
}

/** A client in this process (for what nsc has no flag for: excluded prefixes, an explicit refresh), as identity `name`. */
async function apiClient(name: string): Promise<{ api: ApiClient<'networkservice.NetworkService'>; transport: Transport }> {
  const transport = await testTransport(ids.pod(name));
  return { api: new ApiClient('networkservice.NetworkService', nsmd.url, transport), transport };
}

async function request(short: string, excluded: string[] = [], labels: Record<string, string> = {}): Promise<Client> {
  const ns = await createNetns(short);
  const name = `${tag}-${short}`;
  const { api, transport } = await apiClient(name);
  const req: DeepPartial<NetworkServiceRequest> = {
    connection: {
      id: `${name}-0`,
      network_service: SERVICE,
      labels,
      path: { index: 0, path_segments: [{ name, id: `${name}-0` }] },
      context: { ip_context: { excluded_prefixes: excluded } },
    },
    mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: `${tag}i0`, inodeURL: inodeUrlOf(ns.path) } }],
  };
  try {
    const metadata = await signOwnSegment(transport, api, req.connection!, 600_000, 5000);
    return { ns, name, conn: await api.unary('Request', req, { timeoutMs: 15_000, metadata }) };
  } finally {
    api.close();
  }
}

async function refresh(c: Client): Promise<Connection> {
  const { api, transport } = await apiClient(c.name);
  try {
    const metadata = await signOwnSegment(transport, api, c.conn, 600_000, 5000);
    return await api.unary('Request', { connection: c.conn, mechanism_preferences: [c.conn.mechanism!] }, { timeoutMs: 15_000, metadata });
  } finally {
    api.close();
  }
}

async function close(c: Client): Promise<void> {
  const { api } = await apiClient(c.name);
  try {
    await api.unary('Close', c.conn, { timeoutMs: 15_000 });
  } finally {
    api.close();
  }
}

const addr = (cidr: string | undefined) => cidr!.split('/')[0]!;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), `nsmchain-${tag}-`));
  fs.writeFileSync(path.join(dir, 'firewall.yaml'), RULES);
  for (const n of ['fw', 'gw', 'corp', 'host'] as const) pods[n] = await createNetns(n);
  dp = await createNetlinkDataplane();
  intranet = await buildIntranet({ gatewayNs: pods.gw.name, corpNs: pods.corp.name, hostNs: pods.host.name, dir });
  service = await startTcpService(pods.host.name, INTRANET.host, [ALLOWED, DENIED, UNLISTED]);
  nsmd = await startNsmd({ name: NSMD });
  const applied = await nsmctl(nsmd.url, ['apply', '-f', '-'], SEED_NETWORK_SERVICE_YAML);
  expect(applied.exitCode, applied.stderr).toBe(0);
  gateway = await startGateway();
  firewall = await startFirewall();
  baseline = { gw: await linkNames(pods.gw), corp: await linkNames(pods.corp), host: await linkNames(pods.host) };
});

afterAll(async () => {
  await service?.stop();
  await firewall?.stop();
  await gateway?.stop();
  await nsmd?.stop();
  await intranet?.close();
  await dp?.close();
  await cleanupNetns();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('secure-intranet-connectivity: client → firewall → VPN gateway → intranet', () => {
  let a: Client;
  let b: Client;

  it('routes the client through the firewall and on to the VPN gateway, and the path lists every hop', async () => {
    a = await nscClient('ca');
    expect(a.conn.path!.path_segments.map((s) => s.name)).toEqual([a.name, NSMD, FIREWALL, NSMD, GATEWAY]);
    // Every hop signed its segment.
    expect(a.conn.path!.path_segments.every((s) => s.token.split('.').length === 3)).toBe(true);
    expect(a.conn.network_service_endpoint_name).toBe(FIREWALL);
    const ip = a.conn.context!.ip_context!;
    expect(overlaps(ip.src_ip_addrs[0]!, FIREWALL_POOL)).toBe(true);
    expect(ip.src_routes.map((r) => r.prefix)).toContain(INTRANET.prefix);
    // The client's route to the intranet goes to the firewall, its only way there.
    const [route] = await routesTo(a.ns, INTRANET.prefix);
    expect(route).toMatchObject({ prefix: INTRANET.prefix, via: addr(ip.dst_ip_addrs[0]), ifname: `${tag}i0` });
    expect((await linkNames(pods.fw)).map((n) => n.slice(0, 3)).sort()).toEqual(['fwc', 'fwo']);
    expect((await linkNames(pods.gw)).filter((n) => n.startsWith('vpn'))).toHaveLength(1);
  });

  it('reaches an allowed port of an intranet host', async () => {
    const before = await counters();
    expect(await tcpProbe(a.ns.name, INTRANET.host, ALLOWED)).toEqual({ ok: true, detail: `intranet ${ALLOWED}` });
    expect(await ping(a.ns, INTRANET.host)).toBe(true);
    expect((await counters()).rule_1_intranet_web).toBeGreaterThan(before.rule_1_intranet_web!);
  });

  it('is stopped by the firewall on a denied port, and on a port no rule allows', async () => {
    // The host does serve both ports: from the intranet side they answer.
    expect((await tcpProbe(pods.corp.name, INTRANET.host, DENIED)).ok).toBe(true);
    expect((await tcpProbe(pods.corp.name, INTRANET.host, UNLISTED)).ok).toBe(true);
    const before = await counters();
    const denied = await tcpProbe(a.ns.name, INTRANET.host, DENIED, 1500);
    expect(denied).toEqual({ ok: false, detail: 'timed out after 1500 ms' });
    const unlisted = await tcpProbe(a.ns.name, INTRANET.host, UNLISTED, 1500);
    expect(unlisted.ok).toBe(false);
    const after = await counters();
    expect(after.rule_2_no_ssh).toBeGreaterThan(before.rule_2_no_ssh!);
    expect(after[DEFAULT_DENY_COUNTER]).toBeGreaterThan(before[DEFAULT_DENY_COUNTER]!);
  });

  it('keeps clients apart: each has its own onward link, and one leaving does not cut off another', async () => {
    b = await request('cb');
    expect(b.conn.path!.path_segments.map((s) => s.name)).toEqual([b.name, NSMD, FIREWALL, NSMD, GATEWAY]);
    expect(b.conn.path!.path_segments[3]!.id).not.toBe(a.conn.path!.path_segments[3]!.id);
    expect((await linkNames(pods.fw)).filter((n) => n.startsWith('fwo'))).toHaveLength(2);
    expect(await policyRules()).toHaveLength(2);
    expect((await tcpProbe(b.ns.name, INTRANET.host, ALLOWED)).ok).toBe(true);
    // a's onward link carries the firewall's main-table route to the intranet; b keeps working without it.
    await close(a);
    await waitFor("a's interfaces to be removed", async () => (await linkNames(a.ns)).length === 0);
    expect((await linkNames(pods.fw)).filter((n) => n.startsWith('fwo'))).toHaveLength(1);
    expect(await routesTo(pods.fw, INTRANET.prefix)).toEqual([]);
    expect((await tcpProbe(b.ns.name, INTRANET.host, ALLOWED)).ok).toBe(true);
  });

  it('refreshes the whole chain in place', async () => {
    const again = await refresh(b);
    expect(again.path!.path_segments.map((s) => s.id)).toEqual(b.conn.path!.path_segments.map((s) => s.id));
    expect(again.context!.ip_context!.src_ip_addrs).toEqual(b.conn.context!.ip_context!.src_ip_addrs);
    expect((await linkNames(pods.fw)).filter((n) => n.startsWith('fwo'))).toHaveLength(1);
    b = { ...b, conn: again };
    expect((await tcpProbe(b.ns.name, INTRANET.host, ALLOWED)).ok).toBe(true);
  });

  it('never hands a client a route or an address that overlaps a prefix it already uses', async () => {
    const used = ['169.254.64.0/24', '198.19.10.128/25'];
    const c = await request('cc', used);
    const ip = c.conn.context!.ip_context!;
    for (const a of [...ip.src_ip_addrs, ...ip.dst_ip_addrs]) expect(used.some((u) => overlaps(a, u))).toBe(false);
    // The intranet's /24 overlaps the client's /25: left out, the rest of the connection stands.
    expect(ip.src_routes.some((r) => used.some((u) => overlaps(r.prefix, u)))).toBe(false);
    expect(await routesTo(c.ns, INTRANET.prefix)).toEqual([]);
    expect(await ping(c.ns, addr(ip.dst_ip_addrs[0]))).toBe(true);
    await close(c);
    await waitFor("c's interfaces to be removed", async () => (await linkNames(c.ns)).length === 0);
  });

  it("refuses a client that asks for the VPN gateway directly with the firewall's label", async () => {
    const err = (await request('cx', [], { app: 'firewall' }).catch((e: unknown) => e)) as { code: number; details: string };
    expect(err.code).toBe(status.PERMISSION_DENIED);
    expect(err.details).toMatch(/accepts connections only through .*firewall; this one reached nsmd from .*\/pod\/.*-cx/);
    expect(await linkNames({ name: `${TEST_PREFIX}${tag}-cx`, path: `/var/run/netns/${TEST_PREFIX}${tag}-cx` })).toEqual([]);
  });

  it('closing the client removes every interface along the chain', async () => {
    await close(b);
    await waitFor('every chain interface to be removed', async () => (await linkNames(b.ns)).length === 0 && (await linkNames(pods.fw)).length === 0);
    expect(await linkNames(pods.gw)).toEqual(baseline.gw);
    expect(await linkNames(pods.corp)).toEqual(baseline.corp);
    expect(await linkNames(pods.host)).toEqual(baseline.host);
    expect(await routesTo(pods.fw, INTRANET.prefix)).toEqual([]);
    expect(await policyRules()).toEqual([]);
    const listed = JSON.parse((await nsmctl(nsmd.url, ['get', 'connections', '--output', 'json'])).stdout) as unknown[];
    expect(listed).toEqual([]);
  });

  it('closes the client when the VPN gateway side goes away', async () => {
    const d = await nscClient('cd');
    expect((await tcpProbe(d.ns.name, INTRANET.host, ALLOWED)).ok).toBe(true);
    expect(await gateway.stop()).toBe(0);
    await waitFor("the client's side to be closed", async () => (await linkNames(d.ns)).length === 0 && (await linkNames(pods.fw)).length === 0, 15_000);
    expect(await routesTo(d.ns, INTRANET.prefix)).toEqual([]);
    gateway = await startGateway();
  });

  it('leaves no way around the firewall once it stops', async () => {
    const e = await nscClient('ce');
    expect((await tcpProbe(e.ns.name, INTRANET.host, ALLOWED)).ok).toBe(true);
    expect(await firewall.stop()).toBe(0);
    await waitFor("the client's side to be closed", async () => (await linkNames(e.ns)).length === 0, 15_000);
    expect(await routesTo(e.ns, INTRANET.prefix)).toEqual([]);
    expect((await tcpProbe(e.ns.name, INTRANET.host, ALLOWED, 1000)).ok).toBe(false);
    expect(String((await execIn(pods.fw, ['cat', '/proc/sys/net/ipv4/ip_forward'])).stdout).trim()).toBe('0');
    // The VPN gateway still serves, but the service routes clients only to a firewall: none is left to pick.
    const again = await runNsc(e.ns, { name: e.name, connectTo: nsmd.url, services: '', env: { NS_NETWORKSERVICEMESH_IO: `${SERVICE}/${tag}i1` } });
    expect(again.exitCode).not.toBe(0);
    expect(again.stderr).toMatch(/no endpoint of network service "secure-intranet-connectivity" matches/);
    expect(await linkNames(e.ns)).toEqual([]);
    expect((await linkNames(pods.gw)).filter((n) => n.startsWith('vpn'))).toEqual([]);
    const { api, transport } = await apiClient(`${tag}-probe`);
    // The same holds for a hand-made Request: without app=firewall it is never routed to the gateway.
    const req = {
      connection: { id: `${tag}-x`, network_service: SERVICE, path: { index: 0, path_segments: [{ name: 'x', id: `${tag}-x` }] } },
      mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: `${tag}i2`, inodeURL: inodeUrlOf(e.ns.path) } }],
    };
    const err = await api
      .unary('Request', req, { timeoutMs: 10_000, metadata: await signOwnSegment(transport, api, req.connection, 60_000, 5000) })
      .catch((x: unknown) => x as { code: number });
    api.close();
    expect((err as { code: number }).code).toBe(status.NOT_FOUND);
  });
});

it('refuses to start with a ruleset it cannot parse, saying what is wrong', async () => {
  const bad = path.join(dir, 'bad.yaml');
  fs.writeFileSync(bad, 'rules:\n  - action: allow\n    protocol: icmp\n    ports: [22]\n');
  const r = await execa('ip', ['netns', 'exec', pods.fw.name, 'node', CHAIN_BIN.firewall], {
    env: { NSM_INSECURE: 'true', NSM_FIREWALL_CONFIG: bad, NSM_CONNECT_TO: nsmd.url },
    reject: false,
  });
  expect(r.exitCode).toBe(1);
  expect(String(r.stderr)).toMatch(/rules\.0\.ports: icmp has no ports/);
});
