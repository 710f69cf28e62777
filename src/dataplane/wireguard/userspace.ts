/**
 * WireGuard ends backed by wireguard-go (this kernel has no WireGuard module). One wireguard-go process
 * per connection end, supervised as a child of nsmd:
 *
 *   setpriv --pdeathsig KILL -- nsenter --net=<underlay> -- wireguard-go -f <ifname>
 *
 * Both wrappers exec, so the child's pid is wireguard-go's. It runs in the node (underlay) namespace, which
 * is where it creates its TUN and, more importantly, its UDP socket. The parent-death signal makes it die
 * with nsmd even on SIGKILL, and killing it destroys the TUN wherever it is, since the TUN is not persistent.
 *
 * create():
 *   1. spawn, then configure over the UAPI (private key, listen port, the one peer, keepalive, allowed IPs),
 *      retrying until the socket accepts: "started" means the UAPI answers, not a guessed delay;
 *   2. set the MTU while the TUN is still in the node namespace and wait until wireguard-go logs that it saw
 *      it. wireguard-go learns MTU changes from netlink in its own namespace only and uses the MTU to cap the
 *      padding of each packet; with the default 1420 left in place, a 1440-byte packet is padded past 1440 and
 *      its outer packet (1512) no longer fits a 1500 underlay, so every full-size packet would fragment;
 *   3. move the TUN into the pod and, in the same request, rename it, set the alias and bring it up;
 *   4. add addresses and routes inside the pod (the move drops addresses);
 *   5. check that wireguard-go holds its UDP socket on the listen port in the node namespace.
 *   Any failure kills the process, which takes the device wherever it got to: all or nothing.
 *
 * Steps 2–4 run `ip` under `nsenter` (execa), not through the NetlinkDataplane: its public API creates
 * devices but cannot take over an existing one (move it between namespaces and configure it there), and its
 * worker, protocol and ops files belong to other work in progress. This costs three short-lived processes per
 * create. A NetlinkDataplane op "adopt link: move from netns A to B, rename, MTU, alias, addresses, routes,
 * up" would replace them when nsmd integration happens.
 *
 * delete(): SIGTERM (wireguard-go closes the device and removes its socket), SIGKILL after a deadline, wait
 * for the exit, remove the socket if still there. Idempotent.
 *
 * A process that exits while its end is up is reported through onExit after its socket is removed and the
 * end is forgotten: killed, crashed, or its TUN vanished because the pod's namespace was deleted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import type { Logger } from 'pino';
import { parseCidr, parseIp, type Family } from '../ip.js';
import { isInodeUrl, netnsIdOf, netnsPath, parseInodeUrl } from '../netns.js';
import { ALIAS_PREFIX } from '../types.js';
import { DataplaneError } from '../veth/protocol.js';
import { silentLogger } from '../../util/log.js';
import { KeyedMutex } from '../../util/keyed-mutex.js';
import { FatalError, waitFor } from '../../util/wait-for.js';
import { cleanupStale } from './cleanup.js';
import { isValidBase64Key, toPrivateKeyObject } from './keys.js';
import { WG_KEEPALIVE_SEC } from './mtu.js';
import { OWNER_ENV, selfOwnerMark, udpPortsOf } from './proc.js';
import type { CleanupReport, WireguardEnd, WireguardEndInfo, WireguardExitListener, WireguardPeer, WireguardState } from './types.js';
import { parseEndpoint, uapiGet, uapiSet, uapiSocketPath, probeSocket, type UapiDevice, type UapiError } from './uapi.js';

export const DEFAULT_NAME_PREFIX = 'nsmwg';

/** The MTU wireguard-go gives the TUN it creates (device.DefaultMTU). */
const WG_GO_INITIAL_MTU = 1420;

const IFNAMSIZ = 16;
const IFALIASZ = 256;
/** Stricter than the kernel: these names also go into `ip -batch` lines and /proc/sys paths. */
const IFNAME_RE = /^[A-Za-z0-9_.-]+$/;
const PREFIX_RE = /^[a-z][a-z0-9]{0,8}$/;

