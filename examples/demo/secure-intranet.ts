#!/usr/bin/env node
// `npm run demo -- secure-intranet`: the seed talk's flagship example on one machine. A client pod asks for
// secure-intranet-connectivity; the seed's NetworkService routes it to a firewall endpoint, whose own request
// (app=firewall) is routed on to a VPN gateway that reaches a stand-in corporate intranet over WireGuard.
// Every hop runs mutual TLS with SPIFFE identities. The demo shows the connection's path, traces the hops a
// packet takes, lets an allowed port through and shows a denied one stopped at the firewall, then stops the
// firewall and shows no way around it is left. Everything is torn down at the end (also on Ctrl-C).
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import type { Connection } from '../../src/api/types.js';
import { connectionsTable } from '../../src/cli/connection-view.js';
import { readNftCounters, replaceNftTable } from '../../src/endpoint/index.js';
import { EmbeddedIssuer } from '../../src/identity/issuer.js';
import { podId } from '../../src/identity/spiffe-id.js';
import { FatalError, waitFor } from '../../src/util/wait-for.js';
import { FIREWALL_TABLE } from '../firewall/rules.js';
import { buildIntranet, INTRANET, startTcpService, tcpProbe, type Intranet, type TcpService } from '../secure-intranet-connectivity/lab.js';
import { DemoLab, runDemo, say } from './run.js';

// Compiled to dist/examples/demo/: the project root is three levels up.
const ROOT = path.resolve(import.meta.dirname, '../../..');
const bin = (p: string) => path.join(ROOT, 'dist', p);
const SEED_YAML = path.join(ROOT, 'examples/secure-intranet-connectivity/network-service.yaml');
const lab = new DemoLab();
const { tag, dir } = lab;
const TRUST_DOMAIN = 'nsmesh.local';
const SERVICE = 'secure-intranet-connectivity';
const PORTS = { allowed: 8080, denied: 22 };
const RULES = `rules:
  - name: intranet-web
    action: allow
    protocol: tcp
    ports: [${PORTS.allowed}]
    destinations: [${INTRANET.prefix}]
  - name: no-ssh
    action: deny
    protocol: tcp
    ports: [${PORTS.denied}]
  - name: ping
    action: allow
    protocol: icmp
    destinations: [${INTRANET.prefix}]
`;
let issuer: EmbeddedIssuer | undefined;
let intranet: Intranet | undefined;
let tcpService: TcpService | undefined;

const step = (s: string) => say(`\n==> ${s}`);
const indent = (text: string, by = '    ') => text.trimEnd().split('\n').map((l) => `${by}${l}`).join('\n');

const sockets = new Map<string, string>();
/** A Workload API socket of its own for each identity: the embedded issuer attests by socket. */
async function identity(spiffeId: string): Promise<Record<string, string>> {
  let url = sockets.get(spiffeId);
  if (!url) {
    const file = path.join(dir, 'spiffe', `${spiffeId.split('/').slice(-2).join('-')}.sock`);
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    url = await issuer!.addWorkload(spiffeId, file);
    sockets.set(spiffeId, url);
  }
  return { SPIFFE_ENDPOINT_SOCKET: url };
}

const netns = (n: string) => lab.netns(n);

const spawnIn = (ns: string, cmd: string[], env: Record<string, string>) => lab.spawnIn(ns, cmd, env);

let adminEnv: Record<string, string> = {};
let socket = '';
const nsmctl = (args: string[], input?: string) =>
  execa('node', [bin('src/cli/nsmctl.js'), ...args], { env: { ...adminEnv, NSM_CONNECT_TO: socket }, ...(input ? { input } : {}) });

let tornDown = false;
async function teardown(): Promise<void> {
  if (tornDown) return;
  tornDown = true;
  step('tearing down');
  await tcpService?.stop();
  await lab.release(async () => {
    await intranet?.close();
    await issuer?.close();
  });
}

async function waitRegistered(name: string, proc: ResultPromise): Promise<void> {
  await waitFor(`${name} to register`, async () => {
    if (proc.exitCode !== null) throw new FatalError(`${name} exited: ${String(proc.stderr ?? '')}`);
    const { stdout } = await nsmctl(['get', 'endpoints', '--output', 'json']);
    return (JSON.parse(stdout) as { name: string }[]).some((e) => e.name === name);
  }, 20_000);
}

