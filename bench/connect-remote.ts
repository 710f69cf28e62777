/**
 * connect-remote: what a cross-node connection costs to set up, and what its VXLAN data path carries
 * compared with a VXLAN link built by hand with iproute2 over the same underlay.
 *
 * Two "nodes" on one machine, as the multi-node tests build them: node namespaces joined by veths to a
 * bridge in an underlay namespace, etcd in the underlay namespace as the shared registry, nsmd (from dist/)
 * inside each node namespace with its remote API on the node's address. An icmp responder in a pod
 * namespace registers through node 1's nsmd; this process is the client of a pod on node 0, speaking gRPC
 * to node 0's nsmd. Identity is on, as in production: X.509-SVIDs from an embedded SPIFFE issuer started
 * here, mutual TLS on every hop (node to node too), and this client signs its path segment, which is timed.
 *
 * Everything carries the run's `nsmb-<hex>-` tag and is removed at the end, on failure and on Ctrl-C too.
 */
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ApiClient } from '../src/api/grpc.js';
import type { Connection } from '../src/api/types.js';
import { VXLAN_PORT, vxlanMtu } from '../src/dataplane/vxlan/mtu.js';
import { EmbeddedIssuer } from '../src/identity/issuer.js';
import { podId } from '../src/identity/spiffe-id.js';
import { sourceTransport, type Transport } from '../src/identity/transport.js';
import { Child } from './lib/child.js';
import { Cleanups } from './lib/cleanup.js';
import { finishRun, runBench, startRun } from './lib/run.js';
import { runIperfClient, startIperfServer, type IperfResult } from './lib/iperf.js';
import { BenchNamespaces, linksIn, type Netns } from './lib/netns.js';
import { errorText, grouped, names, timedRequest, type Timed } from './lib/requests.js';
import { Metrics, note, percentile, ROOT } from './lib/report.js';
import { createUnderlay, killStaleNamespaceProcesses, pingFrom, startEtcdIn, startNsmdOnNode, type NodeNsmd, type Underlay } from './lib/underlay.js';
import { createHandVxlan, vxlanDifferences, vxlanLinks } from './lib/vxlan.js';
import { FatalError, waitFor } from './lib/wait.js';

const BENCH = 'connect-remote';
const WARMUP = 10;
const SEQ_N = 200;
const REQUEST_TIMEOUT_MS = 15_000;
const UNDERLAY_MTU = 1500;
/** nsmd's own rule (underlay MTU minus its VXLAN overhead), so the hand-built link gets the very same MTU. */
const TUNNEL_MTU = vxlanMtu(UNDERLAY_MTU, '198.18.0.1');
const NSM_CIDR = '169.254.0.0/17';
/** The hand-built link's /32s: pod range too, but outside what the responder hands out. */
const HAND_ADDRS = ['169.254.200.1', '169.254.200.2'] as const;
const IPERF_PORT = 5201;
const IPERF_SECONDS = 5;
const IPERF_ROUNDS = 2;

const TARGET_SEQ_P50_MS = 10;
const TARGET_RATIO = 0.95;

const TRUST_DOMAIN = 'nsmesh.local';
const BIN = {
  nsmd: path.join(ROOT, 'dist/src/cli/nsmd.js'),
  icmpResponder: path.join(ROOT, 'dist/examples/icmp-responder/main.js'),
};

const cleanups = new Cleanups();

// ---------------------------------------------------------------------------------------------- helpers



