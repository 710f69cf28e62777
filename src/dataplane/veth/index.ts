/**
 * Main-thread face of the netlink data plane: a thin RPC client for the worker in worker.ts.
 * Namespaces may be given as paths or as upstream `inode://dev/ino` URLs; URLs are resolved here because
 * the resolver's cache is shared with the rest of the process.
 */
import type { Worker } from 'node:worker_threads';
import { pino, type Logger } from 'pino';
import { isInodeUrl, netnsPath } from '../netns.js';
import type { Dataplane, NetnsSnapshot, VethSpec, VxlanEnd } from '../types.js';
import { DataplaneError, fromWire, type Call, type ExitNow, type Results, type WorkerConfig, type WorkerMessage, type WorkerStats } from './protocol.js';
import { spawnWorker } from './spawn.js';

export { DataplaneError } from './protocol.js';

export interface NetlinkDataplaneOptions {
  logger?: Logger;
  /**
   * A namespace's socket is closed after this long without use. Open sockets keep deleted namespaces
   * (and the veths in them) alive, so this bounds how long a pod's teardown can be held up by us.
   */
  socketIdleMs?: number;
  /** Requests in flight per netlink socket; above ~100 the native binding aborts the process. */
  maxInFlight?: number;
}

/** The Dataplane plus introspection that tests and diagnostics use. */
export interface NetlinkDataplane extends Dataplane {
  /** Namespace keys (`dev/ino`) with an open socket in the worker. */
  stats(): Promise<WorkerStats>;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  /** Where the call was made; a worker error's own stack would only show the message port. */
  site: Error;
}

class WorkerClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private dead: Error | undefined;
  private readonly exited: Promise<void>;

  constructor(
    private readonly worker: Worker,
    private readonly exitFlag: SharedArrayBuffer,
    private readonly log: Logger,
  ) {
    worker.on('message', (m: WorkerMessage) => this.onMessage(m));
    worker.on('error', (err) => this.fail(err instanceof Error ? err : new Error(String(err))));
    this.exited = new Promise((resolve) => worker.once('exit', (code) => {
      if (code !== 0) this.log.error({ code }, 'dataplane worker exited unexpectedly');
      resolve();
    }));
    process.on('exit', this.onProcessExit);
    void this.exited.then(() => process.off('exit', this.onProcessExit));
    void this.exited.then(() => this.fail(new DataplaneError('dataplane worker exited', 'ECLOSED')));
  }

  /**
   * The process is exiting without close() (natural end or process.exit()). Tearing the worker down with
   * sockets open would segfault, and nothing can be awaited here, so block until the worker has closed them.
   */
  private readonly onProcessExit = (): void => {
    const flag = new Int32Array(this.exitFlag);
    if (Atomics.load(flag, 0) === 1) return;
    const msg: ExitNow = { op: 'exitNow' };
    this.worker.postMessage(msg);
    Atomics.wait(flag, 0, 0, 2000);
  };

  ready(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onMsg = (m: WorkerMessage) => {
        if (m.kind === 'ready') {
          this.worker.off('message', onMsg);
          this.worker.off('error', onErr);
          // From here on only a pending call keeps the process alive; an idle data plane must not block exit.
          if (this.pending.size === 0) this.worker.unref();
          resolve();
        }
      };
      const onErr = (err: unknown) => {
        this.worker.off('message', onMsg);
        reject(err instanceof Error ? err : new Error(String(err)));
      };
      this.worker.on('message', onMsg);
      this.worker.once('error', onErr);
      void this.exited.then(() => reject(new DataplaneError('dataplane worker exited during startup', 'EWORKER')));
    });
  }

  call<C extends Call>(c: C): Promise<Results[C['op']]> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.nextId++;
    return new Promise<Results[C['op']]>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, site: new Error() });
      if (this.pending.size === 1) this.worker.ref();
      this.worker.postMessage({ ...c, id });
    });
  }

  async waitExit(): Promise<void> {
    // Held until the exit event, or a process with nothing else to do would quit before close() resolves.
    this.worker.ref();
    await this.exited;
  }

  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    if (this.pending.size === 0) this.worker.unref();
    return p;
  }

  private onMessage(m: WorkerMessage): void {
    switch (m.kind) {
      case 'reply': {
        const p = this.settle(m.id);
        if (!p) return;
        if (m.ok) {
          p.resolve(m.value);
        } else {
          const err = fromWire(m.error);
          err.stack = `${err.name}: ${err.message}\n${(p.site.stack ?? '').split('\n').slice(1).join('\n')}`;
          p.reject(err);
        }
        return;
      }
      case 'log':
        this.log[m.level](m.fields ?? {}, m.msg);
        return;
      case 'ready':
        return;
    }
  }

  private fail(err: Error): void {
    if (!this.dead) this.dead = err;
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(err);
  }
}

class Impl implements NetlinkDataplane {
  private closing: Promise<void> | undefined;
  /** Calls not yet answered; close() waits for them so no socket is closed under a request. */
  private readonly inflight = new Set<Promise<unknown>>();

