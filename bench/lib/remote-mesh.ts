/**
 * The two-node mesh the cross-node benches measure, and the phases they share.
 *
 * Two "nodes" on one machine, as the multi-node tests build them: node namespaces joined by veths to a
 * bridge in an underlay namespace, etcd in the underlay namespace as the shared registry, nsmd (from dist/)
 * inside each node namespace with its remote API on the node's address. An icmp responder in a pod
 * namespace registers through node 1's nsmd; the bench process is the client of a pod on node 0, speaking gRPC
 * to node 0's nsmd. Identity is on, as in production: X.509-SVIDs from an embedded SPIFFE issuer started
 * here, mutual TLS on every hop (node to node too), and the client signs its path segment, which is timed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiClient } from '../../src/api/grpc.js';
import type { Connection } from '../../src/api/types.js';
import { EmbeddedIssuer } from '../../src/identity/issuer.js';
import { podId } from '../../src/identity/spiffe-id.js';
import { sourceTransport, type Transport } from '../../src/identity/transport.js';
import { Child } from './child.js';
import type { Cleanups } from './cleanup.js';
import { runIperfClient, startIperfServer, type IperfResult } from './iperf.js';
import { linksIn, type BenchNamespaces, type Netns } from './netns.js';
import { grouped, names, timedRequest, type Timed, timedClose as timedCloseOf } from './requests.js';
import { Metrics, note, percentile, ROOT } from './report.js';
import { createUnderlay, killStaleNamespaceProcesses, pingFrom, startEtcdIn, startNsmdOnNode, type NodeNsmd, type Underlay } from './underlay.js';
import { FatalError, waitFor } from './wait.js';

export const REQUEST_TIMEOUT_MS = 15_000;
const TRUST_DOMAIN = 'nsmesh.local';
export const BIN = {
  nsmd: path.join(ROOT, 'dist/src/cli/nsmd.js'),
  icmpResponder: path.join(ROOT, 'dist/examples/icmp-responder/main.js'),
};

export interface RemoteMesh {
  ul: Underlay;
  nsmd: [NodeNsmd, NodeNsmd];
  endpoint: Child;
  client: ApiClient<'networkservice.NetworkService'>;
  transport: Transport;
  cli: Netns;
  nse: Netns;
  service: string;
  /** Sent with every Request: `encryption: required` makes the connection WireGuard. */
  labels: Record<string, string>;
  cleanups: Cleanups;
}

export interface RemoteMeshOptions {
  underlayMtu: number;
  /** Prefix the responder hands its point-to-point addresses out of. */
  cidr: string;
  labels?: Record<string, string>;
}

/**
 * Refuses early, with the fix, what would otherwise fail half-way through a run; then stops what killed earlier
 * runs left serving inside their namespaces.
 */
