/**
 * connect-local: what a local connection costs through the whole Request path, against the Debian CNI
 * `ptp` plugin doing comparable veth + address + route work.
 *
 * Real processes, as in production: nsmd from dist/ with its stats reporter on, an icmp responder in its
 * own namespace, and this process as the client speaking gRPC to nsmd's socket for a client namespace.
 * Everything it creates carries the run's `nsmb-<hex>-` tag and is removed at the end, on failure and on
 * Ctrl-C too.
 *
 * The mesh runs as in production, with identity: X.509-SVIDs from an embedded SPIFFE issuer started by
 * this process, mutual TLS on every hop, and path tokens (this client signs its segment, as nsc does, and
 * that is timed too). A second mesh without identity (NSM_INSECURE) runs beside it, and the sequential
 * phase alternates Requests between the two so that the cost of identity is measured under the same noise.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ApiClient } from '../src/api/grpc.js';
import { EmbeddedIssuer } from '../src/identity/issuer.js';
import { podId } from '../src/identity/spiffe-id.js';
import { sourceTransport, type Transport } from '../src/identity/transport.js';
import type { Connection } from '../src/api/types.js';
import { Child } from './lib/child.js';
import { Cleanups } from './lib/cleanup.js';
import { finishRun, runBench, startRun } from './lib/run.js';
import { BenchNamespaces, linksIn, type Netns } from './lib/netns.js';
import { PTP, runPtpCycles, type PtpCyclesResult, type PtpCyclesSpec } from './lib/ptp.js';
import { errorText, grouped, names, timedRequest, type Timed } from './lib/requests.js';
import { Metrics, note, percentile, ROOT } from './lib/report.js';
import { FatalError, mapLimit, waitFor, withDeadline } from './lib/wait.js';

const BENCH = 'connect-local';
const WARMUP = 10;
const SEQ_N = 200;
const INFLIGHT_N = 200;
const INFLIGHT_C = 50;
const BURST_N = 1000;
const CLOSE_C = 50;
const PTP_WARMUP = 5;
const PTP_N = 100;
const STATS_INTERVAL_MS = 100;
/** nsmesh addresses; ptp's live in other namespaces but get their own range so no reader confuses them. */
const NSM_CIDR = '169.254.0.0/17';
const PTP_SUBNET = '169.254.192.0/20';
const PTP_ROUTE = '198.19.0.0/16';

const TARGET_SEQ_P50_MS = 3;
const TARGET_RATIO = 5;

const BIN = {
  nsmd: path.join(ROOT, 'dist/src/cli/nsmd.js'),
  icmpResponder: path.join(ROOT, 'dist/examples/icmp-responder/main.js'),
  ptpRunner: path.join(ROOT, 'dist/bench/lib/ptp-runner.js'),
};

// ---------------------------------------------------------------------------------------------- cleanup

const cleanups = new Cleanups();

// ----------------------------------------------------------------------------------------- nsmd's log

interface StatsLine {
  time: number;
  rssBytes: number;
  heapUsedBytes: number;
  connections: number;
  eventLoopDelayMaxMs: number;
  eventLoopDelayP99Ms: number;
}

interface Problem {
  time: number;
  level: number;
  msg: string;
  err?: string;
}

/** nsmd's stderr as pino JSON: stats lines for the figures only nsmd can see, warnings for diagnosis. */
class NsmdLog {
  readonly stats: StatsLine[] = [];
  readonly problems: Problem[] = [];
  private readonly waiters = new Set<() => void>();

  onLine = (line: string): void => {
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if (rec.msg === 'stats') {
      this.stats.push(rec as unknown as StatsLine);
      for (const w of [...this.waiters]) w();
    } else if (typeof rec.level === 'number' && rec.level >= 40) {
      this.problems.push({ time: Number(rec.time), level: rec.level, msg: String(rec.msg), ...(rec.err ? { err: String(rec.err) } : {}) });
    }
  };