/** Where a packet goes from the client to the intranet host, hop by hop. */
interface Hop {
  who: string;
  ns: string;
  /** Whether the hop receives the packet (all but the client) and sends it on (all but the host). */
  in: boolean;
  out: boolean;
}

/**
 * Counts, in every hop's namespace, the TCP packets to each port as they arrive (prerouting, before any
 * filter) and as they leave (postrouting, after the firewall's verdict): a packet a hop drops is counted in
 * and never out. The table only counts; it decides nothing.
 */
const TRACE_TABLE = 'nsmdemo_trace';
async function addTraceCounters(hops: Hop[], ports: number[]): Promise<void> {
  const body = [
    ...ports.flatMap((p) => [`  counter in_${p} { }`, `  counter out_${p} { }`]),
    '  chain pre {',
    '    type filter hook prerouting priority -300; policy accept;',
    ...ports.map((p) => `    tcp dport ${p} counter name "in_${p}"`),
    '  }',
    '  chain post {',
    '    type filter hook postrouting priority 300; policy accept;',
    ...ports.map((p) => `    tcp dport ${p} counter name "out_${p}"`),
    '  }',
    '',
  ].join('\n');
  for (const h of hops) await replaceNftTable('inet', TRACE_TABLE, body, { netns: h.ns });
}

async function traceCounts(hops: Hop[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const h of hops) for (const c of await readNftCounters('inet', TRACE_TABLE, { netns: h.ns })) out.set(`${h.who}/${c.name}`, c.packets);
  return out;
}

/** Runs `probe` and prints how many of its packets each hop took in and sent on towards the intranet. */
async function showHops(hops: Hop[], port: number, firewallNs: string, probe: () => Promise<string>): Promise<void> {
  const before = await traceCounts(hops);
  const fw0 = await readNftCounters('inet', FIREWALL_TABLE, { netns: firewallNs });
  say(`  ${await probe()}`);
  const after = await traceCounts(hops);
  const fw1 = await readNftCounters('inet', FIREWALL_TABLE, { netns: firewallNs });
  const delta = (who: string, dir: 'in' | 'out') => after.get(`${who}/${dir}_${port}`)! - before.get(`${who}/${dir}_${port}`)!;
  for (const h of hops) {
    const got = h.in ? `took in ${String(delta(h.who, 'in')).padStart(2)}` : '';
    const sent = h.out ? `sent on ${String(delta(h.who, 'out')).padStart(2)}` : '';
    const stopped = h.in && h.out && delta(h.who, 'in') > 0 && delta(h.who, 'out') === 0 ? '   <- stopped here' : '';
    say(`    ${h.who.padEnd(18)} ${got.padEnd(12)} ${sent}${stopped}`);
  }
  const hit = fw1
    .map((c) => ({ name: c.name, more: c.packets - (fw0.find((x) => x.name === c.name)?.packets ?? 0) }))
    .filter((c) => c.more > 0)
    .map((c) => `${c.name} +${c.more}`);
  say(`    firewall rule counters: ${hit.join(', ') || 'none hit'}`);
}

