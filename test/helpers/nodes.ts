/**
 * Several "nodes" on one machine for multi-node tests. An underlay namespace `nsmt-<tag>-ul` holds a Linux bridge
 * `br0`; each node is a namespace `nsmt-<tag>-n<i>` whose `eth0` is a veth pair with its other end plugged into
 * that bridge. Everything sits on one /24 inside 198.18.0.0/15 derived from the run's tag: node i has .<i+1>, the
 * underlay namespace itself has .254 on the bridge, so a service started there (etcd: startEtcdIn) is reachable
 * from every node. Both ends of every veth are created directly inside test namespaces, so nothing is ever put in
 * the root namespace, and deleting the namespaces deletes every link.
 *
 * nsmd runs inside a node namespace with startNsmdOnNode; its unix socket is a file, so the test process talks to
 * it as to any other nsmd. Processes started here are stopped by their underlay's cleanup() and in afterAll,
 * failed tests or not; the underlay's namespaces are deleted in afterAll too (and by the netns helper's own
 * afterAll, which removes every namespace with the run's tag).
 */
import fs from 'node:fs';
import { etcdArgs } from '../../src/lab/etcd-args.js';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll } from 'vitest';
import { ApiClient } from '../../src/api/grpc.js';
import type { EtcdServer } from './etcd.js';
import { ids, testTransport, workloadSocket } from './identity.js';
import { BIN, type NsmdProc } from './mesh.js';
import { createNetns, deleteNetns, tag, type Netns } from './netns.js';
import { waitFor } from './wait.js';

/** A namespace on the underlay and its address there. */
export interface UnderlayHost extends Netns {
  /** IPv4 address on the underlay, without prefix length. */
  ip: string;
}

export interface UnderlayNode extends UnderlayHost {
  /** 0-based; the namespace is `…-n<index>` and the address ends in .<index+1>. */
  index: number;
  /** The node's underlay interface, inside the node namespace (`eth0`). */
  ifname: string;
  /** The veth end on the bridge, inside the underlay namespace (embeds the tag, ≤ 15 characters). */
  bridgePort: string;
}

export interface Underlay {
  /** `198.18.x.0/24` (or `198.19.x.0/24`). */
  subnet: string;
  prefixLength: 24;
  /** MTU of the bridge and of both ends of every veth. */
  mtu: number;
  /** The underlay namespace; `ip` is the bridge's address (.254). */
  underlay: UnderlayHost & { bridge: string };
  nodes: UnderlayNode[];
  /** Stops the processes started on this underlay, then deletes its namespaces. Idempotent. */
  cleanup(): Promise<void>;
}

export interface UnderlayOptions {
  /** MTU of every underlay link (bridge, both veth ends); default 1500. */
  mtu?: number;
  /**
   * Only to have several underlays alive at once in one test file: up to 3 of [a-z0-9], prefixed to the names
   * (`nsmt-<tag>-<id>ul`, `nsmt-<tag>-<id>n<i>`, bridge ports `<tag><id>p<i>`). The default (none) gives the plain names.
   */
  id?: string;
}

/** Per-underlay bookkeeping: processes to stop before its namespaces go. */
interface UnderlayState {
  stops: Set<() => Promise<void>>;
  /** Temporary directories this module made for the underlay's processes, removed after they stop. */
  dirs: Set<string>;
  nextEtcdPort: number;
}

const byNamespace = new Map<string, UnderlayState>();
const liveUnderlays = new Set<Underlay>();

/** The /24 this run uses: tag bits pick one of the 512 /24s of 198.18.0.0/15. */
function subnetBase(): string {
  const v = parseInt(tag.slice(1), 16) % 512;
  return `198.${18 + (v >> 8)}.${v & 255}`;
}

async function ipIn(ns: string, args: string[]): Promise<void> {
  await execa('ip', ['-n', ns, ...args]);
}

