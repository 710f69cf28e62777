/**
 * chain: what the seed's two-hop chain costs against a direct connection, in the same run.
 *
 * The secure-intranet-connectivity example on one machine, as processes from dist/ with identity on
 * (X.509-SVIDs from an embedded issuer, mutual TLS, path tokens): nsmd, nse-vpn-gateway with its WireGuard
 * tunnel to a stand-in intranet (examples/secure-intranet-connectivity/lab.ts), nse-firewall, and the seed's
 * NetworkService. This process is the client. A chain connection is a plain Request (the service routes it
 * to the firewall, which requests onward to the gateway); a direct connection carries app=firewall, which
 * the service routes straight to the gateway — the very request the firewall makes, one hop instead of two.
 *
 * - setup and Close, sequential, chain and direct alternating so that drift falls on both alike;
 * - iperf3 through a chain connection and through a direct one, alternating rounds, to two targets: an
 *   intranet host, across the gateway's WireGuard tunnel (userspace wireguard-go, which bounds both), and
 *   the gateway's own tunnel address, handed out as a route for the benchmark, which no tunnel bounds: the
 *   difference there is what the firewall hop (a veth, forwarding, conntrack and the ruleset) costs.
 *
 * Everything carries the run's `nsmb-<hex>-` tag and is removed at the end, on failure and on Ctrl-C too.
 */
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ApiClient } from '../src/api/grpc.js';
import type { Connection, DeepPartial, NetworkServiceRequest } from '../src/api/types.js';
import { inodeUrlOf } from '../src/dataplane/netns.js';
import { EmbeddedIssuer } from '../src/identity/issuer.js';
import { signOwnSegment } from '../src/identity/outgoing.js';
import { podId } from '../src/identity/spiffe-id.js';
import { sourceTransport, type Transport } from '../src/identity/transport.js';
import { parseNetworkServiceYaml } from '../src/registry/yaml.js';
import { buildIntranet, INTRANET } from '../examples/secure-intranet-connectivity/lab.js';
import { Child } from './lib/child.js';
import { Cleanups } from './lib/cleanup.js';
import { runIperfClient, startIperfServer, type IperfResult } from './lib/iperf.js';
import { linksIn, type BenchNamespaces, type Netns } from './lib/netns.js';
import { Metrics, note, percentile, ROOT } from './lib/report.js';
import { errorText, grouped, type Timed, timedClose as timedCloseOf } from './lib/requests.js';
import { finishRun, runBench, startRun } from './lib/run.js';
import { pingFrom } from './lib/underlay.js';
import { FatalError, waitFor } from './lib/wait.js';

const BENCH = 'chain';
const WARMUP = 5;
const ROUNDS = 100;
const REQUEST_TIMEOUT_MS = 15_000;
const IPERF_PORT = 5201;
const IPERF_SECONDS = 5;
const IPERF_ROUNDS = 2;
const SERVICE = 'secure-intranet-connectivity';
const TRUST_DOMAIN = 'nsmesh.local';
const SEED_YAML = path.join(ROOT, 'examples/secure-intranet-connectivity/network-service.yaml');
const BIN = {
  nsmd: path.join(ROOT, 'dist/src/cli/nsmd.js'),
  firewall: path.join(ROOT, 'dist/examples/firewall/main.js'),
  vpnGateway: path.join(ROOT, 'dist/examples/vpn-gateway/main.js'),
};
const GATEWAY_ADDR = `${INTRANET.gatewayTunnel}/32`;
const RULES = `rules:
  - {name: iperf, action: allow, protocol: tcp, ports: [${IPERF_PORT}], destinations: [${INTRANET.prefix}, ${GATEWAY_ADDR}]}
  - {name: ping, action: allow, protocol: icmp, destinations: [${INTRANET.prefix}]}
`;

const cleanups = new Cleanups();

function requireEnvironment(): void {
  if (process.getuid?.() !== 0) {
    process.stderr.write(`error: ${BENCH} must run as root: it creates network namespaces (try: sudo npm run bench -- ${BENCH})\n`);
    process.exit(1);
  }
  for (const f of Object.values(BIN)) if (!fs.existsSync(f)) throw new Error(`${f} is missing: build first (npm run build)`);
  const onPath = (cmd: string) => (process.env.PATH ?? '/usr/sbin:/usr/bin').split(':').some((d) => fs.existsSync(path.join(d, cmd)));
  for (const [cmd, pkg] of [['iperf3', 'iperf3'], ['wireguard-go', 'wireguard-go'], ['nft', 'nftables'], ['ss', 'iproute2']] as const) {
    if (!onPath(cmd)) throw new Error(`${cmd} is not installed: apt-get install ${pkg}`);
  }
}