export interface WireguardBackendOptions {
  logger?: Logger;
  /**
   * Start of every node-side interface name (and so of every UAPI socket name) this backend uses; what
   * cleanupStale() looks for. 1–9 characters [a-z0-9], leaving at least 6 hex digits of hash. Default 'nsmwg'.
   */
  namePrefix?: string;
  /** From spawn until the UAPI accepts the configuration. */
  startTimeoutMs?: number;
  /** For each `ip` command and for each wait on wireguard-go (MTU seen, socket bound). */
  stepTimeoutMs?: number;
  /** SIGTERM, then SIGKILL after this long; and as long again for SIGKILL to take. */
  stopTimeoutMs?: number;
  /** Program names or paths; defaults are looked up on PATH. */
  binaries?: { wireguardGo?: string; ip?: string; nsenter?: string; setpriv?: string };
}

export interface WireguardBackend {
  /** All or nothing; rejects with EEXIST when the connection or the interface name is already in use. */
  create(spec: WireguardEnd): Promise<WireguardEndInfo>;
  /** Stops the end of that connection id or node-side interface name. Idempotent: unknown ones are success. */
  delete(connIdOrIfname: string): Promise<void>;
  list(): Promise<WireguardEndInfo[]>;
  /** The UAPI view of one end (peer, endpoint, last handshake, counters); never the private key. */
  get(connIdOrIfname: string): Promise<UapiDevice>;
  /**
   * Key rotation: gives a running end a new private key and its peer's (new) public key in one UAPI call,
   * keeping port, endpoint, MTU and device. Rejects with ENOENT for an end that is not up.
   */
  rekey(connId: string, privateKey: KeyObject, peer: WireguardPeer, keepaliveSec?: number): Promise<void>;
  /** Returns an unsubscribe function. */
  onExit(cb: WireguardExitListener): () => void;
  /** The node-side name derived for a connection, as create() would pick it. */
  ifnameFor(connId: string, underlayNetns: string): string;
  /** cleanupStale() with this backend's prefix and logger; run once at start, before the first create. */
  cleanupStale(): Promise<CleanupReport>;
  /** Stops every end and refuses new ones. */
  close(): Promise<void>;
}

/**
 * Node-side name for a connection: prefix + hex of sha256(underlay netns identity, connId). The underlay
 * identity is in the hash because two simulated nodes on one machine serve the two ends of the same
 * connection id and share /var/run/wireguard.
 */
export function wgIfname(connId: string, underlayNetns: string, prefix = DEFAULT_NAME_PREFIX): string {
  if (!PREFIX_RE.test(prefix)) throw new DataplaneError(`interface name prefix ${JSON.stringify(prefix)} must be 1-9 characters [a-z0-9], starting with a letter`, 'EINVAL');
  let id: string;
  try {
    const n = isInodeUrl(underlayNetns) ? parseInodeUrl(underlayNetns) : netnsIdOf(underlayNetns);
    id = `${n.dev}/${n.ino}`;
  } catch (err) {
    throw new DataplaneError(`underlay netns ${underlayNetns}: ${(err as Error).message}`, (err as { code?: string }).code ?? 'ENOENT');
  }
  const h = createHash('sha256').update(id).update('\0').update(connId).digest('hex');
  return prefix + h.slice(0, IFNAMSIZ - 1 - prefix.length);
}

function invalid(msg: string): DataplaneError {
  return new DataplaneError(msg, 'EINVAL');
}

function checkIfname(name: unknown, where: string): string {
  if (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) >= IFNAMSIZ || !IFNAME_RE.test(name) || name === '.' || name === '..') {
    throw invalid(`${where}: interface name ${JSON.stringify(name)} must be 1..${IFNAMSIZ - 1} characters of [A-Za-z0-9_.-]`);
  }
  return name;
}

interface Prepared {
  connId: string;
  ifname: string;
  podIfname: string;
  alias: string;
  underlayNetns: string;
  netns: string;
  listenPort: number;
  privateKey: KeyObject;
  peer: { publicKey: string; endpoint: string; allowedIps: string[] };
  keepalive: number;
  mtu: number;
  /** `ip -batch` lines for the pod, in order: addresses, then routes (which need them). */
  podLines: string[];
  hasV6: boolean;
}