export async function prepareRemoteRun(bench: string, commands: [string, string][]): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write(`error: ${bench} must run as root: it creates network namespaces and tunnels (try: sudo npm run bench -- ${bench})\n`);
    process.exit(1);
  }
  for (const f of [BIN.nsmd, BIN.icmpResponder]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: build first (npm run build)`);
  }
  const onPath = (cmd: string) => (process.env.PATH ?? '/usr/sbin:/usr/bin').split(':').some((d) => fs.existsSync(path.join(d, cmd)));
  for (const [cmd, pkg] of [['etcd', 'etcd-server'], ['iperf3', 'iperf3'], ['ss', 'iproute2'], ...commands]) {
    if (!onPath(cmd)) throw new Error(`${cmd} is not installed: apt-get install ${pkg}`);
  }
  const orphans = await killStaleNamespaceProcesses();
  if (orphans.length) note(`killed processes left in namespaces of earlier runs: ${orphans.join(' ')}`);
}

export async function startRemoteMesh(nss: BenchNamespaces, cleanups: Cleanups, tmp: string, o: RemoteMeshOptions): Promise<RemoteMesh> {
  const ul = await createUnderlay(nss, 2, o.underlayMtu);
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
    NSM_CIDR_PREFIX: o.cidr,
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
  return { ul, nsmd: [near, far], endpoint, client, transport, cli, nse, service, labels: o.labels ?? {}, cleanups };
}

export function timedClose(mesh: RemoteMesh, conn: Connection): Promise<Timed> {
  return timedCloseOf(mesh, conn, REQUEST_TIMEOUT_MS);
}

export function failuresOf(what: string, results: Timed[], mesh: RemoteMesh): string[] {
  const failed = results.filter((r) => r.error).map((r) => r.error!);
  if (!failed.length) return [];
  const dead = [...mesh.nsmd.map((n) => n.child), mesh.endpoint].filter((c) => !c.running).map((c) => `\n${c.name} exited:\n${c.tail()}`);
  return [`${what}: ${failed.length} of ${results.length} failed:\n    ${grouped(failed).join('\n    ')}${dead.join('')}`];
}

export const addrOf = (cidr: string | undefined) => cidr?.split('/')[0];

/** After a signal the cleanups are tearing the mesh down: figures measured from then on would be noise. */
export function stopIfInterrupted(mesh: RemoteMesh): void {
  if (mesh.cleanups.interrupted) throw new Error('interrupted');
}

/**
 * Sequential Requests after a warm-up, then sequential Closes, then a check that both ends of every
 * connection went; sets remote_ok, remote_seq_p50/p99_ms, close_p50/p99_ms and leftover_links.
 */
export async function setupLatency(mesh: RemoteMesh, tag: string, m: Metrics, o: { warmup: number; n: number }): Promise<string[]> {
  const failures: string[] = [];
  // The first Requests pay for the node-to-node TLS channel, the endpoint's channel and the netns sockets:
  // one-off costs, not per-connection ones.
  const warm: Timed[] = [];
  for (const r of names(tag, 'w', o.warmup)) warm.push(await timedRequest(mesh, r.id, r.ifname, REQUEST_TIMEOUT_MS));
  const warmFailed = failuresOf('warm-up Requests', warm, mesh);
  if (warmFailed.length) throw new Error(warmFailed.join('\n'));
  for (const r of warm) failures.push(...failuresOf('warm-up Closes', [await timedClose(mesh, r.conn!)], mesh));

  note(`nsmesh: ${o.n} sequential remote Requests (node 0 -> node 1), with identity${Object.keys(mesh.labels).length ? `, labels ${JSON.stringify(mesh.labels)}` : ''}`);
  const seq: Timed[] = [];
  for (const r of names(tag, 's', o.n)) {
    stopIfInterrupted(mesh);
    seq.push(await timedRequest(mesh, r.id, r.ifname, REQUEST_TIMEOUT_MS));
  }
  stopIfInterrupted(mesh);
  const ok = seq.filter((r) => r.conn);
  m.set('remote_ok', ok.length, 'requests');
  m.set('remote_seq_p50_ms', percentile(ok.map((r) => r.ms), 50), 'ms');
  m.set('remote_seq_p99_ms', percentile(ok.map((r) => r.ms), 99), 'ms');
  failures.push(...failuresOf('sequential Requests', seq, mesh));

  note(`nsmesh: closing ${ok.length} remote connections one at a time`);
  const closes: Timed[] = [];
  for (const r of ok) {
    stopIfInterrupted(mesh);
    closes.push(await timedClose(mesh, r.conn!));
  }
  stopIfInterrupted(mesh);
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

/** One end of a hand-built link: the client side sends from `from` (source `fromAddr`) to `toAddr` in `to`. */
export interface IperfPath {
  from: Netns;
  fromAddr: string;
  to: Netns;
  toAddr: string;
}

/**
 * iperf3 through the mesh connection and through the hand-built link, `rounds` of each. The order flips every
 * round (mesh hand, hand mesh, …) so that drift (other load on the host) falls on both alike, and the ratio
 * is taken between the two medians: on a shared 2-vCPU host a run can lose up to half to a neighbour,
 * which moves a mean by its whole dip but a median by one rank. Every run's figure is reported too. Client
 * and server are pinned to fixed, different CPUs (when there are two) so both links are measured with the
 * same placement. Sets iperf_<which>_run<i>_*, iperf_<which>_gbps (medians), mesh_over_hand_ratio (their
 * ratio) and mesh_over_hand_paired_median (the median of the rounds' own ratios).
 */
export async function compareThroughput(
  nss: BenchNamespaces,
  mesh: RemoteMesh,
  m: Metrics,
  paths: { mesh: IperfPath; hand: IperfPath },
  o: { port: number; seconds: number; rounds: number; omit?: number },
): Promise<void> {
  for (const [what, p] of Object.entries(paths)) {
    await waitFor(`ping over the ${what} link from ${p.from.name} to ${p.toAddr}`, () => pingFrom(p.from, p.toAddr), 10_000, 100);
  }
  for (const p of Object.values(paths)) await startIperfServer(nss, mesh.cleanups, p.to, p.toAddr, o.port);
  const cpus: [number, number] | undefined = os.cpus().length >= 2 ? [0, 1] : undefined;
  const pin = cpus ? { cpus } : {};
  // A short warm-up per link, not recorded: in one run the first stream after the setup phase came out far
  // below all others (6.7 against 18–26 Gbit/s), and the first stream is always the mesh's.
  for (const which of ['mesh', 'hand'] as const) {
    const p = paths[which];
    await runIperfClient(mesh.cleanups, p.from, p.toAddr, p.fromAddr, o.port, 1, pin);
  }
  const runs: Record<'mesh' | 'hand', IperfResult[]> = { mesh: [], hand: [] };
  for (let round = 1; round <= o.rounds; round++) {
    const order = round % 2 === 1 ? (['mesh', 'hand'] as const) : (['hand', 'mesh'] as const);
    for (const which of order) {
      stopIfInterrupted(mesh);
      note(`iperf3 round ${round}/${o.rounds}: ${which} (${o.seconds} s after ${o.omit ?? 0} s omitted, one TCP stream${cpus ? `, client on CPU ${cpus[0]}, server on CPU ${cpus[1]}` : ''})`);
      const p = paths[which];
      const r = await runIperfClient(mesh.cleanups, p.from, p.toAddr, p.fromAddr, o.port, o.seconds, { ...(o.omit ? { omit: o.omit } : {}), ...pin });
      runs[which].push(r);
      m.set(`iperf_${which}_run${round}_gbps`, r.gbps, 'Gbit/s');
      m.set(`iperf_${which}_run${round}_retransmits`, r.retransmits, 'segments');
    }
  }
  stopIfInterrupted(mesh);
  const median = (rs: IperfResult[]) => medianOf(rs.map((r) => r.gbps));
  m.set('iperf_mesh_gbps', median(runs.mesh), 'Gbit/s');
  m.set('iperf_hand_gbps', median(runs.hand), 'Gbit/s');
  m.set('mesh_over_hand_ratio', median(runs.mesh) / median(runs.hand), 'x');
  // The same comparison made within each round (two runs seconds apart): a change of load between rounds
  // then cancels out, one that falls between a round's two runs spoils that round only.
  m.set('mesh_over_hand_paired_median', medianOf(runs.mesh.map((r, i) => r.gbps / runs.hand[i]!.gbps)), 'x');
  const spread = (rs: IperfResult[]) => `${Math.min(...rs.map((r) => r.gbps)).toFixed(2)}–${Math.max(...rs.map((r) => r.gbps)).toFixed(2)}`;
  note(`iperf3 medians of ${o.rounds} runs: mesh ${median(runs.mesh).toFixed(2)} Gbit/s (runs ${spread(runs.mesh)}), hand-built ${median(runs.hand).toFixed(2)} Gbit/s (runs ${spread(runs.hand)})`);
}

/** The middle value; with an even count, the mean of the two middle ones. */
function medianOf(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/** The mesh connection the throughput phase measures, closed by the cleanups if the run stops before its own Close. */
export async function throughputConnection(mesh: RemoteMesh, id: string, ifname: string, failures: string[]): Promise<{ conn: Connection; close: () => Promise<void>; path: IperfPath }> {
  const t = await timedRequest(mesh, id, ifname, REQUEST_TIMEOUT_MS);
  if (!t.conn) throw new Error(`the throughput connection failed: ${t.error}`);
  const conn = t.conn;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    const c = await timedClose(mesh, conn);
    if (c.error) failures.push(`closing the throughput connection: ${c.error}`);
  };
  mesh.cleanups.push(close);
  const ip = conn.context?.ip_context;
  const cli = addrOf(ip?.src_ip_addrs[0]);
  const nse = addrOf(ip?.dst_ip_addrs[0]);
  if (!cli || !nse) throw new Error(`the throughput connection has no addresses: ${JSON.stringify(ip)}`);
  return { conn, close, path: { from: mesh.cli, fromAddr: cli, to: mesh.nse, toAddr: nse } };
}