  /** The first stats line (already seen or still to come) that satisfies `pred`. */
  waitForStats(what: string, pred: (s: StatsLine) => boolean, timeoutMs: number): Promise<StatsLine> {
    const seen = this.stats.find(pred);
    if (seen) return Promise.resolve(seen);
    let waiter: () => void = () => {};
    const found = new Promise<StatsLine>((resolve) => {
      waiter = () => {
        const s = this.stats.find(pred);
        if (s) resolve(s);
      };
      this.waiters.add(waiter);
    });
    return withDeadline(`nsmd to log a stats line with ${what}`, found, timeoutMs).finally(() => this.waiters.delete(waiter));
  }

  /** Worst loop stall among the reports whose interval overlaps [from, to]. */
  maxStallBetween(from: number, to: number): number {
    let worst = 0;
    for (let i = 1; i < this.stats.length; i++) {
      const start = this.stats[i - 1]!.time;
      const end = this.stats[i]!.time;
      if (end >= from && start <= to) worst = Math.max(worst, this.stats[i]!.eventLoopDelayMaxMs);
    }
    return worst;
  }

  problemsBetween(from: number, to: number): Problem[] {
    return this.problems.filter((p) => p.time >= from && p.time <= to);
  }
}

// ---------------------------------------------------------------------------------------------- helpers



function requireEnvironment(): void {
  if (process.getuid?.() !== 0) {
    process.stderr.write(`error: ${BENCH} must run as root: it creates network namespaces and veth pairs (try: sudo npm run bench -- ${BENCH})\n`);
    process.exit(1);
  }
  for (const f of [BIN.nsmd, BIN.icmpResponder, BIN.ptpRunner]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: build first (npm run build)`);
  }
  if (!fs.existsSync(PTP)) throw new Error(`${PTP} is missing: apt-get install containernetworking-plugins`);
}

// -------------------------------------------------------------------------------------------- baseline

function ptpConfig(tag: string, dataDir: string): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: `nsmb-${tag}`,
    type: 'ptp',
    ipMasq: false,
    mtu: 1500,
    ipam: { type: 'host-local', ranges: [[{ subnet: PTP_SUBNET }]], routes: [{ dst: PTP_ROUTE }], dataDir },
  });
}

/** Runs the cycles from a process already inside `node`, so plugin timings carry no `ip netns exec`. */
function runPtpInNode(node: Netns, spec: PtpCyclesSpec, timeoutMs: number): Promise<PtpCyclesResult> {
  const p = spawn('ip', ['netns', 'exec', node.name, process.execPath, BIN.ptpRunner], { stdio: ['pipe', 'pipe', 'pipe'] });
  const killIt = async () => {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  };
  cleanups.push(killIt);
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<PtpCyclesResult>((resolve, reject) => {
    p.once('error', reject);
    p.once('close', (code) => {
      if (code !== 0) return reject(new Error(`ptp runner exited with ${code}: ${stderr.trim()}`));
      try {
        resolve(JSON.parse(stdout) as PtpCyclesResult);
      } catch {
        reject(new Error(`ptp runner printed no result: ${stdout.slice(0, 200)} ${stderr.trim()}`));
      }
    });
  });
  p.stdin.end(JSON.stringify(spec));
  return withDeadline('the ptp runner', done, timeoutMs).finally(killIt);
}

async function ptpBaseline(nss: BenchNamespaces, tmp: string, m: Metrics): Promise<string[]> {
  const node = await nss.create('cninode');
  const pod = await nss.create('cnipod');
  const spec: Omit<PtpCyclesSpec, 'containerIdPrefix' | 'config'> = {
    prefix: [],
    podNetnsPath: pod.path,
    warmup: PTP_WARMUP,
    cycles: PTP_N,
    timeoutMs: 10_000,
  };
  const failures: string[] = [];

  note(`ptp: ${PTP_N} ADD/DEL cycles started from inside ${node.name}`);
  const inNode = await runPtpInNode(
    node,
    { ...spec, config: ptpConfig(nss.tag, path.join(tmp, 'cni-ipam-a')), containerIdPrefix: `${nss.prefix}a` },
    (PTP_N + PTP_WARMUP) * 2 * spec.timeoutMs,
  );
  failures.push(...inNode.failures);
  m.set('ptp_add_p50_ms', percentile(inNode.addMs, 50), 'ms');
  m.set('ptp_add_p99_ms', percentile(inNode.addMs, 99), 'ms');
  m.set('ptp_del_p50_ms', percentile(inNode.delMs, 50), 'ms');
  m.set('ptp_del_p99_ms', percentile(inNode.delMs, 99), 'ms');

  note(`ptp: ${PTP_N} ADD/DEL cycles through \`ip netns exec ${node.name}\``);
  const viaExec = await runPtpCycles({
    ...spec,
    prefix: ['ip', 'netns', 'exec', node.name],
    config: ptpConfig(nss.tag, path.join(tmp, 'cni-ipam-b')),
    containerIdPrefix: `${nss.prefix}b`,
  });
  failures.push(...viaExec.failures);
  m.set('ptp_ipnetns_add_p50_ms', percentile(viaExec.addMs, 50), 'ms');
  m.set('ptp_ipnetns_add_p99_ms', percentile(viaExec.addMs, 99), 'ms');
  m.set('ptp_add_ok', inNode.addMs.length + viaExec.addMs.length, 'cycles');

  const left = [...(await linksIn(pod)), ...(await linksIn(node))];
  if (left.length) failures.push(`ptp DEL left links behind: ${left.join(', ')}`);
  return failures;
}