function prepare(spec: WireguardEnd, prefix: string): Prepared {
  if (!spec || typeof spec.connId !== 'string' || spec.connId === '') throw invalid('createWireguard: connId missing');
  const where = `createWireguard ${spec.connId}`;
  if (/[\x00-\x1f\x7f]/.test(spec.connId)) throw invalid(`${where}: connId contains control characters`);
  const alias = `${ALIAS_PREFIX}${spec.connId}`;
  if (Buffer.byteLength(alias) >= IFALIASZ) throw invalid(`${where}: connId too long for a link alias (${IFALIASZ - 1} bytes with prefix)`);
  if (typeof spec.underlayNetns !== 'string' || spec.underlayNetns === '') throw invalid(`${where}: underlay netns missing`);
  if (!spec.end || typeof spec.end.netns !== 'string' || spec.end.netns === '') throw invalid(`${where}: pod netns missing`);
  const ifname = checkIfname(spec.ifname ?? wgIfname(spec.connId, spec.underlayNetns, prefix), `${where} node side`);
  if (!ifname.startsWith(prefix)) throw invalid(`${where}: node-side name ${ifname} must start with ${prefix}, or stale instances could not be found`);
  const podIfname = checkIfname(spec.end.ifname, `${where} pod side`);
  if (!Number.isInteger(spec.listenPort) || spec.listenPort < 1 || spec.listenPort > 65535) throw invalid(`${where}: listenPort ${spec.listenPort} must be 1..65535`);
  if (!Number.isInteger(spec.mtu) || spec.mtu < 68 || spec.mtu > 65535) throw invalid(`${where}: mtu ${spec.mtu} must be an integer in 68..65535`);
  const keepalive = spec.keepaliveSec ?? WG_KEEPALIVE_SEC;
  if (!Number.isInteger(keepalive) || keepalive < 0 || keepalive > 65535) throw invalid(`${where}: keepaliveSec ${keepalive} must be 0..65535`);
  let privateKey: KeyObject;
  try {
    privateKey = toPrivateKeyObject(spec.privateKey);
  } catch (err) {
    throw invalid(`${where}: private key: ${(err as Error).message}`);
  }
  const peer = spec.peer;
  if (!peer || !isValidBase64Key(peer.publicKey)) throw invalid(`${where}: peer public key must be 44 characters of base64 encoding 32 bytes`);
  try {
    parseEndpoint(peer.endpoint);
    for (const a of peer.allowedIps ?? []) parseCidr(a);
  } catch (err) {
    throw invalid(`${where}: peer: ${(err as Error).message}`);
  }

  const podLines: string[] = [];
  let hasV6 = false;
  for (const a of spec.end.addrs ?? []) {
    let c;
    try {
      c = parseCidr(a);
    } catch (err) {
      throw invalid(`${where}: ${(err as Error).message}`);
    }
    hasV6 ||= c.family === 6;
    // nodad: a point-to-point tunnel has nobody to collide with, and DAD would hold the address for ~1 s.
    podLines.push(`address add ${a} dev ${podIfname}${c.family === 6 ? ' nodad' : ''}`);
  }
  for (const r of spec.end.routes ?? []) {
    let fam: Family;
    try {
      fam = parseCidr(r.prefix).family;
    } catch (err) {
      throw invalid(`${where}: route ${(err as Error).message}`);
    }
    hasV6 ||= fam === 6;
    if (r.via !== undefined && r.via !== '') {
      const gw = parseIp(r.via);
      if (!gw) throw invalid(`${where}: route ${r.prefix} via ${JSON.stringify(r.via)}: bad gateway address`);
      if (gw.family !== fam) throw invalid(`${where}: route ${r.prefix} via ${r.via}: address families differ`);
      podLines.push(`route add ${r.prefix} via ${r.via} dev ${podIfname} onlink proto static`);
    } else {
      podLines.push(`route add ${r.prefix} dev ${podIfname} proto static`);
    }
  }
  return {
    connId: spec.connId,
    ifname,
    podIfname,
    alias,
    underlayNetns: spec.underlayNetns,
    netns: spec.end.netns,
    listenPort: spec.listenPort,
    privateKey,
    peer: { publicKey: peer.publicKey, endpoint: peer.endpoint, allowedIps: [...(peer.allowedIps ?? [])] },
    keepalive,
    mtu: spec.mtu,
    podLines,
    hasV6,
  };
}

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

const LOG_LINE = /^(DEBUG|ERROR): \([^)]*\) \d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d (.*)$/;

/** One supervised wireguard-go: its exit, its log lines (to the logger and to whoever waits for one). */
class WgProcess {
  readonly child: ChildProcess;
  exit: ExitInfo | undefined;
  readonly exited: Promise<ExitInfo>;
  /**
   * Why the last bind failed, from the log. The UAPI accepts connections before the device is up, and a
   * listen_port set while it is down is only stored: the bind then happens (and fails, e.g. on a port that is
   * taken) when the device comes up, and the log is the only place that says so.
   */
  bindError: string | undefined;
  private readonly tail: string[] = [];
  private readonly lineWatchers = new Set<(line: string) => void>();