interface Mesh {
  client: ApiClient<'networkservice.NetworkService'>;
  transport: Transport;
  children: Child[];
  nss: { chain: Netns; direct: Netns; fw: Netns; gw: Netns; corp: Netns; host: Netns };
}

async function startMesh(nss: BenchNamespaces, tmp: string): Promise<Mesh> {
  const issuerStarting = EmbeddedIssuer.start({ trustDomain: TRUST_DOMAIN, stateDir: path.join(tmp, 'issuer') });
  cleanups.push(async () => (await issuerStarting).close());
  const issuer = await issuerStarting;
  const identity = async (id: string) => ({ SPIFFE_ENDPOINT_SOCKET: await issuer.addWorkload(id, path.join(tmp, `${id.split('/').pop()}.sock`)) });
  const admin = sourceTransport(issuer.x509Source(`spiffe://${TRUST_DOMAIN}/nsmesh/admin/bench`));
  cleanups.push(async () => admin.close());

  const ns = {
    chain: await nss.create('cli'),
    direct: await nss.create('dir'),
    fw: await nss.create('fw'),
    gw: await nss.create('gw'),
    corp: await nss.create('corp'),
    host: await nss.create('host'),
  };
  const intranet = await buildIntranet({ gatewayNs: ns.gw.name, corpNs: ns.corp.name, hostNs: ns.host.name, dir: tmp, extraPrefixes: [GATEWAY_ADDR] });
  cleanups.push(() => intranet.close());

  const url = `unix://${tmp}/nsm.io.sock`;
  const children: Child[] = [];
  const spawn = (name: string, netns: Netns | undefined, bin: string, env: Record<string, string>) => {
    const args = netns ? ['netns', 'exec', netns.name, process.execPath, bin] : [bin];
    const c = new Child(name, netns ? 'ip' : process.execPath, args, { NSM_LOG_LEVEL: 'WARN', ...env });
    nss.adopt(c.proc.pid);
    cleanups.push(() => c.stop());
    children.push(c);
    return c;
  };
  const alive = () => {
    for (const c of children) if (!c.running) throw new FatalError(`${c.name} exited:\n${c.tail()}`);
  };
  spawn('nsmd', undefined, BIN.nsmd, {
    NSM_NAME: `${nss.prefix}nsmd`,
    NSM_LISTEN_ON: url,
    NSM_STATE_DIR: path.join(tmp, 'state'),
    ...(await identity(`spiffe://${TRUST_DOMAIN}/nsmesh/nsmd/bench`)),
  });
  const nsApi = new ApiClient('registry.NetworkServiceRegistry', url, admin);
  try {
    const [seed] = parseNetworkServiceYaml(fs.readFileSync(SEED_YAML, 'utf8'));
    await waitFor('nsmd to take the seed NetworkService', async () => {
      alive();
      await nsApi.unary('Register', seed!, { timeoutMs: 1000 });
      return true;
    }, 15_000);
  } finally {
    nsApi.close();
  }

  fs.writeFileSync(path.join(tmp, 'firewall.yaml'), RULES);
  const endpoints: { name: string; netns: Netns; bin: string; env: Record<string, string> }[] = [
    { name: `${nss.prefix}vpn-gateway`, netns: ns.gw, bin: BIN.vpnGateway, env: { NSM_VPN_CONFIG: intranet.gatewayConfig } },
    { name: `${nss.prefix}firewall`, netns: ns.fw, bin: BIN.firewall, env: { NSM_FIREWALL_CONFIG: path.join(tmp, 'firewall.yaml') } },
  ];
  const reg = new ApiClient('registry.NetworkServiceEndpointRegistry', url, admin);
  try {
    for (const e of endpoints) {
      spawn(e.name, e.netns, e.bin, { NSM_NAME: e.name, NSM_CONNECT_TO: url, ...e.env, ...(await identity(podId(TRUST_DOMAIN, 'bench', e.name))) });
      await waitFor(`${e.name} to register`, async () => {
        alive();
        return (await reg.collect('Find', { network_service_endpoint: { name: e.name } }, { timeoutMs: 1000 })).length > 0;
      }, 20_000);
    }
  } finally {
    reg.close();
  }
  const transport = sourceTransport(issuer.x509Source(podId(TRUST_DOMAIN, 'bench', 'client')));
  const client = new ApiClient('networkservice.NetworkService', url, transport);
  cleanups.push(async () => {
    client.close();
    transport.close();
  });
  return { client, transport, children, nss: ns };
}