// ---------------------------------------------------------------------------------------------- nsmesh

interface Mesh {
  client: ApiClient<'networkservice.NetworkService'>;
  transport: Transport | undefined;
  nsmd: Child;
  log: NsmdLog;
  cli: Netns;
  nse: Netns;
  service: string;
}

const TRUST_DOMAIN = 'nsmesh.local';
let issuer: Promise<EmbeddedIssuer> | undefined;

/** Environment giving a child its own Workload API socket, or none at all for the insecure mesh. */
async function identityEnv(tmp: string, spiffeId: string | undefined): Promise<Record<string, string>> {
  if (!spiffeId) return { NSM_INSECURE: 'true' };
  if (!issuer) {
    issuer = EmbeddedIssuer.start({ trustDomain: TRUST_DOMAIN, stateDir: path.join(tmp, 'issuer') });
    const started = issuer;
    cleanups.push(async () => (await started).close());
  }
  const iss = await issuer;
  return { SPIFFE_ENDPOINT_SOCKET: await iss.addWorkload(spiffeId, path.join(tmp, `${spiffeId.split('/').pop()}.sock`)) };
}

async function startMesh(nss: BenchNamespaces, baseTmp: string, secure: boolean): Promise<Mesh> {
  const suffix = secure ? '' : 'i';
  const tmp = path.join(baseTmp, secure ? 'secure' : 'insecure');
  fs.mkdirSync(tmp, { recursive: true });
  const cli = await nss.create(`cli${suffix}`);
  const nse = await nss.create(`nse${suffix}`);
  const url = `unix://${tmp}/nsm.io.sock`;
  const id = (name: string) => (secure ? podId(TRUST_DOMAIN, 'bench', name) : undefined);
  const service = `${nss.prefix}svc${suffix}`;
  const log = new NsmdLog();

  const nsmd = new Child(
    'nsmd',
    process.execPath,
    [BIN.nsmd],
    {
      NSM_NAME: `${nss.prefix}nsmd`,
      NODE_NAME: `${nss.prefix}node`,
      NSM_LISTEN_ON: url,
      NSM_STATE_DIR: path.join(tmp, 'state'),
      NSM_LOG_LEVEL: 'INFO',
      NSM_STATS_INTERVAL: `${STATS_INTERVAL_MS}ms`,
      ...(await identityEnv(baseTmp, secure ? `spiffe://${TRUST_DOMAIN}/nsmesh/nsmd/bench${suffix}` : undefined)),
    },
    log.onLine,
  );
  nss.adopt(nsmd.proc.pid);
  cleanups.push(() => nsmd.stop());
  const alive = (who: Child) => {
    if (!who.running) throw new FatalError(`${who.name} exited:\n${who.tail()}`);
  };

  const transport = secure ? sourceTransport((await issuer!).x509Source(podId(TRUST_DOMAIN, 'bench', 'client'))) : undefined;
  const admin = secure ? sourceTransport((await issuer!).x509Source(`spiffe://${TRUST_DOMAIN}/nsmesh/admin/bench`)) : undefined;
  const probe = new ApiClient('networkservice.NetworkService', url, admin);
  try {
    await waitFor('nsmd to serve its socket', async () => {
      alive(nsmd);
      await probe.waitForReady(200);
      return true;
    }, 15_000);
  } finally {
    probe.close();
  }

  const nseName = `${nss.prefix}icmp${suffix}`;
  const endpoint = new Child('icmp-responder', 'ip', ['netns', 'exec', nse.name, process.execPath, BIN.icmpResponder], {
    NSM_NAME: nseName,
    NSM_CONNECT_TO: url,
    NSM_SERVICE_NAMES: service,
    NSM_CIDR_PREFIX: NSM_CIDR,
    NSM_LOG_LEVEL: 'WARN',
    ...(await identityEnv(baseTmp, id(nseName))),
  });
  nss.adopt(endpoint.proc.pid);
  cleanups.push(() => endpoint.stop());
  const reg = new ApiClient('registry.NetworkServiceEndpointRegistry', url, admin);
  try {
    await waitFor('the icmp responder to register', async () => {
      alive(endpoint);
      alive(nsmd);
      return (await reg.collect('Find', { network_service_endpoint: { name: nseName } }, { timeoutMs: 1000 })).length > 0;
    }, 15_000);
  } finally {
    reg.close();
  }

  const client = new ApiClient('networkservice.NetworkService', url, transport);
  cleanups.push(async () => client.close());
  return { client, transport, nsmd, log, cli, nse, service };
}