  constructor(cmd: string, args: string[], env: NodeJS.ProcessEnv, log: Logger, onExit: (info: ExitInfo) => void) {
    let settle!: (i: ExitInfo) => void;
    this.exited = new Promise<ExitInfo>((resolve) => (settle = resolve));
    const done = (info: ExitInfo): void => {
      if (this.exit) return;
      this.exit = info;
      settle(info);
      onExit(info);
    };
    this.child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.child.once('exit', (code, signal) => done({ code, signal }));
    // Only when the spawn itself failed (e.g. setpriv missing); no 'exit' follows then.
    this.child.once('error', (error) => done({ code: null, signal: null, error }));
    // The pipes are always drained: a full pipe would block wireguard-go's logging goroutine and then the device.
    for (const [stream, isErr] of [[this.child.stdout, false], [this.child.stderr, true]] as const) {
      if (!stream) continue;
      createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => this.onLine(line, isErr, log));
    }
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  private onLine(line: string, isErr: boolean, log: Logger): void {
    const m = LOG_LINE.exec(line);
    const msg = m ? (m[2] as string) : line;
    if (isErr || m?.[1] === 'ERROR') log.warn({ wg: msg }, 'wireguard-go');
    else log.trace({ wg: msg }, 'wireguard-go');
    const bind = /^Unable to update bind: (.*)$/.exec(msg);
    if (bind) this.bindError = bind[1];
    else if (msg === 'UDP bind has been updated') this.bindError = undefined;
    this.tail.push(msg);
    if (this.tail.length > 10) this.tail.shift();
    for (const w of [...this.lineWatchers]) w(msg);
  }

  /** Last lines of output, for error messages. */
  tailText(): string {
    return this.tail.join(' | ');
  }

  describeExit(): string {
    const e = this.exit;
    if (!e) return 'running';
    if (e.error) return `could not be started: ${e.error.message}`;
    return `exited (${e.signal ? `signal ${e.signal}` : `code ${e.code}`})${this.tail.length ? `: ${this.tailText()}` : ''}`;
  }

