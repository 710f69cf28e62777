/**
 * Several "nodes" on one machine for benches, built like the multi-node tests' underlay but with the bench's
 * namespaces (run tag, owner file, removal by BenchNamespaces.cleanup): an underlay namespace `…-ul` holding
 * a bridge, and node namespaces `…-n<i>` whose eth0 is a veth with its other end on that bridge. Both ends
 * of every veth are born in bench namespaces, so nothing ever appears in the root namespace and deleting
 * the namespaces deletes every link. Addresses are one /24 of 198.18.0.0/15 picked by the run tag, so two
 * concurrent runs do not share a subnet (they could not reach each other anyway, but a reader of `ip`
 * output can tell them apart): node i has .<i+1>, the underlay namespace itself .254, where etcd listens.
 */
import { execFile, spawn } from 'node:child_process';
import { etcdArgs } from '../../src/lab/etcd-args.js';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { ApiClient } from '../../src/api/grpc.js';
import type { Transport } from '../../src/identity/transport.js';
import { Child } from './child.js';
import type { Cleanups } from './cleanup.js';
import { BENCH_PREFIX, type BenchNamespaces, type Netns } from './netns.js';
import { FatalError, waitFor, withDeadline } from './wait.js';

const run = promisify(execFile);

/** A namespace on the underlay and its IPv4 address there (no prefix length). */
export interface UnderlayHost extends Netns {
  ip: string;
}

export interface Underlay {
  subnet: string;
  mtu: number;
  /** The underlay namespace; `ip` is the bridge's address. */
  host: UnderlayHost & { bridge: string };
  nodes: UnderlayHost[];
}

/** The run's /24: the tag's bits pick one of the 512 /24s of 198.18.0.0/15. */
export function underlayBase(tag: string): string {
  const v = parseInt(tag, 16) % 512;
  return `198.${18 + (v >> 8)}.${v & 255}`;
}

const ipIn = (ns: string, args: string[]) => run('ip', ['-n', ns, ...args]);