function requireAllOk(phase: string, results: Timed[], mesh: Mesh): Connection[] {
  const failed = results.filter((r) => r.error).map((r) => r.error!);
  if (failed.length) {
    throw new Error(`${phase}: ${failed.length} of ${results.length} Requests failed:\n  ${grouped(failed).join('\n  ')}\n${mesh.nsmd.running ? '' : `nsmd exited:\n${mesh.nsmd.tail()}`}`);
  }
  return results.map((r) => r.conn!);
}

/** Closes everything, CLOSE_C at a time; returns the failures as report lines (none when all closed). */
async function closeAll(mesh: Mesh, conns: Connection[], phase: string): Promise<string[]> {
  const errors = await mapLimit(conns, CLOSE_C, async (c) => {
    try {
      await mesh.client.unary('Close', c, { timeoutMs: 60_000 });
      return undefined;
    } catch (e) {
      return errorText(e);
    }
  });
  const failed = errors.filter((e): e is string => e !== undefined);
  return failed.length ? [`${phase}: ${failed.length} of ${conns.length} Closes failed:\n    ${grouped(failed).join('\n    ')}`] : [];
}

async function meshBench(nss: BenchNamespaces, tmp: string, m: Metrics): Promise<string[]> {
  const failures: string[] = [];
  const mesh = await startMesh(nss, tmp, true);
  const plain = await startMesh(nss, tmp, false);
  const tag = nss.tag;
  const stats = (what: string, pred: (s: StatsLine) => boolean, timeoutMs: number) =>
    Promise.race([
      mesh.log.waitForStats(what, pred, timeoutMs),
      mesh.nsmd.exited.then(({ code, signal }) => {
        throw new Error(`nsmd exited (${code ?? signal}) while waiting for a stats line with ${what}:\n${mesh.nsmd.tail()}`);
      }),
    ]);

  // The first Requests pay for channel setup, the endpoint's connection and the netns sockets; those are
  // one-off costs, not per-connection ones.
  for (const each of [mesh, plain]) {
    const warm: Timed[] = [];
    for (const r of names(tag, 'w', WARMUP)) warm.push(await timedRequest(each, r.id, r.ifname, 10_000));
    failures.push(...(await closeAll(each, requireAllOk('warm-up', warm, each), 'warm-up')));
  }

  note(`nsmesh: ${SEQ_N} sequential Requests with identity, alternating with ${SEQ_N} without`);
  const seq: Timed[] = [];
  const seqPlain: Timed[] = [];
  for (const r of names(tag, 's', SEQ_N)) {
    seq.push(await timedRequest(mesh, r.id, r.ifname, 10_000));
    seqPlain.push(await timedRequest(plain, r.id, r.ifname, 10_000));
  }
  const seqConns = requireAllOk('sequential', seq, mesh);
  const plainConns = requireAllOk('sequential without identity', seqPlain, plain);
  m.set('seq_p50_ms', percentile(seq.map((r) => r.ms), 50), 'ms');
  m.set('seq_p99_ms', percentile(seq.map((r) => r.ms), 99), 'ms');
  m.set('seq_insecure_p50_ms', percentile(seqPlain.map((r) => r.ms), 50), 'ms');
  m.set('seq_insecure_p99_ms', percentile(seqPlain.map((r) => r.ms), 99), 'ms');
  m.set('identity_cost_p50_ms', m.get('seq_p50_ms')! - m.get('seq_insecure_p50_ms')!, 'ms');
  // Each Request with identity and the one without that follows it form a pair under the same momentary load;
  // the median of the pairs' differences does not carry the drift between the two medians above.
  m.set('identity_cost_paired_p50_ms', percentile(seq.map((r, i) => r.ms - seqPlain[i]!.ms), 50), 'ms');
  failures.push(...(await closeAll(mesh, seqConns, 'sequential')));
  failures.push(...(await closeAll(plain, plainConns, 'sequential without identity')));
  await plain.nsmd.stop();

  note(`nsmesh: ${INFLIGHT_N} Requests, ${INFLIGHT_C} in flight`);
  const inflight = await mapLimit(names(tag, 'f', INFLIGHT_N), INFLIGHT_C, (r) => timedRequest(mesh, r.id, r.ifname, 30_000));
  const inflightConns = requireAllOk('in-flight', inflight, mesh);
  m.set(`inflight${INFLIGHT_C}_p50_ms`, percentile(inflight.map((r) => r.ms), 50), 'ms');
  m.set(`inflight${INFLIGHT_C}_p99_ms`, percentile(inflight.map((r) => r.ms), 99), 'ms');
  failures.push(...(await closeAll(mesh, inflightConns, 'in-flight')));

  const idle = await stats('no connections left before the burst', (s) => s.connections === 0 && s.time > Date.now() - 1000, 5000);
  m.set('nsmd_rss_mb_idle', idle.rssBytes / 2 ** 20, 'MiB');

  note(`nsmesh: ${BURST_N} concurrent Requests`);
  const t0 = Date.now();
  const burst = await Promise.all(names(tag, 'b', BURST_N).map((r) => timedRequest(mesh, r.id, r.ifname, 60_000)));
  const t1 = Date.now();
  const ok = burst.filter((r) => r.conn).map((r) => r.conn!);
  m.set(`burst${BURST_N}_ok`, ok.length, 'requests');
  m.set(`burst${BURST_N}_wall_ms`, t1 - t0, 'ms');
  m.set(`burst${BURST_N}_p50_ms`, percentile(burst.map((r) => r.ms), 50), 'ms');
  m.set(`burst${BURST_N}_p99_ms`, percentile(burst.map((r) => r.ms), 99), 'ms');
  const burstErrors = burst.filter((r) => r.error).map((r) => r.error!);
  if (burstErrors.length) {
    failures.push(`burst: ${burstErrors.length} of ${BURST_N} Requests failed:\n    ${grouped(burstErrors).join('\n    ')}`);
    const logged = mesh.log.problemsBetween(t0, t1).map((p) => `${p.msg}${p.err ? `: ${p.err}` : ''}`);
    if (logged.length) failures.push(`nsmd warnings/errors during the burst:\n    ${grouped(logged).join('\n    ')}`);
    if (!mesh.nsmd.running) failures.push(`nsmd exited during the burst:\n${mesh.nsmd.tail()}`);
  }

  // A report written after the burst ended both covers its last moments and counts the live connections.
  const after = await stats('a report after the burst', (s) => s.time >= t1 + STATS_INTERVAL_MS, 10_000);
  m.set(`nsmd_connections_${BURST_N}`, after.connections, 'connections');
  if (after.connections !== ok.length) failures.push(`after the burst nsmd tracks ${after.connections} connections, the client holds ${ok.length}`);
  m.set(`nsmd_rss_mb_${BURST_N}`, after.rssBytes / 2 ** 20, 'MiB');
  m.set(`nsmd_heap_mb_${BURST_N}`, after.heapUsedBytes / 2 ** 20, 'MiB');
  m.set('nsmd_loop_max_stall_ms', mesh.log.maxStallBetween(t0, t1), 'ms');

  note(`nsmesh: closing ${ok.length} connections, ${CLOSE_C} at a time`);
  const c0 = Date.now();
  failures.push(...(await closeAll(mesh, ok, 'burst')));
  const c1 = Date.now();
  m.set(`burst${BURST_N}_close_wall_ms`, c1 - c0, 'ms');
  m.set('nsmd_loop_max_stall_close_ms', mesh.log.maxStallBetween(c0, c1), 'ms');

  const leftCli = await linksIn(mesh.cli);
  const leftNse = await linksIn(mesh.nse);
  m.set('leftover_links', leftCli.length, 'links');
  m.set('leftover_links_nse', leftNse.length, 'links');
  if (leftCli.length || leftNse.length) {
    failures.push(`links left after closing everything: client ns [${leftCli.slice(0, 20).join(' ')}${leftCli.length > 20 ? ' …' : ''}], endpoint ns [${leftNse.slice(0, 20).join(' ')}${leftNse.length > 20 ? ' …' : ''}]`);
  }
  const end = await stats('a report after the closes', (s) => s.time >= c1 + STATS_INTERVAL_MS, 5000);
  m.set('nsmd_connections_after_close', end.connections, 'connections');
  if (end.connections !== 0) failures.push(`nsmd still tracks ${end.connections} connections after every Close`);
  return failures;
}