  /**
   * Resolves when a line matching `re` is logged, rejects on exit or after `timeoutMs`. Register it before
   * causing the line, or it may pass unseen.
   */
  waitLine(re: RegExp, timeoutMs: number, what: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        this.lineWatchers.delete(watcher);
      };
      const watcher = (line: string): void => {
        if (!re.test(line)) return;
        cleanup();
        resolve();
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new DataplaneError(`${what}: not seen within ${timeoutMs} ms`, 'ETIMEDOUT'));
      }, timeoutMs);
      this.lineWatchers.add(watcher);
      void this.exited.then(() => {
        if (!this.lineWatchers.has(watcher)) return;
        cleanup();
        reject(new DataplaneError(`${what}: wireguard-go ${this.describeExit()}`, 'ECHILD'));
      });
    });
  }

  private waitExit(ms: number): Promise<boolean> {
    if (this.exit) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      void this.exited.then(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** SIGTERM, SIGKILL after `ms`; true once the process has exited. */
  async stop(ms: number): Promise<boolean> {
    if (this.exit) return true;
    this.child.kill('SIGTERM');
    if (await this.waitExit(ms)) return true;
    this.child.kill('SIGKILL');
    return this.waitExit(ms);
  }
}

interface Entry {
  connId: string;
  ifname: string;
  podIfname: string;
  underlayNetns: string;
  netns: string;
  listenPort: number;
  state: WireguardState;
  startedAt: Date;
  proc: WgProcess | undefined;
}

/** Keeps the wrapped error's code; adds what we were doing. */
/**
 * wireguard-go watches its UAPI socket with an inotify instance, and the host allows each user only
 * fs.inotify.max_user_instances of them (128 by default), shared with everything else running as root: past that,
 * every new userspace WireGuard end fails the same way, so say which limit it is and how to raise it.
 */
function inotifyExhausted(what: string): DataplaneError {
  let limit = 'its limit';
  try {
    limit = readFileSync('/proc/sys/fs/inotify/max_user_instances', 'utf8').trim();
  } catch {
    // only for the message
  }
  return new DataplaneError(
    `${what}: wireguard-go could not watch its UAPI socket: the host's inotify instances (fs.inotify.max_user_instances = ${limit}) are used up, and each userspace WireGuard end takes one; raise it (sysctl -w fs.inotify.max_user_instances=8192) or use kernel WireGuard`,
    'EMFILE',
  );
}

function wrap(what: string, err: unknown): DataplaneError {
  if (err instanceof DataplaneError) return new DataplaneError(`${what}: ${err.message}`, err.code, err.errno);
  const e = err as { message?: string; code?: unknown };
  return new DataplaneError(`${what}: ${e?.message ?? String(err)}`, typeof e?.code === 'string' ? e.code : 'EIO');
}

/** The errno name behind an `ip`/`nsenter` failure, from the text they print. */
function codeOfIpFailure(stderr: string): string {
  if (/File exists/i.test(stderr)) return 'EEXIST';
  if (/Cannot find device|No such device/i.test(stderr)) return 'ENODEV';
  if (/No such file or directory/i.test(stderr)) return 'ENOENT';
  if (/Permission denied/i.test(stderr)) return 'EACCES';
  if (/Invalid argument|Error: /i.test(stderr)) return 'EINVAL';
  return 'EIO';
}

/** An error that ends a waitFor at once instead of retrying, carrying the real one. */
class Abort extends FatalError {
  constructor(readonly inner: Error) {
    super(inner.message);
  }
}

class Backend implements WireguardBackend {
  private readonly log: Logger;
  private readonly prefix: string;
  private readonly startTimeoutMs: number;
  private readonly stepTimeoutMs: number;
  private readonly stopTimeoutMs: number;
  private readonly bin: { wireguardGo: string; ip: string; nsenter: string; setpriv: string };
  private readonly byConn = new Map<string, Entry>();
  private readonly byIfname = new Map<string, Entry>();
  /** Orders create and delete of one connection; different connections proceed in parallel. */
  private readonly mutex = new KeyedMutex();
  private readonly exitListeners = new Set<WireguardExitListener>();
  private readonly ownerMark = selfOwnerMark();
  private closing: Promise<void> | undefined;

  constructor(opts: WireguardBackendOptions) {
    this.log = opts.logger ?? silentLogger;
    this.prefix = opts.namePrefix ?? DEFAULT_NAME_PREFIX;
    if (!PREFIX_RE.test(this.prefix)) throw invalid(`namePrefix ${JSON.stringify(this.prefix)} must be 1-9 characters [a-z0-9], starting with a letter`);
    this.startTimeoutMs = opts.startTimeoutMs ?? 5000;
    this.stepTimeoutMs = opts.stepTimeoutMs ?? 5000;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? 2000;
    this.bin = {
      wireguardGo: opts.binaries?.wireguardGo ?? 'wireguard-go',
      ip: opts.binaries?.ip ?? 'ip',
      nsenter: opts.binaries?.nsenter ?? 'nsenter',
      setpriv: opts.binaries?.setpriv ?? 'setpriv',
    };
  }

  ifnameFor(connId: string, underlayNetns: string): string {
    return wgIfname(connId, underlayNetns, this.prefix);
  }

  create(spec: WireguardEnd): Promise<WireguardEndInfo> {
    if (this.closing) return Promise.reject(new DataplaneError('WireGuard backend is closed', 'ECLOSED'));
    let p: Prepared;
    try {
      p = prepare(spec, this.prefix);
    } catch (err) {
      return Promise.reject(err);
    }
    // Claimed synchronously, so a second create of the same connection or name fails at once and a delete
    // issued right after this create finds the entry and queues behind it.
    if (this.byConn.has(p.connId)) return Promise.reject(new DataplaneError(`createWireguard ${p.connId}: the connection already has a WireGuard end`, 'EEXIST'));
    if (this.byIfname.has(p.ifname)) return Promise.reject(new DataplaneError(`createWireguard ${p.connId}: interface name ${p.ifname} is in use by connection ${this.byIfname.get(p.ifname)?.connId}`, 'EEXIST'));
    const e: Entry = {
      connId: p.connId,
      ifname: p.ifname,
      podIfname: p.podIfname,
      underlayNetns: p.underlayNetns,
      netns: p.netns,
      listenPort: p.listenPort,
      state: 'starting',
      startedAt: new Date(),
      proc: undefined,
    };
    this.byConn.set(e.connId, e);
    this.byIfname.set(e.ifname, e);
    return this.mutex.run(e.connId, () => this.doCreate(e, p));
  }

  private async doCreate(e: Entry, p: Prepared): Promise<WireguardEndInfo> {
    const what = `createWireguard ${p.connId} (${p.ifname} -> ${p.podIfname} in ${p.netns}, port ${p.listenPort}, peer ${p.peer.endpoint})`;
    const t0 = performance.now();
    const steps: Record<string, number> = {};
    const mark = (step: string): void => {
      steps[step] = Math.round((performance.now() - t0) * 10) / 10;
    };
    try {
      [e.underlayNetns, e.netns] = await Promise.all([netnsPath(p.underlayNetns), netnsPath(p.netns)]);
      // Checked before spawning: a missing pod namespace would otherwise only show at the move, ~20 ms in.
      for (const [role, path] of [['underlay', e.underlayNetns], ['pod', e.netns]] as const) {
        if (!existsSync(path)) throw new DataplaneError(`${role} netns ${path} does not exist`, 'ENOENT');
      }
      await this.claimSocket(e.ifname);
      const proc = this.spawn(e);
      e.proc = proc;
      await this.configure(proc, p);
      mark('uapi');
      if (p.mtu !== WG_GO_INITIAL_MTU) {
        await this.setMtuInNode(proc, e, p.mtu);
        mark('mtu');
      }
      const moveArgs = ['link', 'set', 'dev', e.ifname, 'netns', e.netns];
      if (p.podIfname !== e.ifname) moveArgs.push('name', p.podIfname);
      moveArgs.push('alias', p.alias, 'up');
      await this.nsExec(e.underlayNetns, [this.bin.ip, ...moveArgs], 'move the device into the pod');
      mark('move');
      if (p.hasV6) {
        // Runtimes may start pods with IPv6 off; upstream turns it on per interface before adding addresses.
        await this.nsExec(e.netns, ['tee', `/proc/sys/net/ipv6/conf/${p.podIfname}/disable_ipv6`], 'enable IPv6', '0\n');
      }
      if (p.podLines.length) {
        await this.nsExec(e.netns, [this.bin.ip, '-batch', '-'], 'add addresses and routes in the pod', `${p.podLines.join('\n')}\n`);
      }
      mark('pod');
      await this.waitBound(proc, p.listenPort);
      mark('bound');
      if (proc.exit) throw new DataplaneError(`wireguard-go ${proc.describeExit()}`, 'ECHILD');
      e.state = 'up';
    } catch (err) {
      let failure = wrap(what, err instanceof Abort ? err.inner : err);
      if (e.proc?.exit && !failure.message.includes('wireguard-go ')) failure.message += `; wireguard-go ${e.proc.describeExit()}`;
      if (e.proc && /uapi socket: too many open files/i.test(e.proc.tailText())) failure = inotifyExhausted(what);
      await this.teardown(e, failure);
      throw failure;
    }
    const info = this.info(e);
    this.log.info(
      { connId: e.connId, ifname: e.ifname, podIfname: e.podIfname, netns: e.netns, listenPort: e.listenPort, endpoint: p.peer.endpoint, pid: info.pid, ms: steps.bound, steps },
      'wireguard end created',
    );
    return info;
  }

  /** A leftover socket of a killed instance would not stop wireguard-go (it replaces stale ones), but a live one means the name is taken. */
  private async claimSocket(ifname: string): Promise<void> {
    const state = await probeSocket(ifname);
    if (state === 'live') throw new DataplaneError(`UAPI socket ${uapiSocketPath(ifname)} is served by another process (a leftover instance? see cleanupStale)`, 'EEXIST');
    if (state === 'stale') rmSync(uapiSocketPath(ifname), { force: true });
  }

  private spawn(e: Entry): WgProcess {
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      // Foreground, and no banner about the kernel module.
      WG_PROCESS_FOREGROUND: '1',
      // Verbose: the "MTU updated" line is the only signal that wireguard-go has seen the MTU (create step 2).
      LOG_LEVEL: 'verbose',
      [OWNER_ENV]: this.ownerMark,
    };
    const args = ['--pdeathsig', 'KILL', '--', this.bin.nsenter, `--net=${e.underlayNetns}`, '--', this.bin.wireguardGo, '-f', e.ifname];
    const log = this.log.child({ connId: e.connId, ifname: e.ifname });
    return new WgProcess(this.bin.setpriv, args, env, log, (info) => this.onProcExit(e, info));
  }

  /** Sends the whole configuration as soon as the UAPI socket accepts it; that is also the start-up wait. */
  private async configure(proc: WgProcess, p: Prepared): Promise<void> {
    const cfg = {
      privateKey: p.privateKey,
      listenPort: p.listenPort,
      replacePeers: true,
      peers: [
        {
          publicKey: p.peer.publicKey,
          endpoint: p.peer.endpoint,
          persistentKeepaliveInterval: p.keepalive,
          replaceAllowedIps: true,
          allowedIps: p.peer.allowedIps,
        },
      ],
    };
    const deadline = Date.now() + this.startTimeoutMs;
    await waitFor(
      `the UAPI of ${p.ifname} to accept the configuration`,
      async () => {
        if (proc.exit) throw new Abort(new DataplaneError(`wireguard-go ${proc.describeExit()}`, 'ECHILD'));
        try {
          await uapiSet(p.ifname, cfg, { timeoutMs: Math.max(100, deadline - Date.now()) });
          return true;
        } catch (err) {
          const code = (err as UapiError).code;
          // Not listening yet: the socket file appears a moment after the process starts.
          if (code === 'ENOENT' || code === 'ECONNREFUSED') return false;
          throw new Abort(err as Error);
        }
      },
      this.startTimeoutMs,
      2,
    );
  }

  private async setMtuInNode(proc: WgProcess, e: Entry, mtu: number): Promise<void> {
    const seen = proc.waitLine(new RegExp(`^MTU updated: ${mtu}\\b`), this.stepTimeoutMs, `wireguard-go noticing MTU ${mtu}`);
    // Not awaited yet: an ip failure must not leave this rejection unhandled.
    seen.catch(() => undefined);
    await this.nsExec(e.underlayNetns, [this.bin.ip, 'link', 'set', 'dev', e.ifname, 'mtu', String(mtu)], 'set the MTU');
    try {
      await seen;
    } catch (err) {
      if ((err as DataplaneError).code !== 'ETIMEDOUT') throw err;
      // A wireguard-go that words this differently still works; it only pads full-size packets past the MTU.
      this.log.warn({ connId: e.connId, ifname: e.ifname, mtu }, 'wireguard-go did not confirm the MTU; full-size packets may fragment on the underlay');
    }
  }

  private async waitBound(proc: WgProcess, port: number): Promise<void> {
    const pid = proc.pid;
    if (pid === undefined) throw new DataplaneError(`wireguard-go ${proc.describeExit()}`, 'ECHILD');
    await waitFor(
      `wireguard-go to hold UDP port ${port} in the node namespace`,
      async () => {
        if (proc.exit) throw new Abort(new DataplaneError(`wireguard-go ${proc.describeExit()}`, 'ECHILD'));
        if ((await udpPortsOf(pid)).has(port)) return true;
        const why = proc.bindError;
        if (why !== undefined) {
          throw new Abort(new DataplaneError(`wireguard-go cannot bind UDP port ${port}: ${why}`, /address already in use/i.test(why) ? 'EADDRINUSE' : 'EIO'));
        }
        return false;
      },
      this.stepTimeoutMs,
      5,
    );
  }

  /** Runs a command inside a namespace given by path; `ip -n` only takes names from /var/run/netns. */
  private async nsExec(netns: string, cmd: string[], what: string, input?: string): Promise<void> {
    const r = await execa(this.bin.nsenter, [`--net=${netns}`, '--', ...cmd], {
      reject: false,
      timeout: this.stepTimeoutMs,
      ...(input !== undefined ? { input } : { stdin: 'ignore' as const }),
    });
    if (r.exitCode === 0 && !r.timedOut) return;
    const stderr = String(r.stderr ?? '').trim().replace(/\s+/g, ' ');
    if (r.timedOut) throw new DataplaneError(`${what}: ${cmd[0]} took over ${this.stepTimeoutMs} ms`, 'ETIMEDOUT');
    throw new DataplaneError(`${what}: ${stderr || `exit code ${r.exitCode}`}`, codeOfIpFailure(stderr));
  }

  /** Stops the process (which removes the device wherever it is), removes the socket, forgets the entry. */
  private async teardown(e: Entry, cause?: Error): Promise<void> {
    e.state = 'stopping';
    const proc = e.proc;
    let stopped = true;
    if (proc) stopped = await proc.stop(this.stopTimeoutMs);
    rmSync(uapiSocketPath(e.ifname), { force: true });
    this.forget(e);
    if (!stopped) {
      this.log.error({ connId: e.connId, ifname: e.ifname, pid: proc?.pid }, 'wireguard-go survived SIGKILL');
      const msg = `wireguard-go ${proc?.pid} of ${e.ifname} did not exit after SIGKILL`;
      if (cause) cause.message += `; ${msg}`;
      else throw new DataplaneError(msg, 'EBUSY');
    }
  }

  private forget(e: Entry): void {
    if (this.byConn.get(e.connId) === e) this.byConn.delete(e.connId);
    if (this.byIfname.get(e.ifname) === e) this.byIfname.delete(e.ifname);
  }

  private onProcExit(e: Entry, info: ExitInfo): void {
    // create() and delete() handle exits that happen while they run.
    if (e.state !== 'up') return;
    e.state = 'stopping';
    // Synchronous, so a listener that re-creates the connection at once finds the name and socket free.
    rmSync(uapiSocketPath(e.ifname), { force: true });
    this.forget(e);
    this.log.warn({ connId: e.connId, ifname: e.ifname, code: info.code, signal: info.signal, last: e.proc?.tailText() }, 'wireguard-go exited unexpectedly; the end is gone');
    for (const cb of [...this.exitListeners]) {
      try {
        cb(e.connId, info.code, info.signal);
      } catch (err) {
        this.log.error({ connId: e.connId, err: (err as Error).message }, 'WireGuard exit listener threw');
      }
    }
  }

  private lookup(key: string): Entry | undefined {
    return this.byConn.get(key) ?? this.byIfname.get(key);
  }

  async delete(connIdOrIfname: string): Promise<void> {
    const found = this.lookup(connIdOrIfname);
    if (!found) return;
    await this.mutex.run(found.connId, async () => {
      // A failed create has already removed it, or an exit did.
      const e = this.lookup(connIdOrIfname);
      if (e !== found) return;
      const t0 = performance.now();
      await this.teardown(e);
      this.log.info({ connId: e.connId, ifname: e.ifname, ms: Math.round((performance.now() - t0) * 10) / 10 }, 'wireguard end deleted');
    });
  }

  private info(e: Entry): WireguardEndInfo {
    return {
      connId: e.connId,
      ifname: e.ifname,
      podIfname: e.podIfname,
      underlayNetns: e.underlayNetns,
      netns: e.netns,
      listenPort: e.listenPort,
      pid: e.proc?.pid,
      state: e.state,
      startedAt: e.startedAt,
    };
  }

  async list(): Promise<WireguardEndInfo[]> {
    return [...this.byConn.values()].map((e) => this.info(e));
  }

  rekey(connId: string, privateKey: KeyObject, peer: WireguardPeer, keepaliveSec = WG_KEEPALIVE_SEC): Promise<void> {
    return this.mutex.run(connId, async () => {
      const e = this.byConn.get(connId);
      if (!e || e.state !== 'up') throw new DataplaneError(`rekeyWireguard ${connId}: no running WireGuard end`, 'ENOENT');
      await uapiSet(
        e.ifname,
        {
          privateKey,
          replacePeers: true,
          peers: [{ publicKey: peer.publicKey, endpoint: peer.endpoint, persistentKeepaliveInterval: keepaliveSec, replaceAllowedIps: true, allowedIps: peer.allowedIps }],
        },
        { timeoutMs: this.stepTimeoutMs },
      );
      this.log.info({ connId, ifname: e.ifname, endpoint: peer.endpoint }, 'wireguard end rekeyed');
    });
  }

  async get(connIdOrIfname: string): Promise<UapiDevice> {
    const e = this.lookup(connIdOrIfname);
    if (!e) throw new DataplaneError(`no WireGuard end for ${connIdOrIfname}`, 'ENOENT');
    return uapiGet(e.ifname);
  }

  onExit(cb: WireguardExitListener): () => void {
    this.exitListeners.add(cb);
    return () => this.exitListeners.delete(cb);
  }

  cleanupStale(): Promise<CleanupReport> {
    return cleanupStale({ prefix: this.prefix, logger: this.log, stopTimeoutMs: this.stopTimeoutMs });
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      const results = await Promise.allSettled([...this.byConn.keys()].map((id) => this.delete(id)));
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed.length) throw new DataplaneError(`closing the WireGuard backend: ${failed.map((f) => (f.reason as Error).message).join('; ')}`, 'EBUSY');
    })();
    return this.closing;
  }
}

export function createWireguardBackend(opts: WireguardBackendOptions = {}): WireguardBackend {
  return new Backend(opts);
}