function requireEnvironment(): void {
  if (process.getuid?.() !== 0) {
    process.stderr.write(`error: ${BENCH} must run as root: it creates network namespaces, veths and VXLAN devices (try: sudo npm run bench -- ${BENCH})\n`);
    process.exit(1);
  }
  for (const f of [BIN.nsmd, BIN.icmpResponder]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: build first (npm run build)`);
  }
  const onPath = (cmd: string) => (process.env.PATH ?? '/usr/sbin:/usr/bin').split(':').some((d) => fs.existsSync(path.join(d, cmd)));
  for (const [cmd, pkg] of [['etcd', 'etcd-server'], ['iperf3', 'iperf3'], ['ss', 'iproute2']] as const) {
    if (!onPath(cmd)) throw new Error(`${cmd} is not installed: apt-get install ${pkg}`);
  }
}

// ---------------------------------------------------------------------------------------------- the mesh

interface Mesh {
  ul: Underlay;
  nsmd: [NodeNsmd, NodeNsmd];
  endpoint: Child;
  client: ApiClient<'networkservice.NetworkService'>;
  transport: Transport;
  cli: Netns;
  nse: Netns;
  service: string;
}

async function startMesh(nss: BenchNamespaces, tmp: string): Promise<Mesh> {
  const ul = await createUnderlay(nss, 2, UNDERLAY_MTU);
  note(`underlay ${ul.subnet} in ${ul.host.name}, nodes ${ul.nodes.map((n) => `${n.name} (${n.ip})`).join(', ')}`);
  const etcd = await startEtcdIn(nss, cleanups, ul.host, path.join(tmp, 'etcd'));

  const issuerStarting = EmbeddedIssuer.start({ trustDomain: TRUST_DOMAIN, stateDir: path.join(tmp, 'issuer') });
  cleanups.push(async () => (await issuerStarting).close());
  const issuer = await issuerStarting;
  const workload = (id: string) => issuer.addWorkload(id, path.join(tmp, `${id.split('/').pop()}.sock`));
  const admin = sourceTransport(issuer.x509Source(`spiffe://${TRUST_DOMAIN}/nsmesh/admin/bench`));
  cleanups.push(async () => admin.close());

  const nsmd: NodeNsmd[] = [];
  for (const [i, node] of ul.nodes.entries()) {
    const name = `${nss.prefix}nsmd${i}`;
    nsmd.push(
      await startNsmdOnNode(nss, cleanups, node, {
        nsmdBin: BIN.nsmd,
        name,
        dir: path.join(tmp, `n${i}`),
        registryUrl: etcd.url,
        env: { SPIFFE_ENDPOINT_SOCKET: await workload(`spiffe://${TRUST_DOMAIN}/nsmesh/nsmd/${name}`) },
        probeTransport: admin,
      }),
    );
  }
  const [near, far] = nsmd as [NodeNsmd, NodeNsmd];

  const cli = await nss.create('cli');
  const nse = await nss.create('nse');
  const service = `${nss.prefix}svc`;
  const nseName = `${nss.prefix}icmp`;
  const endpoint = new Child('icmp-responder', 'ip', ['netns', 'exec', nse.name, process.execPath, BIN.icmpResponder], {
    NSM_NAME: nseName,
    NSM_CONNECT_TO: far.url,
    NSM_SERVICE_NAMES: service,
    NSM_CIDR_PREFIX: NSM_CIDR,
    NSM_LOG_LEVEL: 'WARN',
    SPIFFE_ENDPOINT_SOCKET: await workload(podId(TRUST_DOMAIN, 'bench', nseName)),
  });
  nss.adopt(endpoint.proc.pid);
  cleanups.push(() => endpoint.stop());
  // Asked of node 0's nsmd: the Requests depend on it finding the endpoint through etcd, not on node 1 having it.
  const reg = new ApiClient('registry.NetworkServiceEndpointRegistry', near.url, admin);
  try {
    await waitFor('the icmp responder on node 1 to be visible from node 0', async () => {
      for (const c of [endpoint, near.child, far.child]) if (!c.running) throw new FatalError(`${c.name} exited:\n${c.tail()}`);
      return (await reg.collect('Find', { network_service_endpoint: { name: nseName } }, { timeoutMs: 1000 })).length > 0;
    }, 20_000);
  } finally {
    reg.close();
  }

  const transport = sourceTransport(issuer.x509Source(podId(TRUST_DOMAIN, 'bench', 'client')));
  const client = new ApiClient('networkservice.NetworkService', near.url, transport);
  cleanups.push(async () => {
    client.close();
    transport.close();
  });
  return { ul, nsmd: [near, far], endpoint, client, transport, cli, nse, service };
}



async function timedClose(mesh: Mesh, conn: Connection): Promise<Timed> {
  const t0 = performance.now();
  try {
    await mesh.client.unary('Close', conn, { timeoutMs: REQUEST_TIMEOUT_MS });
    return { ms: performance.now() - t0 };
  } catch (e) {
    return { ms: performance.now() - t0, error: errorText(e) };
  }
}

function failuresOf(what: string, results: Timed[], mesh: Mesh): string[] {
  const failed = results.filter((r) => r.error).map((r) => r.error!);
  if (!failed.length) return [];
  const dead = [...mesh.nsmd.map((n) => n.child), mesh.endpoint].filter((c) => !c.running).map((c) => `\n${c.name} exited:\n${c.tail()}`);
  return [`${what}: ${failed.length} of ${results.length} failed:\n    ${grouped(failed).join('\n    ')}${dead.join('')}`];
}

const addrOf = (cidr: string | undefined) => cidr?.split('/')[0];

/** After a signal the cleanups are tearing the mesh down: figures measured from then on would be noise. */
function stopIfInterrupted(): void {
  if (cleanups.interrupted) throw new Error('interrupted');
}

// ------------------------------------------------------------------------------------------- the phases

async function setupLatency(mesh: Mesh, tag: string, m: Metrics): Promise<string[]> {
  const failures: string[] = [];
  // The first Requests pay for the node-to-node TLS channel, the endpoint's channel and the netns sockets:
  // one-off costs, not per-connection ones.
  const warm: Timed[] = [];
  for (const r of names(tag, 'w', WARMUP)) warm.push(await timedRequest(mesh, r.id, r.ifname, REQUEST_TIMEOUT_MS));
  const warmFailed = failuresOf('warm-up Requests', warm, mesh);
  if (warmFailed.length) throw new Error(warmFailed.join('\n'));
  for (const r of warm) failures.push(...failuresOf('warm-up Closes', [await timedClose(mesh, r.conn!)], mesh));

  note(`nsmesh: ${SEQ_N} sequential remote Requests (node 0 -> node 1), with identity`);
  const seq: Timed[] = [];
  for (const r of names(tag, 's', SEQ_N)) {
    stopIfInterrupted();
    seq.push(await timedRequest(mesh, r.id, r.ifname, REQUEST_TIMEOUT_MS));
  }
  stopIfInterrupted();
  const ok = seq.filter((r) => r.conn);
  m.set('remote_ok', ok.length, 'requests');
  m.set('remote_seq_p50_ms', percentile(ok.map((r) => r.ms), 50), 'ms');
  m.set('remote_seq_p99_ms', percentile(ok.map((r) => r.ms), 99), 'ms');
  failures.push(...failuresOf('sequential Requests', seq, mesh));

  note(`nsmesh: closing ${ok.length} remote connections one at a time`);
  const closes: Timed[] = [];
  for (const r of ok) {
    stopIfInterrupted();
    closes.push(await timedClose(mesh, r.conn!));
  }
  stopIfInterrupted();
  m.set('close_p50_ms', percentile(closes.filter((c) => !c.error).map((c) => c.ms), 50), 'ms');
  m.set('close_p99_ms', percentile(closes.filter((c) => !c.error).map((c) => c.ms), 99), 'ms');
  failures.push(...failuresOf('Closes', closes, mesh));

  // Node 1 removes its end when node 0's Close reaches it, which may finish after our Close returns.
  const left = async () => [...(await linksIn(mesh.cli)), ...(await linksIn(mesh.nse))];
  await waitFor('both ends of every closed connection to be removed', async () => (await left()).length === 0, 30_000).catch(() => undefined);
  const leftover = await left();
  m.set('leftover_links', leftover.length, 'links');
  if (leftover.length) failures.push(`links left after closing everything: ${leftover.slice(0, 20).join(' ')}${leftover.length > 20 ? ' …' : ''}`);
  return failures;
}

async function throughput(nss: BenchNamespaces, mesh: Mesh, m: Metrics): Promise<string[]> {
  const failures: string[] = [];
  const tag = nss.tag;
  const [node0, node1] = mesh.ul.nodes as [Underlay['nodes'][0], Underlay['nodes'][0]];

  const meshIf = `n${tag}t`;
  const t = await timedRequest(mesh, `${tag}-tput`, meshIf, REQUEST_TIMEOUT_MS);
  if (!t.conn) throw new Error(`the throughput connection failed: ${t.error}`);
  const conn = t.conn;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    const c = await timedClose(mesh, conn);
    if (c.error) failures.push(`closing the throughput connection: ${c.error}`);
  };
  cleanups.push(close);
  const ip = conn.context?.ip_context;
  const meshCli = addrOf(ip?.src_ip_addrs[0]);
  const meshNse = addrOf(ip?.dst_ip_addrs[0]);
  if (!meshCli || !meshNse) throw new Error(`the throughput connection has no addresses: ${JSON.stringify(ip)}`);

  // Linux allows one VXLAN device per VNI and port in a link net, so the hand-built link takes a VNI no
  // mesh device on either node uses; nothing else in the mesh is asking for VNIs during this phase.
  const meshLinks = [...(await vxlanLinks(mesh.cli)), ...(await vxlanLinks(mesh.nse))];
  const used = new Set(meshLinks.map((l) => l.vni));
  let vni = 4242;
  while (used.has(vni)) vni++;

  const hp0 = await nss.create('hp0');
  const hp1 = await nss.create('hp1');
  const hand0 = { node: node0, pod: hp0, ifname: 'hv0', addr: HAND_ADDRS[0] };
  const hand1 = { node: node1, pod: hp1, ifname: 'hv1', addr: HAND_ADDRS[1] };
  await createHandVxlan(vni, VXLAN_PORT, TUNNEL_MTU, hand0, hand1);

  const meshDev = (await vxlanLinks(mesh.cli)).find((l) => l.ifname === meshIf);
  const handDev = (await vxlanLinks(hp0)).find((l) => l.ifname === hand0.ifname);
  if (!meshDev || !handDev) throw new Error(`VXLAN device missing: mesh ${meshIf} ${meshDev ? 'found' : 'missing'}, hand-built ${handDev ? 'found' : 'missing'}`);
  m.set('mesh_vxlan_mtu', meshDev.mtu, 'bytes');
  m.set('hand_vxlan_mtu', handDev.mtu, 'bytes');
  const diff = vxlanDifferences(meshDev, handDev);
  note(`client-side devices: mesh ${meshIf} vni ${meshDev.vni}, hand-built ${hand0.ifname} vni ${vni}; ${diff.length ? `they differ in: ${diff.join(', ')}` : 'same settings otherwise'}`);

  for (const [what, from, to] of [['mesh', mesh.cli, meshNse], ['hand-built', hp0, HAND_ADDRS[1]]] as const) {
    await waitFor(`ping over the ${what} link from ${from.name} to ${to}`, () => pingFrom(from, to), 10_000, 100);
  }
  await startIperfServer(nss, cleanups, mesh.nse, meshNse, IPERF_PORT);
  await startIperfServer(nss, cleanups, hp1, HAND_ADDRS[1], IPERF_PORT);

  // Alternating A B A B so that drift (other load on the host, thermal) falls on both about equally.
  const runs: Record<'mesh' | 'hand', IperfResult[]> = { mesh: [], hand: [] };
  for (let round = 1; round <= IPERF_ROUNDS; round++) {
    for (const which of ['mesh', 'hand'] as const) {
      stopIfInterrupted();
      note(`iperf3 round ${round}: ${which} (${IPERF_SECONDS} s, one TCP stream)`);
      const r =
        which === 'mesh'
          ? await runIperfClient(cleanups, mesh.cli, meshNse, meshCli, IPERF_PORT, IPERF_SECONDS)
          : await runIperfClient(cleanups, hp0, HAND_ADDRS[1], HAND_ADDRS[0], IPERF_PORT, IPERF_SECONDS);
      runs[which].push(r);
      m.set(`iperf_${which}_run${round}_gbps`, r.gbps, 'Gbit/s');
      m.set(`iperf_${which}_run${round}_retransmits`, r.retransmits, 'segments');
    }
  }
  stopIfInterrupted();
  const mean = (rs: IperfResult[]) => rs.reduce((s, r) => s + r.gbps, 0) / rs.length;
  m.set('iperf_mesh_gbps', mean(runs.mesh), 'Gbit/s');
  m.set('iperf_hand_gbps', mean(runs.hand), 'Gbit/s');
  m.set('mesh_over_hand_ratio', mean(runs.mesh) / mean(runs.hand), 'x');

  await close();
  return failures;
}