type Kind = 'chain' | 'direct';

function kernelRequest(mesh: Mesh, kind: Kind, id: string): DeepPartial<NetworkServiceRequest> {
  return {
    connection: {
      id,
      network_service: SERVICE,
      // app=firewall is what the service's first match routes to the gateway: the firewall's own request.
      labels: kind === 'direct' ? { app: 'firewall' } : {},
      path: { index: 0, path_segments: [{ name: 'nsmb-client', id }] },
    },
    mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: `nsmb${kind[0]}`, inodeURL: inodeUrlOf(mesh.nss[kind].path) } }],
  };
}

async function timedRequest(mesh: Mesh, kind: Kind, id: string): Promise<Timed> {
  const t0 = performance.now();
  try {
    const req = kernelRequest(mesh, kind, id);
    const metadata = await signOwnSegment(mesh.transport, mesh.client, req.connection!, 600_000, REQUEST_TIMEOUT_MS);
    const conn = await mesh.client.unary('Request', req, { timeoutMs: REQUEST_TIMEOUT_MS, metadata });
    return { ms: performance.now() - t0, conn };
  } catch (e) {
    return { ms: performance.now() - t0, error: errorText(e) };
  }
}

function timedClose(mesh: Mesh, conn: Connection): Promise<Timed> {
  return timedCloseOf(mesh, conn, REQUEST_TIMEOUT_MS);
}

function failuresOf(what: string, results: Timed[], mesh: Mesh): string[] {
  const failed = results.filter((r) => r.error).map((r) => r.error!);
  if (!failed.length) return [];
  const dead = mesh.children.filter((c) => !c.running).map((c) => `\n${c.name} exited:\n${c.tail()}`);
  return [`${what}: ${failed.length} of ${results.length} failed:\n    ${grouped(failed).join('\n    ')}${dead.join('')}`];
}

const stopIfInterrupted = () => {
  if (cleanups.interrupted) throw new Error('interrupted');
};

/** Links the chain leaves in the client, firewall and gateway namespaces (the gateway's uplink and tunnel are its own). */
async function chainLinks(mesh: Mesh): Promise<string[]> {
  const gw = (await linksIn(mesh.nss.gw)).filter((l) => l.startsWith('vpn'));
  return [...(await linksIn(mesh.nss.chain)), ...(await linksIn(mesh.nss.direct)), ...(await linksIn(mesh.nss.fw)), ...gw];
}

async function setupLatency(mesh: Mesh, tag: string, m: Metrics): Promise<string[]> {
  const failures: string[] = [];
  // The first Requests pay for channels, TLS handshakes and netns sockets: one-off costs.
  for (let i = 0; i < WARMUP; i++) {
    for (const kind of ['chain', 'direct'] as const) {
      const r = await timedRequest(mesh, kind, `${tag}-w${kind[0]}${i}`);
      if (!r.conn) throw new Error(`warm-up ${kind} Request failed: ${r.error}${failuresOf('', [r], mesh).join('')}`);
      failures.push(...failuresOf(`warm-up ${kind} Close`, [await timedClose(mesh, r.conn)], mesh));
    }
  }
  note(`${ROUNDS} rounds, each: a chain Request and its Close, then a direct Request and its Close`);
  const results: Record<Kind, { setup: Timed[]; close: Timed[] }> = { chain: { setup: [], close: [] }, direct: { setup: [], close: [] } };
  let pathChecked = false;
  for (let i = 0; i < ROUNDS; i++) {
    for (const kind of ['chain', 'direct'] as const) {
      stopIfInterrupted();
      const r = await timedRequest(mesh, kind, `${tag}-${kind[0]}${i}`);
      results[kind].setup.push(r);
      if (!r.conn) continue;
      if (!pathChecked && kind === 'chain') {
        note(`chain path: ${r.conn.path!.path_segments.map((s) => s.name).join(' -> ')}`);
        pathChecked = true;
      }
      results[kind].close.push(await timedClose(mesh, r.conn));
    }
  }
  stopIfInterrupted();
  for (const kind of ['chain', 'direct'] as const) {
    const ok = results[kind].setup.filter((r) => r.conn).map((r) => r.ms);
    const closed = results[kind].close.filter((r) => !r.error).map((r) => r.ms);
    m.set(`${kind}_ok`, ok.length, 'requests');
    m.set(`${kind}_setup_p50_ms`, percentile(ok, 50), 'ms');
    m.set(`${kind}_setup_p99_ms`, percentile(ok, 99), 'ms');
    m.set(`${kind}_close_p50_ms`, percentile(closed, 50), 'ms');
    failures.push(...failuresOf(`${kind} Requests`, results[kind].setup, mesh), ...failuresOf(`${kind} Closes`, results[kind].close, mesh));
  }
  m.set('chain_over_direct_setup_p50', m.get('chain_setup_p50_ms')! / m.get('direct_setup_p50_ms')!, 'x');

  // The firewall's onward Close and the gateway's side may finish after the client's Close has returned.
  await waitFor('every chain link to be removed', async () => (await chainLinks(mesh)).length === 0, 30_000).catch(() => undefined);
  const left = await chainLinks(mesh);
  m.set('leftover_links', left.length, 'links');
  if (left.length) failures.push(`links left after closing everything: ${left.slice(0, 20).join(' ')}`);
  return failures;
}

