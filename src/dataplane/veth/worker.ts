/**
 * Netlink worker thread. Deleting a veth holds the calling thread ~20 ms inside sendmsg (the kernel's
 * synchronize_net), and entering namespaces with setns() moves the calling thread; both belong here, not
 * on the daemon's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Ops } from './ops.js';
import { toWire, type Call, type ExitNow, type Request, type Results, type WorkerConfig, type WorkerMessage } from './protocol.js';
import { SocketPool, type PoolLog } from './sockets.js';
import { VxlanOps } from '../vxlan/ops.js';

const port = parentPort;
if (!port) throw new Error('dataplane worker must run as a worker_thread');
const config = workerData as WorkerConfig;

const post = (m: WorkerMessage): void => port.postMessage(m);
const log: PoolLog = (level, msg, fields) => post({ kind: 'log', level, msg, ...(fields ? { fields } : {}) });

const pool = new SocketPool({ idleMs: config.socketIdleMs, maxInFlight: config.maxInFlight }, log);
const ops = new Ops(pool, log);
const vxlan = new VxlanOps(pool, log, ops);
let closing = false;

// A worker dying of an uncaught error with a netlink socket open segfaults the whole process. Close the
// sockets and end just this thread; the main side fails pending calls when it sees the exit.
const die = (err: unknown): void => {
  log('error', 'dataplane worker crashed', { err: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  shutdown();
  process.exit(1);
};

/** Closes every socket and tells a main thread blocked in its exit handler that it may proceed. */
function shutdown(): void {
  closing = true;
  pool.closeAll();
  const flag = new Int32Array(config.exitFlag);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
}
process.on('uncaughtException', die);
process.on('unhandledRejection', die);

async function dispatch(c: Call): Promise<Results[Call['op']]> {
  switch (c.op) {
    case 'createVeth':
      return ops.createVeth(c.spec);
    case 'deleteVeth':
      return ops.deleteVeth(c.netns, c.ifname);
    case 'linkExists':
      return ops.linkExists(c.netns, c.ifname);
    case 'snapshot':
      return ops.snapshot(c.netns);
    case 'listOwned':
      return ops.listOwned(c.netns);
    case 'deleteLinks':
      return ops.deleteLinks(c.netns, c.links);
    case 'createVxlan':
      return vxlan.createVxlan(c.spec);
    case 'deleteVxlan':
      return vxlan.deleteVxlan(c.netns, c.ifname);
    case 'underlayMtu':
      return vxlan.underlayMtu(c.netns, c.ip);
    case 'stats':
      return { openSockets: pool.openKeys() };
    case 'close':
      throw new Error('unreachable');
  }
}

port.on('message', (req: Request | ExitNow) => {
  if (req.op === 'exitNow') {
    shutdown();
    port.close();
    return;
  }
  if (req.op === 'close') {
    // The main side only sends close after every other call has been answered.
    shutdown();
    post({ kind: 'reply', id: req.id, ok: true, value: undefined });
    // With the sockets closed, letting the port go ends the thread normally (terminate() would crash it).
    port.close();
    return;
  }
  if (closing) {
    post({ kind: 'reply', id: req.id, ok: false, error: { name: 'DataplaneError', message: 'dataplane is closed', code: 'ECLOSED' } });
    return;
  }
  dispatch(req).then(
    (value) => post({ kind: 'reply', id: req.id, ok: true, value }),
    (err: unknown) => post({ kind: 'reply', id: req.id, ok: false, error: toWire(err) }),
  );
});

post({ kind: 'ready' });