// ------------------------------------------------------------------------------------------------- main

async function main(): Promise<number> {
  requireEnvironment();
  const orphans = await killStaleNamespaceProcesses();
  if (orphans.length) note(`killed processes left in namespaces of earlier runs: ${orphans.join(' ')}`);
  const { nss, tmp, m } = await startRun(cleanups);
  const mesh = await startMesh(nss, tmp);
  const failures: string[] = [];
  failures.push(...(await setupLatency(mesh, nss.tag, m)));
  failures.push(...(await throughput(nss, mesh, m)));

  const p50 = m.get('remote_seq_p50_ms')!;
  const ratio = m.get('mesh_over_hand_ratio')!;
  const targets: [string, boolean][] = [
    [`remote_seq_p50_ms <= ${TARGET_SEQ_P50_MS} ms (${p50})`, p50 <= TARGET_SEQ_P50_MS],
    [`mesh_over_hand_ratio >= ${TARGET_RATIO} (${ratio})`, ratio >= TARGET_RATIO],
    [`remote_ok = ${SEQ_N} (${m.get('remote_ok')})`, m.get('remote_ok') === SEQ_N],
    [`leftover_links = 0 (${m.get('leftover_links')})`, m.get('leftover_links') === 0],
  ];
  return finishRun(BENCH, m, targets, failures);
}

await runBench(cleanups, main);