export async function createUnderlay(n: number, opts: UnderlayOptions = {}): Promise<Underlay> {
  const mtu = opts.mtu ?? 1500;
  const id = opts.id ?? '';
  if (!Number.isInteger(n) || n < 1 || n > 253) throw new Error(`createUnderlay: node count ${n} not in 1..253`);
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new Error(`createUnderlay: MTU ${mtu} not in 68..65535`);
  if (!/^[a-z0-9]{0,3}$/.test(id)) throw new Error(`createUnderlay: id ${JSON.stringify(id)} must be up to 3 of [a-z0-9]`);
  const base = subnetBase();
  const bridge = 'br0';
  const created: Netns[] = [];
  try {
    const ulNs = await createNetns(`${id}ul`);
    created.push(ulNs);
    await ipIn(ulNs.name, ['link', 'add', bridge, 'mtu', String(mtu), 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    await ipIn(ulNs.name, ['addr', 'add', `${base}.254/24`, 'dev', bridge]);

    const nodes: UnderlayNode[] = [];
    for (let i = 0; i < n; i++) {
      const ns = await createNetns(`${id}n${i}`);
      created.push(ns);
      const bridgePort = `${tag}${id}p${i}`; // ≤ 5 + 3 + 1 + 3 = 12 characters
      const ifname = 'eth0';
      await ipIn(ulNs.name, ['link', 'add', bridgePort, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', ifname, 'mtu', String(mtu), 'netns', ns.name]);
      await ipIn(ulNs.name, ['link', 'set', bridgePort, 'master', bridge, 'up']);
      const ip = `${base}.${i + 1}`;
      await ipIn(ns.name, ['addr', 'add', `${ip}/24`, 'dev', ifname]);
      await ipIn(ns.name, ['link', 'set', ifname, 'up']);
      nodes.push({ ...ns, ip, index: i, ifname, bridgePort });
    }
    // A bridge follows its ports' MTU unless told; set it last so it is exactly `mtu` whatever the kernel did.
    await ipIn(ulNs.name, ['link', 'set', bridge, 'mtu', String(mtu), 'up']);

    const state: UnderlayState = { stops: new Set(), dirs: new Set(), nextEtcdPort: 2379 };
    let cleaned: Promise<void> | undefined;
    const underlay: Underlay = {
      subnet: `${base}.0/24`,
      prefixLength: 24,
      mtu,
      underlay: { ...ulNs, ip: `${base}.254`, bridge },
      nodes,
      cleanup() {
        cleaned ??= (async () => {
          await Promise.allSettled([...state.stops].map((stop) => stop()));
          for (const d of state.dirs) fs.rmSync(d, { recursive: true, force: true });
          for (const ns of [...nodes, ulNs]) {
            await deleteNetns(ns);
            byNamespace.delete(ns.name);
          }
          liveUnderlays.delete(underlay);
        })();
        return cleaned;
      },
    };
    for (const ns of created) byNamespace.set(ns.name, state);
    liveUnderlays.add(underlay);
    return underlay;
  } catch (err) {
    for (const ns of created) await deleteNetns(ns);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Processes inside namespaces

/** A process run through `ip netns exec` (which execs, so this pid is the process itself). */
interface NsProc {
  proc: ResultPromise;
  tail(): string;
  exited(): boolean;
  /** `signal`, then SIGKILL if still alive after `graceMs`; resolves once it has exited. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

const running = new Set<ResultPromise>();
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

afterAll(async () => {
  // Underlays first: their cleanup stops their own processes gracefully and deletes the namespaces.
  await Promise.allSettled([...liveUnderlays].map((u) => u.cleanup()));
  for (const p of running) p.kill('SIGKILL');
  await Promise.allSettled([...running]);
});

function startIn(ns: Netns, cmd: string[], env: Record<string, string>): NsProc {
  const proc = execa('ip', ['netns', 'exec', ns.name, ...cmd], { env, reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'pipe' });
  running.add(proc);
  let output = '';
  let done = false;
  proc.stderr?.on('data', (d: Buffer) => {
    output = (output + d.toString()).slice(-4000);
  });
  void proc.finally(() => {
    done = true;
    running.delete(proc);
  });
  return {
    proc,
    tail: () => output,
    exited: () => done,
    async stop(signal = 'SIGTERM', graceMs = 5_000) {
      if (done) return;
      if (signal !== 'SIGKILL') proc.kill('SIGCONT'); // a paused process would sit on SIGTERM until the SIGKILL
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await proc;
      clearTimeout(timer);
    },
  };
}

/** The underlay that created `ns`, for processes that must be stopped before its namespaces go. */
function stateOf(ns: Netns): UnderlayState {
  const st = byNamespace.get(ns.name);
  if (!st) throw new Error(`${ns.name} is not a namespace of a live underlay`);
  return st;
}

/**
 * An HTTP GET run inside `ns` (by a short-lived `node` there), for what the test process cannot reach itself.
 * Rejects when no HTTP answer came (refused, unreachable, timed out).
 */
export async function httpGetIn(ns: Netns | string, url: string, timeoutMs = 1_000): Promise<{ status: number; body: string }> {
  const script = `
    const [url, ms] = process.argv.slice(1);
    fetch(url, { signal: AbortSignal.timeout(Number(ms)) })
      .then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })))
      .catch((e) => { process.stderr.write(String(e?.cause?.message ?? e?.message ?? e)); process.exit(1); });`;
  const name = typeof ns === 'string' ? ns : ns.name;
  const r = await execa('ip', ['netns', 'exec', name, 'node', '-e', script, url, String(timeoutMs)], { reject: false, timeout: timeoutMs + 10_000 });
  if (r.exitCode !== 0) throw new Error(`GET ${url} in ${name}: ${String(r.stderr).trim() || `exit ${r.exitCode}`}`);
  return JSON.parse(String(r.stdout)) as { status: number; body: string };
}

// ---------------------------------------------------------------------------------------------------------------
// etcd in the underlay namespace

export interface UnderlayEtcd extends EtcdServer {
  /** `etcd://<underlay ip>:<port>`, as NSM_REGISTRY_URL takes it. */
  readonly url: string;
  /** `http://<underlay ip>:<port>`, reachable from every node namespace (not from the test process). */
  readonly clientUrl: string;
}

const ETCD_HEALTH_TIMEOUT_MS = 15_000;

/**
 * A single-member etcd (the Debian etcd-server binary) inside the underlay namespace, serving clients on the bridge
 * address; healthy when this resolves. Same timers and stop/restart semantics as startEtcd() in etcd.ts. Each call
 * on the same underlay takes the next pair of ports from 2379 (client, peer; the peer URL is 127.0.0.1 inside
 * the underlay namespace).
 */
export async function startEtcdIn(ul: Underlay): Promise<UnderlayEtcd> {
  const host = ul.underlay;
  const st = stateOf(host);
  const clientPort = st.nextEtcdPort;
  const peerPort = clientPort + 1;
  st.nextEtcdPort += 2;
  const base = fs.mkdtempSync(path.join(os.tmpdir(), `nsmesh-etcd-${tag}-`));
  const dataDir = path.join(base, 'data');
  const clientUrl = `http://${host.ip}:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const args = ['etcd', ...etcdArgs({ name: 'underlay', dataDir, clientUrl, peerUrl })];

  let current: NsProc | undefined;
  const server: UnderlayEtcd = {
    url: `etcd://${host.ip}:${clientPort}`,
    clientUrl,
    endpoint: `${host.ip}:${clientPort}`,
    dataDir,
    get running() {
      return current !== undefined && !current.exited();
    },
    async start() {
      if (server.running) throw new Error('etcd is already running');
      const p = startIn(host, args, {});
      current = p;
      const outcome = await waitFor(
        `etcd in ${host.name} to be healthy at ${clientUrl}`,
        async () => {
          if (p.exited()) return 'exited';
          const r = await httpGetIn(host, `${clientUrl}/health`);
          return (JSON.parse(r.body) as { health?: string }).health === 'true' ? 'healthy' : false;
        },
        ETCD_HEALTH_TIMEOUT_MS,
      ).catch(async (err: unknown) => {
        await p.stop('SIGKILL');
        throw new Error(`${(err as Error).message}\n${p.tail()}`);
      });
      if (outcome === 'exited') throw new Error(`etcd in ${host.name} exited before becoming healthy:\n${p.tail()}`);
    },
    async stop(graceMs = 5_000) {
      await current?.stop('SIGTERM', graceMs);
    },
    pause() {
      if (server.running) current?.proc.kill('SIGSTOP');
    },
    resume() {
      if (server.running) current?.proc.kill('SIGCONT');
    },
    async restart(opts = {}) {
      await server.stop();
      if (opts.wipe) fs.rmSync(dataDir, { recursive: true, force: true });
      await server.start();
    },
    async cleanup() {
      await server.stop(1_000);
      fs.rmSync(base, { recursive: true, force: true });
      st.stops.delete(server.cleanup);
    },
  };
  st.stops.add(server.cleanup);
  try {
    await server.start();
  } catch (err) {
    await server.cleanup();
    throw err;
  }
  return server;
}

// ---------------------------------------------------------------------------------------------------------------
// nsmd in a node namespace

export interface NodeNsmdOptions {
  /** NSM_NAME; default `nsmd-<tag>-n<index>`. */
  name?: string;
  /** Directory for the socket and state; default a fresh temporary one. */
  dir?: string;
  /** NSM_REGISTRY_URL, e.g. startEtcdIn(…).url; default nsmd's own (embedded). */
  registryUrl?: string;
  /** Port of NSM_REMOTE_LISTEN_ON=tcp://<node ip>:<port>; default 5001. */
  remotePort?: number;
  /** Passed through last, so it overrides everything above (e.g. `NSM_REMOTE_LISTEN_ON: ''` for none). */
  env?: Record<string, string>;
  insecure?: boolean;
}

export interface NodeNsmdProc extends NsmdProc {
  node: UnderlayNode;
  /** NSM_NAME it runs as. */
  name: string;
  /** `tcp://<node ip>:<port>`: the remote API address it was told to listen on. */
  remoteUrl: string;
}

/**
 * nsmd from dist/ inside `node`'s namespace (`ip netns exec <node> node dist/src/cli/nsmd.js`), with the same
 * identity and defaults as mesh.ts's startNsmd plus NODE_NAME, NSM_REMOTE_LISTEN_ON and, when given,
 * NSM_REGISTRY_URL. Resolves once it serves its (local, unix) socket.
 */
export async function startNsmdOnNode(node: UnderlayNode, opts: NodeNsmdOptions = {}): Promise<NodeNsmdProc> {
  const st = stateOf(node);
  let dir = opts.dir;
  if (!dir) {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `nsmesh-${tag}-n${node.index}-`));
    st.dirs.add(dir);
  }
  const url = `unix://${dir}/nsm.io.sock`;
  const name = opts.name ?? `nsmd-${tag}-n${node.index}`;
  const remoteUrl = `tcp://${node.ip}:${opts.remotePort ?? 5001}`;
  const identity: Record<string, string> = opts.insecure ? { NSM_INSECURE: 'true' } : { SPIFFE_ENDPOINT_SOCKET: await workloadSocket(ids.nsmd(name)) };
  const p = startIn(node, ['node', BIN.nsmd], {
    ...identity,
    NSM_NAME: name,
    NSM_LISTEN_ON: url,
    NSM_STATE_DIR: path.join(dir, 'state'),
    NODE_NAME: `node-${tag}-n${node.index}`,
    NSM_REMOTE_LISTEN_ON: remoteUrl,
    NSM_LOG_LEVEL: 'WARN',
    ...(opts.registryUrl ? { NSM_REGISTRY_URL: opts.registryUrl } : {}),
    ...opts.env,
  });
  const stopForCleanup = () => p.stop('SIGTERM', 2_000);
  st.stops.add(stopForCleanup);
  void p.proc.finally(() => st.stops.delete(stopForCleanup));

  const what = `nsmd ${name} in ${node.name} to serve its socket`;
  const exited = () => new Error(`nsmd ${name} in ${node.name} exited: ${p.tail()}`);
  let probe: ApiClient<'networkservice.NetworkService'> | undefined;
  try {
    // The socket file first: a gRPC channel that dials too early backs off for a second or more.
    if ((await waitFor(what, () => (p.exited() ? 'exited' : fs.existsSync(`${dir}/nsm.io.sock`) && 'bound'))) === 'exited') throw exited();
    probe = new ApiClient('networkservice.NetworkService', url, opts.insecure ? undefined : await testTransport(ids.admin));
    const ready = probe;
    const outcome = await waitFor(what, async () => {
      if (p.exited()) return 'exited';
      await ready.waitForReady(200);
      return 'ready';
    });
    if (outcome === 'exited') throw exited();
  } catch (err) {
    await p.stop('SIGKILL');
    throw err;
  } finally {
    probe?.close();
  }
  return {
    url,
    dir,
    proc: p.proc,
    node,
    name,
    remoteUrl,
    async stop(signal = 'SIGTERM') {
      await p.stop(signal);
    },
  };
}