export async function createUnderlay(nss: BenchNamespaces, n: number, mtu: number): Promise<Underlay> {
  const base = underlayBase(nss.tag);
  const bridge = 'br0';
  const ul = await nss.create('ul');
  await ipIn(ul.name, ['link', 'add', bridge, 'mtu', String(mtu), 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
  await ipIn(ul.name, ['addr', 'add', `${base}.254/24`, 'dev', bridge]);
  const nodes: UnderlayHost[] = [];
  for (let i = 0; i < n; i++) {
    const node = await nss.create(`n${i}`);
    const port = `p${i}`;
    await ipIn(ul.name, ['link', 'add', port, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(mtu), 'netns', node.name]);
    await ipIn(ul.name, ['link', 'set', port, 'master', bridge, 'up']);
    const ip = `${base}.${i + 1}`;
    await ipIn(node.name, ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await ipIn(node.name, ['link', 'set', 'eth0', 'up']);
    nodes.push({ ...node, ip });
  }
  // A bridge follows its ports' MTU unless told; set last so it is exactly `mtu` whatever the kernel did.
  await ipIn(ul.name, ['link', 'set', bridge, 'mtu', String(mtu), 'up']);
  return { subnet: `${base}.0/24`, mtu, host: { ...ul, ip: `${base}.254`, bridge }, nodes };
}

/**
 * An HTTP GET from inside `ns` by a short-lived node process there: the bench process lives in the root
 * namespace, which has no route to the underlay (by design: nothing of the bench is put there).
 */
export async function httpGetIn(ns: Netns, url: string, timeoutMs = 1000): Promise<{ status: number; body: string }> {
  const script = `
    const [url, ms] = process.argv.slice(1);
    fetch(url, { signal: AbortSignal.timeout(Number(ms)) })
      .then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })))
      .catch((e) => { process.stderr.write(String(e?.cause?.message ?? e?.message ?? e)); process.exit(1); });`;
  const { stdout } = await run('ip', ['netns', 'exec', ns.name, process.execPath, '-e', script, url, String(timeoutMs)], {
    timeout: timeoutMs + 10_000,
  });
  return JSON.parse(stdout) as { status: number; body: string };
}

export interface UnderlayEtcd {
  child: Child;
  /** `etcd://<underlay ip>:2379`, as NSM_REGISTRY_URL takes it. */
  url: string;
}

/**
 * A single-member etcd (Debian's etcd-server binary) in the underlay namespace, serving clients on the bridge
 * address so every node reaches it; healthy when this resolves. The raft timers are the tests' (10 ms
 * heartbeat, 50 ms election): a lone member then elects itself in tens of milliseconds instead of a second.
 */
export async function startEtcdIn(nss: BenchNamespaces, cleanups: Cleanups, host: UnderlayHost, dataDir: string, timeoutMs = 15_000): Promise<UnderlayEtcd> {
  const clientUrl = `http://${host.ip}:2379`;
  const peerUrl = 'http://127.0.0.1:2380';
  const child = new Child('etcd', 'ip', [
    'netns', 'exec', host.name, 'etcd',
    ...etcdArgs({ name: 'underlay', dataDir, clientUrl, peerUrl }),
  ], {});
  nss.adopt(child.proc.pid);
  cleanups.push(() => child.stop());
  await waitFor(`etcd in ${host.name} to be healthy at ${clientUrl}`, async () => {
    if (!child.running) throw new FatalError(`etcd exited before becoming healthy:\n${child.tail()}`);
    const r = await httpGetIn(host, `${clientUrl}/health`);
    return (JSON.parse(r.body) as { health?: string }).health === 'true';
  }, timeoutMs, 50);
  return { child, url: `etcd://${host.ip}:2379` };
}

export interface NodeNsmd {
  child: Child;
  name: string;
  /** unix:// URL of its local API: a file, so this process reaches it from the root namespace. */
  url: string;
  /** tcp://<node ip>:5001, its remote API for the other node. */
  remoteUrl: string;
}

export interface NodeNsmdOptions {
  nsmdBin: string;
  name: string;
  /** Holds its socket and state directory. */
  dir: string;
  registryUrl: string;
  /** Identity (SPIFFE_ENDPOINT_SOCKET or NSM_INSECURE) and anything else to pass. */
  env: Record<string, string>;
  /** How the readiness probe authenticates; undefined for an insecure nsmd. */
  probeTransport: Transport | undefined;
  onLine?: (line: string) => void;
}

/** nsmd from dist/ inside the node's namespace, as a node agent runs; resolves once it serves its socket. */
export async function startNsmdOnNode(nss: BenchNamespaces, cleanups: Cleanups, node: UnderlayHost, o: NodeNsmdOptions): Promise<NodeNsmd> {
  fs.mkdirSync(o.dir, { recursive: true });
  const sock = path.join(o.dir, 'nsm.io.sock');
  const url = `unix://${sock}`;
  const remoteUrl = `tcp://${node.ip}:5001`;
  const child = new Child(`nsmd ${o.name}`, 'ip', ['netns', 'exec', node.name, process.execPath, o.nsmdBin], {
    NSM_NAME: o.name,
    NODE_NAME: `${o.name}-node`,
    NSM_LISTEN_ON: url,
    NSM_STATE_DIR: path.join(o.dir, 'state'),
    NSM_REMOTE_LISTEN_ON: remoteUrl,
    NSM_REGISTRY_URL: o.registryUrl,
    NSM_LOG_LEVEL: 'WARN',
    ...o.env,
  }, o.onLine);
  nss.adopt(child.proc.pid);
  cleanups.push(() => child.stop());
  const alive = () => {
    if (!child.running) throw new FatalError(`nsmd ${o.name} in ${node.name} exited:\n${child.tail()}`);
  };
  // The socket file first: a gRPC channel that dials too early backs off for a second or more.
  await waitFor(`nsmd ${o.name} to create its socket`, () => {
    alive();
    return fs.existsSync(sock);
  }, 15_000);
  const probe = new ApiClient('networkservice.NetworkService', url, o.probeTransport);
  try {
    await waitFor(`nsmd ${o.name} to serve its socket`, async () => {
      alive();
      await probe.waitForReady(200);
      return true;
    }, 15_000);
  } finally {
    probe.close();
  }
  return { child, name: o.name, url, remoteUrl };
}

/** `ping -c 1` from inside `ns`; true when answered. */
export async function pingFrom(ns: Netns, addr: string): Promise<boolean> {
  try {
    await run('ip', ['netns', 'exec', ns.name, 'ping', '-4', '-c', '1', '-W', '1', '-q', addr], { timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}

function ownerAlive(tag: string): boolean {
  let owner: number;
  try {
    owner = Number(fs.readFileSync(`/run/nsmesh-bench/${tag}`, 'utf8').split('\n')[0]);
  } catch {
    return false;
  }
  if (!Number.isInteger(owner) || owner <= 0) return false;
  try {
    process.kill(owner, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Kills every process inside the namespaces of runs whose owner is gone, before sweepStale() deletes them.
 * sweepStale only kills processes running our build (so a reused pid is never hit), which leaves an
 * orphaned etcd or iperf3 serving in a namespace that has lost its name. A process that is inside a
 * namespace of a dead run was started by that run, so nothing else can be hit here.
 */
export async function killStaleNamespaceProcesses(): Promise<number[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  const killed: number[] = [];
  for (const ns of stdout.split('\n').map((l) => l.split(' ')[0] ?? '')) {
    const tag = new RegExp(`^${BENCH_PREFIX}([0-9a-f]{4})-`).exec(ns)?.[1];
    if (!tag || ownerAlive(tag)) continue;
    const pids = await run('ip', ['netns', 'pids', ns]).then((r) => r.stdout, () => '');
    for (const pid of pids.split('\n').map(Number).filter((p) => p > 0 && p !== process.pid)) {
      try {
        process.kill(pid, 'SIGKILL');
        killed.push(pid);
      } catch {
        // already gone
      }
    }
  }
  return killed;
}

/** A short-lived command in `ns` that the cleanups kill if the run ends (or is interrupted) while it runs. */
export function runTracked(cleanups: Cleanups, ns: Netns, cmd: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawn('ip', ['netns', 'exec', ns.name, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = async () => {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  };
  cleanups.push(kill);
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, stdout, stderr }));
  });
  return withDeadline(`${cmd.join(' ')} in ${ns.name}`, done, timeoutMs).finally(kill);
}
