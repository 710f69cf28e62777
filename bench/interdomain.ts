/**
 * interdomain: what `service@domain` costs over a remote-node connection, and what resolving a domain costs.
 *
 * One underlay, two domains with their own trust domains (embedded issuers started here, federated both
 * ways) and dnsmasq in the underlay namespace serving `_nsm._tcp.onprem.test`:
 * - cluster.test: nsmd on node 0 (the client's) and node 1 (an endpoint) sharing etcd; nsmd on node 2, a
 *   second client node whose nsmd asks the other domain's registry on every Request (lookup TTL 0);
 * - onprem.test: nsmd on node 3 with an endpoint.
 * Rounds of five Requests, in rotating order, each closed at once: a pod on node 0 asks for `bsvc` (the
 * endpoint on node 1: a remote-node connection) and for `bsvc@onprem.test` (the endpoint in the other
 * domain), each over WireGuard (label encryption=required) and over VXLAN, so each difference is what
 * interdomain adds to a remote-node connection of the same mechanism; and a pod on node 2 asks for
 * `bsvc@onprem.test` through an nsmd that asks the other domain's registry on every Request. DNS
 * resolution is timed apart, from inside a node namespace, cold (every query goes to the server) and warm
 * (answered from the resolver's cache).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ApiClient } from '../src/api/grpc.js';
import type { Connection } from '../src/api/types.js';
import { EmbeddedIssuer } from '../src/identity/issuer.js';
import { podId } from '../src/identity/spiffe-id.js';
import { sourceTransport, type Transport } from '../src/identity/transport.js';
import { Child } from './lib/child.js';
import { Cleanups } from './lib/cleanup.js';
import { BenchNamespaces, linksIn, type Netns } from './lib/netns.js';
import { Metrics, note, percentile, ROOT } from './lib/report.js';
import { grouped, names, timedRequest, type BenchClient, type Timed, timedClose as timedCloseOf } from './lib/requests.js';
import { finishRun, runBench, startRun } from './lib/run.js';
import { createUnderlay, killStaleNamespaceProcesses, runTracked, startEtcdIn, startNsmdOnNode, type NodeNsmd } from './lib/underlay.js';
import { FatalError, waitFor } from './lib/wait.js';

const BENCH = 'interdomain';
const WARMUP = 10;
const SEQ_N = 100;
const DNS_N = 200;
const REQUEST_TIMEOUT_MS = 20_000;
const TARGET_OVER_REMOTE_MS = 2;
const DNS_TTL_S = 300;
const SERVICE = 'bsvc';
const DOMAIN = 'onprem.test';

const BIN = {
  nsmd: path.join(ROOT, 'dist/src/cli/nsmd.js'),
  icmpResponder: path.join(ROOT, 'dist/examples/icmp-responder/main.js'),
  dnsProbe: path.join(ROOT, 'dist/bench/lib/dns-probe.js'),
};

const cleanups = new Cleanups();

function requireEnvironment(): void {
  if (process.getuid?.() !== 0) {
    process.stderr.write(`error: ${BENCH} must run as root: it creates network namespaces and WireGuard devices (try: sudo npm run bench -- ${BENCH})\n`);
    process.exit(1);
  }
  for (const f of Object.values(BIN)) if (!fs.existsSync(f)) throw new Error(`${f} is missing: build first (npm run build)`);
  const onPath = (cmd: string) => (process.env.PATH ?? '/usr/sbin:/usr/bin').split(':').some((d) => fs.existsSync(path.join(d, cmd)));
  for (const [cmd, pkg] of [['etcd', 'etcd-server'], ['dnsmasq', 'dnsmasq-base'], ['wireguard-go', 'wireguard-go']] as const) {
    if (!onPath(cmd)) throw new Error(`${cmd} is not installed: apt-get install ${pkg}`);
  }
}

interface Kind {
  key: string;
  mesh: BenchClient;
}

interface Lab {
  kinds: Kind[];
  children: Child[];
  pods: Netns[];
  dnsServer: string;
  dnsNs: Netns;
}

async function startDnsmasq(nss: BenchNamespaces, host: Netns & { ip: string }, tmp: string, target: string): Promise<Child> {
  const conf = path.join(tmp, 'dnsmasq.conf');
  fs.writeFileSync(conf, [
    'port=53', `listen-address=${host.ip}`, 'bind-interfaces', 'no-resolv', 'no-hosts', 'local=/test/', `local-ttl=${DNS_TTL_S}`,
    `srv-host=_nsm._tcp.${DOMAIN},node.${DOMAIN},5001,10,10`, `host-record=node.${DOMAIN},${target}`, '',
  ].join('\n'));
  let started = false;
  const child = new Child('dnsmasq', 'ip', ['netns', 'exec', host.name, 'dnsmasq', '--keep-in-foreground', `--conf-file=${conf}`, `--pid-file=${path.join(tmp, 'dnsmasq.pid')}`, '--user=root', '--log-facility=-'], {}, (line) => {
    if (line.includes('started')) started = true;
  });
  nss.adopt(child.proc.pid);
  cleanups.push(() => child.stop());
  // dnsmasq binds its sockets before it says it started.
  await waitFor('dnsmasq to start', () => {
    if (!child.running) throw new FatalError(`dnsmasq exited:\n${child.tail()}`);
    return started;
  }, 10_000);
  return child;
}

async function startEndpoint(nss: BenchNamespaces, pod: Netns, name: string, nsmd: NodeNsmd, socket: string, cidr: string, probe: Transport): Promise<Child> {
  const child = new Child(name, 'ip', ['netns', 'exec', pod.name, process.execPath, BIN.icmpResponder], {
    NSM_NAME: name,
    NSM_CONNECT_TO: nsmd.url,
    NSM_SERVICE_NAMES: SERVICE,
    NSM_CIDR_PREFIX: cidr,
    NSM_LOG_LEVEL: 'WARN',
    SPIFFE_ENDPOINT_SOCKET: socket,
  });
  nss.adopt(child.proc.pid);
  cleanups.push(() => child.stop());
  const reg = new ApiClient('registry.NetworkServiceEndpointRegistry', nsmd.url, probe);
  try {
    await waitFor(`endpoint ${name} to register`, async () => {
      if (!child.running) throw new FatalError(`${name} exited:\n${child.tail()}`);
      return (await reg.collect('Find', { network_service_endpoint: { name } }, { timeoutMs: 1000 })).length > 0;
    }, 20_000);
  } finally {
    reg.close();
  }
  return child;
}

async function startLab(nss: BenchNamespaces, tmp: string): Promise<Lab> {
  const ul = await createUnderlay(nss, 4, 1500);
  const [n0, n1, n2, n3] = ul.nodes as [typeof ul.nodes[0], typeof ul.nodes[0], typeof ul.nodes[0], typeof ul.nodes[0]];
  note(`underlay ${ul.subnet}: cluster.test nodes ${n0.ip} (client), ${n1.ip} (endpoint), ${n2.ip} (client, uncached lookups); onprem.test node ${n3.ip}`);
  const etcd = await startEtcdIn(nss, cleanups, ul.host, path.join(tmp, 'etcd'));
  const dns = await startDnsmasq(nss, ul.host, tmp, n3.ip);

  const start = async (td: string) => {
    const p = EmbeddedIssuer.start({ trustDomain: td, stateDir: path.join(tmp, `${td}-ca`) });
    cleanups.push(async () => (await p).close());
    return p;
  };
  const cluster = await start('cluster.test');
  const onprem = await start(DOMAIN);
  cluster.addFederatedBundle(DOMAIN, onprem.bundleDer());
  onprem.addFederatedBundle('cluster.test', cluster.bundleDer());
  const socket = (issuer: EmbeddedIssuer, id: string) => issuer.addWorkload(id, path.join(tmp, `${issuer.trustDomain}-${id.split('/').pop()}.sock`));
  const admin = (issuer: EmbeddedIssuer) => {
    const t = sourceTransport(issuer.x509Source(`spiffe://${issuer.trustDomain}/nsmesh/admin/bench`));
    cleanups.push(async () => t.close());
    return t;
  };
  const clusterAdmin = admin(cluster);
  const onpremAdmin = admin(onprem);

  const nsmd = async (node: typeof n0, issuer: EmbeddedIssuer, name: string, env: Record<string, string>, probe: Transport, registryUrl = 'embedded') =>
    startNsmdOnNode(nss, cleanups, node, {
      nsmdBin: BIN.nsmd,
      name,
      dir: path.join(tmp, name),
      registryUrl,
      env: { SPIFFE_ENDPOINT_SOCKET: await socket(issuer, `spiffe://${issuer.trustDomain}/nsmesh/nsmd/${name}`), ...env },
      probeTransport: probe,
    });
  const dnsEnv = { NSM_DNS_SERVERS: `${ul.host.ip}:53`, NSM_FEDERATES_WITH: DOMAIN };
  // VXLAN first towards the other domain too, so that one client compares both mechanisms; encryption=required picks WireGuard.
  const c0 = await nsmd(n0, cluster, `${nss.prefix}c0`, { ...dnsEnv, NSM_INTERDOMAIN_MECHANISM_PRIORITY: 'VXLAN,WIREGUARD' }, clusterAdmin, etcd.url);
  const c1 = await nsmd(n1, cluster, `${nss.prefix}c1`, {}, clusterAdmin, etcd.url);
  const c2 = await nsmd(n2, cluster, `${nss.prefix}c2`, { ...dnsEnv, NSM_INTERDOMAIN_LOOKUP_TTL: '0' }, clusterAdmin);
  const o0 = await nsmd(n3, onprem, `${nss.prefix}o0`, { NSM_FEDERATES_WITH: 'cluster.test' }, onpremAdmin);

  const ec = await nss.create('ec');
  const eo = await nss.create('eo');
  const clusterEp = await startEndpoint(nss, ec, `${nss.prefix}icmp-c`, c1, await socket(cluster, podId('cluster.test', 'bench', 'icmp-c')), '169.254.0.0/17', clusterAdmin);
  const onpremEp = await startEndpoint(nss, eo, `${nss.prefix}icmp-o`, o0, await socket(onprem, podId(DOMAIN, 'bench', 'icmp-o')), '169.254.128.0/17', onpremAdmin);
  // The client's nsmd must see the cluster endpoint through etcd before the first Request.
  const reg = new ApiClient('registry.NetworkServiceEndpointRegistry', c0.url, clusterAdmin);
  await waitFor('the cluster endpoint to be visible from node 0', async () => (await reg.collect('Find', { network_service_endpoint: { network_service_names: [SERVICE] } }, { timeoutMs: 1000 })).length > 0, 20_000).finally(() => reg.close());

  const transport = sourceTransport(cluster.x509Source(podId('cluster.test', 'bench', 'client')));
  cleanups.push(async () => transport.close());
  const clientOf = (n: NodeNsmd, pod: Netns, service: string, labels?: Record<string, string>): BenchClient => {
    const client = new ApiClient('networkservice.NetworkService', n.url, transport);
    cleanups.push(async () => client.close());
    return { client, transport, cli: pod, service, ...(labels ? { labels } : {}) };
  };
  const ca = await nss.create('ca');
  const cc = await nss.create('cc');
  const encrypted = { encryption: 'required' };
  return {
    kinds: [
      { key: 'remote_wireguard', mesh: clientOf(c0, ca, SERVICE, encrypted) },
      { key: 'interdomain_wireguard', mesh: clientOf(c0, ca, `${SERVICE}@${DOMAIN}`, encrypted) },
      { key: 'remote_vxlan', mesh: clientOf(c0, ca, SERVICE) },
      { key: 'interdomain_vxlan', mesh: clientOf(c0, ca, `${SERVICE}@${DOMAIN}`) },
      { key: 'interdomain_uncached_wireguard', mesh: clientOf(c2, cc, `${SERVICE}@${DOMAIN}`) },
    ],
    children: [c0.child, c1.child, c2.child, o0.child, clusterEp, onpremEp, dns, etcd.child],
    pods: [ca, cc, ec, eo],
    dnsServer: `${ul.host.ip}:53`,
    dnsNs: n0,
  };
}

function failuresOf(what: string, results: Timed[], lab: Lab): string[] {
  const failed = results.filter((r) => r.error).map((r) => r.error!);
  if (!failed.length) return [];
  const dead = lab.children.filter((c) => !c.running).map((c) => `\n${c.name} exited:\n${c.tail()}`);
  return [`${what}: ${failed.length} of ${results.length} failed:\n    ${grouped(failed).join('\n    ')}${dead.join('')}`];
}

function close(mesh: BenchClient, conn: Connection): Promise<Timed> {
  return timedCloseOf(mesh, conn, REQUEST_TIMEOUT_MS);
}

function stopIfInterrupted(): void {
  if (cleanups.interrupted) throw new Error('interrupted');
}

async function resolution(lab: Lab, m: Metrics): Promise<string[]> {
  note(`DNS: ${DNS_N} cold and ${DNS_N} warm resolutions of ${DOMAIN} from inside ${lab.dnsNs.name}`);
  const r = await runTracked(cleanups, lab.dnsNs, [process.execPath, BIN.dnsProbe, lab.dnsServer, DOMAIN, String(DNS_N)], 60_000);
  if (r.code !== 0) return [`dns-probe failed (${r.code}): ${r.stderr}`];
  const { cold, warm } = JSON.parse(r.stdout) as { cold: number[]; warm: number[] };
  m.set('dns_cold_resolve_p50_ms', percentile(cold, 50), 'ms');
  m.set('dns_cold_resolve_p99_ms', percentile(cold, 99), 'ms');
  m.set('dns_warm_resolve_p50_ms', percentile(warm, 50), 'ms');
  m.set('dns_warm_resolve_p99_ms', percentile(warm, 99), 'ms');
  return [];
}

async function setups(lab: Lab, tag: string, m: Metrics): Promise<string[]> {
  const failures: string[] = [];
  // First Requests pay for channels, TLS handshakes, netns sockets, the DNS answer and the other
  // domain's registry answer: one-off costs, not per-connection ones.
  for (const [k, kind] of lab.kinds.entries()) {
    for (const r of names(tag, `w${k}`, WARMUP)) {
      const t = await timedRequest(kind.mesh, r.id, r.ifname, REQUEST_TIMEOUT_MS);
      if (!t.conn) throw new Error(`warm-up ${kind.key} Request failed: ${t.error}${failuresOf(kind.key, [t], lab).join('')}`);
      failures.push(...failuresOf(`warm-up ${kind.key} Close`, [await close(kind.mesh, t.conn)], lab));
    }
  }

  note(`${SEQ_N} rounds of ${lab.kinds.length} Requests, each closed at once: ${lab.kinds.map((k) => k.key).join(', ')}`);
  const runs = lab.kinds.map((kind, k) => ({ kind, times: [] as Timed[], closes: [] as Timed[], names: names(tag, `s${k}`, SEQ_N) }));
  for (let i = 0; i < SEQ_N; i++) {
    stopIfInterrupted();
    // Rotating which goes first keeps drift (other load on the host) and any ordering effect off one kind.
    for (let j = 0; j < runs.length; j++) {
      const run = runs[(i + j) % runs.length]!;
      const n = run.names[i]!;
      const t = await timedRequest(run.kind.mesh, n.id, n.ifname, REQUEST_TIMEOUT_MS);
      run.times.push(t);
      if (t.conn) run.closes.push(await close(run.kind.mesh, t.conn));
    }
  }
  const ok = (l: Timed[]) => l.filter((t) => !t.error).map((t) => t.ms);
  const p = new Map<string, { p50: number; p99: number }>();
  for (const run of runs) {
    failures.push(...failuresOf(`${run.kind.key} Requests`, run.times, lab), ...failuresOf(`${run.kind.key} Closes`, run.closes, lab));
    const times = ok(run.times);
    p.set(run.kind.key, { p50: percentile(times, 50), p99: percentile(times, 99) });
    m.set(`${run.kind.key}_ok`, times.length, 'requests');
    m.set(`${run.kind.key}_setup_p50_ms`, percentile(times, 50), 'ms');
    m.set(`${run.kind.key}_setup_p99_ms`, percentile(times, 99), 'ms');
    m.set(`${run.kind.key}_close_p50_ms`, percentile(ok(run.closes), 50), 'ms');
  }
  for (const mech of ['wireguard', 'vxlan']) {
    const inter = p.get(`interdomain_${mech}`)!;
    const remote = p.get(`remote_${mech}`)!;
    m.set(`interdomain_over_remote_${mech}_p50_ms`, inter.p50 - remote.p50, 'ms');
    m.set(`interdomain_over_remote_${mech}_p99_ms`, inter.p99 - remote.p99, 'ms');
  }
  m.set('uncached_over_cached_wireguard_p50_ms', p.get('interdomain_uncached_wireguard')!.p50 - p.get('interdomain_wireguard')!.p50, 'ms');

  const left = async () => (await Promise.all(lab.pods.map(linksIn))).flat();
  await waitFor('every closed connection to be removed', async () => (await left()).length === 0, 30_000).catch(() => undefined);
  const leftover = await left();
  m.set('leftover_links', leftover.length, 'links');
  if (leftover.length) failures.push(`links left after closing everything: ${leftover.slice(0, 20).join(' ')}`);
  return failures;
}

async function main(): Promise<number> {
  requireEnvironment();
  const orphans = await killStaleNamespaceProcesses();
  if (orphans.length) note(`killed processes left in namespaces of earlier runs: ${orphans.join(' ')}`);
  const { nss, tmp, m } = await startRun(cleanups);
  const lab = await startLab(nss, tmp);
  const failures = [...(await resolution(lab, m)), ...(await setups(lab, nss.tag, m))];
  const targets: [string, boolean][] = [];
  for (const mech of ['wireguard', 'vxlan']) {
    const over = m.get(`interdomain_over_remote_${mech}_p50_ms`)!;
    targets.push([`interdomain_over_remote_${mech}_p50_ms <= ${TARGET_OVER_REMOTE_MS} ms (${over})`, over <= TARGET_OVER_REMOTE_MS]);
    targets.push([`interdomain_${mech}_ok = ${SEQ_N} (${m.get(`interdomain_${mech}_ok`)})`, m.get(`interdomain_${mech}_ok`) === SEQ_N]);
  }
  targets.push([`leftover_links = 0 (${m.get('leftover_links')})`, m.get('leftover_links') === 0]);
  return finishRun(BENCH, m, targets, failures);
}

await runBench(cleanups, main);
