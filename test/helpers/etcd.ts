/**
 * Real etcd (the Debian etcd-server binary) for registry tests: free 127.0.0.1 ports, temporary data dirs, fast
 * raft timers so a member is healthy in tens of milliseconds, and stop/restart on the same ports and data dir
 * (optionally wiped, single member only) to exercise reconnects; startEtcdCluster for member failures.
 * `cleanup()` belongs in afterAll; a process exit hook kills a forgotten etcd anyway so a failed run never
 * leaves one behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { etcdArgs } from '../../src/lab/etcd-args.js';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface EtcdServer {
  /** host:port of the client listener, as the registry's `endpoints` take it. */
  readonly endpoint: string;
  readonly dataDir: string;
  readonly running: boolean;
  /** Starts etcd (again) on the same ports and data dir and waits until it reports healthy. */
  start(): Promise<void>;
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** SIGSTOP: sockets stay open but nothing answers, like a hung host or a network black hole. */
  pause(): void;
  resume(): void;
  /** Stops, optionally wipes the data dir, starts again. */
  restart(opts?: { wipe?: boolean }): Promise<void>;
  /** Stops etcd and removes its data dir. Idempotent. */
  cleanup(): Promise<void>;
}

const HEALTH_TIMEOUT_MS = 15_000;
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

/** A single-member etcd, healthy when this resolves. */
export async function startEtcd(): Promise<EtcdServer> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'nsmesh-etcd-'));
  const [clientPort, peerPort] = await freePorts(2);
  const spec = { name: 'test', clientPort: clientPort!, peerPort: peerPort!, dataDir: path.join(base, 'data') };
  const server = member(spec, [spec], { heartbeatMs: 10, electionMs: 50 }, base);
  try {
    await server.start();
  } catch (err) {
    await server.cleanup();
    throw err;
  }
  return server;
}

export interface EtcdCluster {
  readonly members: EtcdServer[];
  /** host:port of every member's client listener. */
  readonly endpoints: string[];
  cleanup(): Promise<void>;
}

/**
 * A cluster of `size` members on this host, for member-failure tests. Raft timers are less aggressive than for
 * a single member: with several members on two cores, 50 ms elections would keep re-electing under load.
 */
export async function startEtcdCluster(size: number): Promise<EtcdCluster> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'nsmesh-etcd-cluster-'));
  const ports = await freePorts(2 * size);
  const specs = Array.from({ length: size }, (_, i) => ({
    name: `m${i}`,
    clientPort: ports[2 * i]!,
    peerPort: ports[2 * i + 1]!,
    dataDir: path.join(base, `m${i}`),
  }));
  const members = specs.map((spec) => member(spec, specs, { heartbeatMs: 25, electionMs: 250 }));
  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.endpoint),
    async cleanup() {
      await Promise.all(members.map((m) => m.stop(1_000)));
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
  // Members wait for each other to elect a leader, so they must all be starting at once.
  const started = await Promise.allSettled(members.map((m) => m.start()));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await cluster.cleanup();
    throw failed.reason;
  }
  return cluster;
}

interface MemberSpec {
  name: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
}

/** One etcd member; `ownDir`, when given, is removed with it by cleanup(). */
function member(
  spec: MemberSpec,
  all: MemberSpec[],
  timers: { heartbeatMs: number; electionMs: number },
  ownDir?: string,
): EtcdServer {
  const { dataDir } = spec;
  const clientUrl = `http://127.0.0.1:${spec.clientPort}`;
  const peerUrl = `http://127.0.0.1:${spec.peerPort}`;
  const args = etcdArgs({
    name: spec.name,
    dataDir,
    clientUrl,
    peerUrl,
    initialCluster: all.map((m) => `${m.name}=http://127.0.0.1:${m.peerPort}`).join(','),
    heartbeatMs: timers.heartbeatMs,
    electionMs: timers.electionMs,
  });

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stderrTail = '';

  const server: EtcdServer = {
    endpoint: `127.0.0.1:${spec.clientPort}`,
    dataDir,
    get running() {
      return child !== undefined;
    },
    async start() {
      if (child) throw new Error('etcd is already running');
      stderrTail = '';
      const c = spawn('etcd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
      child = c;
      live.add(c);
      c.stderr?.on('data', (d: Buffer) => {
        stderrTail = (stderrTail + d.toString()).slice(-4000);
      });
      exited = new Promise<void>((resolve) => {
        c.once('exit', () => {
          live.delete(c);
          if (child === c) child = undefined;
          resolve();
        });
        c.once('error', (err) => {
          stderrTail += `\nspawn failed: ${err.message}`;
          live.delete(c);
          if (child === c) child = undefined;
          resolve();
        });
      });
      await waitHealthy(clientUrl, () => child === c, () => stderrTail);
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
    async stop(graceMs = 5_000) {
      const c = child;
      if (!c) return;
      // A paused etcd would sit on SIGTERM until the SIGKILL fallback.
      c.kill('SIGCONT');
      c.kill('SIGTERM');
      const timer = setTimeout(() => c.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
    async restart(opts = {}) {
      await server.stop();
      if (opts.wipe) fs.rmSync(dataDir, { recursive: true, force: true });
      await server.start();
    },
    async cleanup() {
      await server.stop(1_000);
      fs.rmSync(ownDir ?? dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

async function waitHealthy(url: string, alive: () => boolean, tail: () => string): Promise<void> {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (!alive()) throw new Error(`etcd exited before becoming healthy:\n${tail()}`);
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1_000) });
      const body = (await res.json()) as { health?: string };
      if (body.health === 'true') return;
      last = JSON.stringify(body);
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`etcd at ${url} not healthy within ${HEALTH_TIMEOUT_MS} ms (${last}):\n${tail()}`);
}

/** Ports the kernel just handed out; closed again before etcd binds them, which is racy but fine on a test box. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () =>
      new Promise<net.Server>((resolve, reject) => {
        const s = net.createServer();
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => resolve(s));
      }),
    ),
  );
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}