/** A traceroute with ping: each TTL expires one hop further, and that hop answers "time to live exceeded". */
async function trace(clientNs: string, names: Map<string, string>): Promise<void> {
  for (let ttl = 1; ttl <= 6; ttl++) {
    const r = await execa('ip', ['netns', 'exec', clientNs, 'ping', '-n', '-c', '1', '-W', '1', '-t', String(ttl), INTRANET.host], { reject: false });
    const text = String(r.stdout);
    const from = /From (\S+) icmp_seq=\d+ Time to live exceeded/.exec(text)?.[1];
    const reply = /bytes from ([^:\s]+):/.exec(text)?.[1];
    const addr = from ?? reply;
    say(`    hop ${ttl}: ${(addr ?? '*').padEnd(16)} ${addr ? (names.get(addr) ?? '') : 'no answer'}${reply ? '  (the destination answered)' : ''}`);
    if (reply || !addr) return;
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces: run it as root');
  step(`starting an embedded SPIFFE issuer for trust domain ${TRUST_DOMAIN} (production uses a SPIRE agent)`);
  issuer = await EmbeddedIssuer.start({ trustDomain: TRUST_DOMAIN, stateDir: path.join(dir, 'issuer') });
  adminEnv = await identity(`spiffe://${TRUST_DOMAIN}/nsmesh/admin/nsmctl`);

  step(`building the namespaces (nsmdemo-${tag}-*) and a stand-in corporate network behind a VPN concentrator`);
  const ns = {
    node: await netns('node'),
    client: await netns('client'),
    firewall: await netns('firewall'),
    gateway: await netns('vpn-gateway'),
    corp: await netns('corp'),
    host: await netns('intranet-host'),
  };
  intranet = await buildIntranet({ gatewayNs: ns.gateway, corpNs: ns.corp, hostNs: ns.host, dir });
  tcpService = await startTcpService(ns.host, INTRANET.host, [PORTS.allowed, PORTS.denied]);
  say(`  intranet ${INTRANET.prefix}: host ${INTRANET.host} serves TCP ${PORTS.allowed} and ${PORTS.denied}`);
  say(`  VPN concentrator: WireGuard ${INTRANET.concentrator}:${INTRANET.wgPort}, tunnel address ${INTRANET.concentratorTunnel}`);

  step('starting nsmd (local API on a unix socket)');
  socket = `unix://${path.join(dir, 'nsm.io.sock')}`;
  const nsmd = spawnIn(ns.node, ['node', bin('src/cli/nsmd.js')], {
    ...(await identity(`spiffe://${TRUST_DOMAIN}/nsmesh/nsmd/node-1`)),
    NSM_NAME: 'nsmd-node-1',
    NODE_NAME: 'node-1',
    NSM_LISTEN_ON: socket,
    NSM_STATE_DIR: path.join(dir, 'state'),
    NSM_LOG_LEVEL: 'WARN',
    NSM_CLEANUP_ON_EXIT: 'true',
  });
  await waitFor('nsmd', async () => {
    if (nsmd.exitCode !== null) throw new FatalError('nsmd exited');
    return (await execa('node', [bin('src/cli/nsmctl.js'), 'get', 'services'], { env: { ...adminEnv, NSM_CONNECT_TO: socket }, reject: false })).exitCode === 0;
  });

  step('applying the seed talk\'s NetworkService, as it ships in examples/secure-intranet-connectivity/');
  const yaml = fs.readFileSync(SEED_YAML, 'utf8');
  say(indent(yaml.split('\n').filter((l) => !l.startsWith('#')).join('\n')));
  await nsmctl(['apply', '-f', '-'], yaml);

  step('starting nse-vpn-gateway (app=vpn-gateway): WireGuard to the concentrator, hands clients the intranet routes');
  const gateway = spawnIn(ns.gateway, ['node', bin('examples/vpn-gateway/main.js')], {
    ...(await identity(podId(TRUST_DOMAIN, 'corp', 'vpn-gateway'))),
    NSM_NAME: 'vpn-gateway',
    NSM_CONNECT_TO: socket,
    NSM_VPN_CONFIG: intranet.gatewayConfig,
    NSM_LOG_LEVEL: 'ERROR',
  });
  await waitRegistered('vpn-gateway', gateway);

  step('starting nse-firewall (app=firewall) with these rules (default deny):');
  fs.writeFileSync(path.join(dir, 'firewall.yaml'), RULES);
  say(indent(RULES));
  const firewall = spawnIn(ns.firewall, ['node', bin('examples/firewall/main.js')], {
    ...(await identity(podId(TRUST_DOMAIN, 'corp', 'firewall'))),
    NSM_NAME: 'firewall',
    NSM_CONNECT_TO: socket,
    NSM_FIREWALL_CONFIG: path.join(dir, 'firewall.yaml'),
    NSM_LOG_LEVEL: 'WARN',
  });
  await waitRegistered('firewall', firewall);
  say(indent((await nsmctl(['get', 'endpoints'])).stdout));

  step(`connecting a client pod annotated ns.networkservicemesh.io: ${SERVICE}/nsm0`);
  const nsc = await execa('ip', ['netns', 'exec', ns.client, 'node', bin('src/cli/nsc.js'), '--output', 'json'], {
    env: { ...(await identity(podId(TRUST_DOMAIN, 'default', 'client-a'))), NSM_NAME: 'client-a', NSM_CONNECT_TO: socket, NS_NETWORKSERVICEMESH_IO: `${SERVICE}/nsm0` },
  });
  const [conn] = JSON.parse(String(nsc.stdout)) as Connection[];
  say(connectionsTable([conn!]));
  say(`  path: ${conn!.path!.path_segments.map((s) => s.name).join(' -> ')}`);
  say(`  routes handed to the client: ${conn!.context!.ip_context!.src_routes.map((r) => r.prefix).join(', ')}`);
  say(indent(String((await execa('ip', ['-n', ns.client, 'route'])).stdout)));

  step('the path each packet takes');
  // The gateway's end of the firewall's onward link: the one client-facing (vpn…) address in its namespace.
  const gwAddrs = JSON.parse(String((await execa('ip', ['-n', ns.gateway, '-4', '-j', 'addr', 'show'])).stdout)) as { ifname: string; addr_info: { local: string }[] }[];
  const gwAddr = gwAddrs.find((l) => l.ifname.startsWith('vpn'))!.addr_info[0]!.local;
  const names = new Map([
    [conn!.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!, 'firewall (its end of the client link)'],
    [gwAddr, 'vpn-gateway (its end of the firewall link)'],
    [INTRANET.concentratorTunnel, 'VPN concentrator (its tunnel address)'],
    [INTRANET.host, 'intranet host'],
  ]);
  say(`  ping with a growing TTL from the client to ${INTRANET.host}:`);
  await trace(ns.client, names);
  const hops: Hop[] = [
    { who: 'client', ns: ns.client, in: false, out: true },
    { who: 'firewall', ns: ns.firewall, in: true, out: true },
    { who: 'vpn-gateway', ns: ns.gateway, in: true, out: true },
    { who: 'VPN concentrator', ns: ns.corp, in: true, out: true },
    { who: 'intranet host', ns: ns.host, in: true, out: false },
  ];
  await addTraceCounters(hops, [PORTS.allowed, PORTS.denied]);
  say(`\n  TCP to ${INTRANET.host}:${PORTS.denied} (denied); its packets towards the intranet, hop by hop:`);
  await showHops(hops, PORTS.denied, ns.firewall, async () => {
    const r = await tcpProbe(ns.client, INTRANET.host, PORTS.denied, 1500);
    return r.ok ? `UNEXPECTEDLY answered: "${r.detail}"` : `no answer (${r.detail})`;
  });
  say(`\n  TCP to ${INTRANET.host}:${PORTS.allowed} (allowed); its packets towards the intranet, hop by hop:`);
  await showHops(hops, PORTS.allowed, ns.firewall, async () => {
    const r = await tcpProbe(ns.client, INTRANET.host, PORTS.allowed);
    return r.ok ? `answered: "${r.detail}"` : `FAILED: ${r.detail}`;
  });

  step('stopping the firewall: the client loses the intranet, and nothing routes it around the firewall');
  firewall.kill('SIGTERM');
  await firewall;
  await waitFor("the client's connection to be closed", async () => !String((await execa('ip', ['-n', ns.client, '-o', 'link'])).stdout).includes('nsm0'), 15_000);
  say(`  client routes now: ${String((await execa('ip', ['-n', ns.client, 'route'])).stdout).trim() || '(none)'}`);
  const again = await execa('ip', ['netns', 'exec', ns.client, 'node', bin('src/cli/nsc.js')], {
    env: { ...(await identity(podId(TRUST_DOMAIN, 'default', 'client-a'))), NSM_NAME: 'client-a', NSM_CONNECT_TO: socket, NS_NETWORKSERVICEMESH_IO: `${SERVICE}/nsm0` },
    reject: false,
  });
  say(`  a new request: ${again.exitCode === 0 ? 'UNEXPECTEDLY CONNECTED' : String(again.stderr).trim().split('\n').pop()}`);
  for (const n of [ns.client, ns.firewall, ns.gateway]) {
    const left = String((await execa('ip', ['-n', n, '-o', 'link', 'show'])).stdout).split('\n').map((l) => l.split(':')[1]?.trim().split('@')[0]).filter((l) => l && l !== 'lo');
    say(`  ${n}: ${left.length ? left.join(', ') : 'no interfaces'}`);
  }
}

await runDemo(main, teardown, 'demo finished');