  constructor(
    private readonly client: WorkerClient,
    private readonly log: Logger,
  ) {}

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    const done = () => this.inflight.delete(p);
    p.then(done, done);
    return p;
  }

  private run<C extends Exclude<Call, { op: 'close' }>>(c: C): Promise<Results[C['op']]> {
    if (this.closing) return Promise.reject(new DataplaneError('dataplane is closed', 'ECLOSED'));
    return this.track(this.client.call(c));
  }

  private async resolveSpec(spec: VethSpec): Promise<VethSpec> {
    const [c, e] = await Promise.all([netnsPath(spec.client.netns), netnsPath(spec.endpoint.netns)]);
    return { ...spec, client: { ...spec.client, netns: c }, endpoint: { ...spec.endpoint, netns: e } };
  }

  async createVeth(spec: VethSpec): Promise<void> {
    // Plain paths skip the resolver's promises: callers submit a thousand of these in one tick.
    const s = isInodeUrl(spec.client?.netns ?? '') || isInodeUrl(spec.endpoint?.netns ?? '') ? await this.resolveSpec(spec) : spec;
    await this.run({ op: 'createVeth', spec: s });
    this.log.debug({ connId: spec.connId, client: spec.client.ifname, endpoint: spec.endpoint.ifname }, 'veth created');
  }

  async deleteVeth(end: { netns: string; ifname: string }): Promise<void> {
    let netns: string;
    try {
      netns = await netnsPath(end.netns);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENETNSNOTFOUND') return; // namespace gone: so is the link
      throw err;
    }
    await this.run({ op: 'deleteVeth', netns, ifname: end.ifname });
  }

  async createVxlan(spec: VxlanEnd): Promise<void> {
    const s =
      isInodeUrl(spec.underlayNetns ?? '') || isInodeUrl(spec.end?.netns ?? '')
        ? { ...spec, underlayNetns: await netnsPath(spec.underlayNetns), end: { ...spec.end, netns: await netnsPath(spec.end.netns) } }
        : spec;
    await this.run({ op: 'createVxlan', spec: s });
    this.log.debug({ connId: spec.connId, ifname: spec.end.ifname, vni: spec.vni, remote: spec.remoteIp }, 'vxlan created');
  }

  async deleteVxlan(end: { netns: string; ifname: string }): Promise<void> {
    let netns: string;
    try {
      netns = await netnsPath(end.netns);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENETNSNOTFOUND') return; // namespace gone: so is the device
      throw err;
    }
    await this.run({ op: 'deleteVxlan', netns, ifname: end.ifname });
  }

  async underlayMtu(netns: string, ip: string): Promise<number> {
    return this.run({ op: 'underlayMtu', netns: await netnsPath(netns), ip });
  }

  async linkExists(netns: string, ifname: string): Promise<boolean> {
    let path: string;
    try {
      path = await netnsPath(netns);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENETNSNOTFOUND') return false;
      throw err;
    }
    return this.run({ op: 'linkExists', netns: path, ifname });
  }

  async snapshot(netns: string): Promise<NetnsSnapshot> {
    return this.run({ op: 'snapshot', netns: await netnsPath(netns) });
  }

  async sweep(netns: string, keep: (connId: string) => boolean): Promise<string[]> {
    let path: string;
    try {
      path = await netnsPath(netns);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENETNSNOTFOUND') return [];
      throw err;
    }
    // `keep` is a closure and cannot cross to the worker, so the filter runs here between two calls.
    const owned = await this.run({ op: 'listOwned', netns: path });
    const doomed = owned.filter((l) => !keep(l.connId));
    if (doomed.length === 0) return [];
    const names = await this.run({ op: 'deleteLinks', netns: path, links: doomed.map(({ ifname, index }) => ({ ifname, index })) });
    this.log.info({ netns, links: names }, 'swept stale links');
    return names;
  }

  stats(): Promise<WorkerStats> {
    return this.run({ op: 'stats' });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([...this.inflight]);
      try {
        await this.client.call({ op: 'close' });
      } catch (err) {
        if ((err as { code?: string }).code !== 'ECLOSED') throw err;
      }
      await this.client.waitExit();
    })();
    return this.closing;
  }
}

/**
 * Starts the netlink worker and resolves once it is ready. Call close() before exit: it closes the
 * sockets and lets the worker end on its own.
 */
export async function createNetlinkDataplane(opts: NetlinkDataplaneOptions = {}): Promise<NetlinkDataplane> {
  const log = opts.logger ?? pino({ level: 'silent' });
  const config: WorkerConfig = {
    socketIdleMs: opts.socketIdleMs ?? 2000,
    maxInFlight: opts.maxInFlight ?? 32,
    exitFlag: new SharedArrayBuffer(4),
  };
  const worker = spawnWorker('worker', { ...config });
  const client = new WorkerClient(worker, config.exitFlag, log);
  try {
    await client.ready();
  } catch (err) {
    // The worker failed before opening any socket, so terminating it cannot hit the open-socket crash.
    await worker.terminate();
    throw new DataplaneError(`netlink worker failed to start: ${(err as Error).message}`, 'EWORKER');
  }
  return new Impl(client, log);
}