// ------------------------------------------------------------------------------------------------- main

async function main(): Promise<number> {
  requireEnvironment();
  const { nss, tmp, m } = await startRun(cleanups);
  const failures: string[] = [];
  // The baseline runs first, on a machine where nsmd is not running yet.
  failures.push(...(await ptpBaseline(nss, tmp, m)));
  failures.push(...(await meshBench(nss, tmp, m)));

  const seqP50 = m.get('seq_p50_ms')!;
  const ratio = m.get('ptp_add_p50_ms')! / seqP50;
  m.set('ptp_over_nsmesh_p50_ratio', ratio, 'x');
  const targets: [string, boolean][] = [
    [`seq_p50_ms <= ${TARGET_SEQ_P50_MS} ms (${seqP50})`, seqP50 <= TARGET_SEQ_P50_MS],
    [`ptp_over_nsmesh_p50_ratio >= ${TARGET_RATIO} (${m.get('ptp_over_nsmesh_p50_ratio')})`, ratio >= TARGET_RATIO],
    [`burst${BURST_N}_ok = ${BURST_N} (${m.get(`burst${BURST_N}_ok`)})`, m.get(`burst${BURST_N}_ok`) === BURST_N],
    [`leftover_links = 0 (${m.get('leftover_links')})`, m.get('leftover_links') === 0],
  ];
  return finishRun(BENCH, m, targets, failures);
}

await runBench(cleanups, main);