async function throughput(nss: BenchNamespaces, mesh: Mesh, m: Metrics): Promise<string[]> {
  const failures: string[] = [];
  const conns: Partial<Record<Kind, Connection>> = {};
  for (const kind of ['chain', 'direct'] as const) {
    const r = await timedRequest(mesh, kind, `${nss.tag}-t${kind[0]}`);
    if (!r.conn) throw new Error(`the ${kind} throughput connection failed: ${r.error}`);
    const conn = r.conn;
    conns[kind] = conn;
    cleanups.push(async () => {
      const c = await timedClose(mesh, conn);
      if (c.error) note(`closing the ${kind} throughput connection: ${c.error}`);
    });
    await waitFor(`ping from the ${kind} client to the intranet host`, async () => pingFrom(mesh.nss[kind], INTRANET.host), 10_000, 100);
  }
  const targets = [
    { key: 'intranet', ns: mesh.nss.host, ip: INTRANET.host },
    { key: 'gateway', ns: mesh.nss.gw, ip: INTRANET.gatewayTunnel },
  ] as const;
  for (const t of targets) await startIperfServer(nss, cleanups, t.ns, t.ip, IPERF_PORT);
  for (const t of targets) {
    const runs: Record<Kind, IperfResult[]> = { chain: [], direct: [] };
    for (let round = 1; round <= IPERF_ROUNDS; round++) {
      for (const kind of ['chain', 'direct'] as const) {
        stopIfInterrupted();
        note(`iperf3 to the ${t.key} (${t.ip}), round ${round}: ${kind} (${IPERF_SECONDS} s, one TCP stream)`);
        const src = conns[kind]!.context!.ip_context!.src_ip_addrs[0]!.split('/')[0]!;
        const r = await runIperfClient(cleanups, mesh.nss[kind], t.ip, src, IPERF_PORT, IPERF_SECONDS);
        runs[kind].push(r);
        m.set(`iperf_${t.key}_${kind}_run${round}_gbps`, r.gbps, 'Gbit/s');
        m.set(`iperf_${t.key}_${kind}_run${round}_retransmits`, r.retransmits, 'segments');
      }
    }
    stopIfInterrupted();
    const mean = (rs: IperfResult[]) => rs.reduce((s, r) => s + r.gbps, 0) / rs.length;
    m.set(`iperf_${t.key}_chain_gbps`, mean(runs.chain), 'Gbit/s');
    m.set(`iperf_${t.key}_direct_gbps`, mean(runs.direct), 'Gbit/s');
    m.set(`${t.key}_chain_over_direct_throughput`, mean(runs.chain) / mean(runs.direct), 'x');
  }
  return failures;
}

async function main(): Promise<number> {
  requireEnvironment();
  const { nss, tmp, m } = await startRun(cleanups);
  const mesh = await startMesh(nss, tmp);
  const failures: string[] = [];
  failures.push(...(await setupLatency(mesh, nss.tag, m)));
  failures.push(...(await throughput(nss, mesh, m)));
  const targets: [string, boolean][] = [
    [`chain_ok = ${ROUNDS} (${m.get('chain_ok')})`, m.get('chain_ok') === ROUNDS],
    [`direct_ok = ${ROUNDS} (${m.get('direct_ok')})`, m.get('direct_ok') === ROUNDS],
    [`leftover_links = 0 (${m.get('leftover_links')})`, m.get('leftover_links') === 0],
  ];
  return finishRun(BENCH, m, targets, failures);
}

await runBench(cleanups, main);
