/**
 * Start-up cleanup: wireguard-go instances and UAPI sockets a previous nsmd left behind.
 *
 * Normally nothing is left: the backend starts wireguard-go with a parent-death signal (SIGKILL), so a
 * crashed nsmd takes its instances, and with them their TUN devices, down at once. What remains then is
 * only their socket files (wireguard-go removes its socket on SIGTERM, not on SIGKILL). An instance can
 * outlive its nsmd when something strips the parent-death signal, or when nsmd ran the backend inside a
 * worker thread that ended (the signal follows the spawning thread, not the process).
 *
 * Recognising ours. A wireguard-go process is ours when its interface name has our prefix AND its
 * environment carries OWNER_ENV (`<pid>:<start time>` of the nsmd that spawned it). It is stale when that
 * nsmd no longer runs. Instances of a live nsmd are spared: several nsmds (one per simulated node) may share
 * one machine and its /var/run/wireguard, and each must only reap its own dead predecessors' leftovers.
 *
 * Sockets are judged by connecting: one nobody accepts on (ECONNREFUSED) is stale and removed; a served one
 * belongs to a live instance and stays.
 *
 * Adoption (taking over a live instance instead of killing it) is deliberately not offered: a process that
 * is not our child cannot be waited for, so its death could not be reported through onExit, and its private
 * key is not recoverable without reading it back over the UAPI. nsmd re-creates the connection instead.
 */
import { readdirSync, rmSync } from 'node:fs';
import type { Logger } from 'pino';
import { silentLogger } from '../../util/log.js';
import { waitFor } from '../../util/wait-for.js';
import { cmdlineOf, envOf, isRunning, listPids, OWNER_ENV, ownerAlive, selfOwnerMark, startTimeOf } from './proc.js';
import type { CleanupReport } from './types.js';
import { probeSocket, UAPI_DIR, uapiSocketPath } from './uapi.js';

export interface CleanupOptions {
  /** Interface-name prefix of the instances to consider (the backend's namePrefix). */
  prefix: string;
  logger?: Logger;
  /** SIGTERM, then SIGKILL after this long. */
  stopTimeoutMs?: number;
}

/** The interface name a wireguard-go command line runs, if it is a foreground instance. */
function ifnameOfCmdline(argv: string[]): string | undefined {
  const [bin, ...args] = argv;
  if (!bin || !/(^|\/)wireguard-go$/.test(bin)) return undefined;
  const name = args[args.length - 1];
  return args.includes('-f') || args.includes('--foreground') ? name : undefined;
}

async function terminate(pid: number, startTime: string, stopTimeoutMs: number): Promise<boolean> {
  const gone = (): boolean => !isRunning(pid, startTime);
  const signal = (sig: NodeJS.Signals): void => {
    try {
      process.kill(pid, sig);
    } catch {
      // Already gone.
    }
  };
  signal('SIGTERM');
  try {
    await waitFor(`wireguard-go ${pid} to exit after SIGTERM`, gone, stopTimeoutMs, 5);
    return true;
  } catch {
    signal('SIGKILL');
  }
  try {
    await waitFor(`wireguard-go ${pid} to exit after SIGKILL`, gone, stopTimeoutMs, 5);
    return true;
  } catch {
    return false;
  }
}

export async function cleanupStale(opts: CleanupOptions): Promise<CleanupReport> {
  const log = opts.logger ?? silentLogger;
  const stopTimeoutMs = opts.stopTimeoutMs ?? 2000;
  const self = selfOwnerMark();
  const report: CleanupReport = { killed: [], spared: [], removedSockets: [] };

  for (const pid of listPids()) {
    const argv = cmdlineOf(pid);
    const ifname = argv && ifnameOfCmdline(argv);
    if (!ifname || !ifname.startsWith(opts.prefix)) continue;
    const owner = envOf(pid, OWNER_ENV);
    // No mark: started by hand or by something else that happens to share the prefix. Not ours to kill.
    if (owner === undefined) continue;
    if (owner === self) continue; // supervised by this very process
    if (ownerAlive(owner)) {
      report.spared.push({ pid, ifname });
      continue;
    }
    const startTime = startTimeOf(pid);
    // Re-check right before signalling: the pid may have been reused since the scan.
    if (startTime === undefined || cmdlineOf(pid)?.join('\0') !== argv?.join('\0')) continue;
    const ok = await terminate(pid, startTime, stopTimeoutMs);
    if (ok) {
      report.killed.push({ pid, ifname });
      log.warn({ pid, ifname, owner }, 'killed wireguard-go left by a previous nsmd');
    } else {
      log.error({ pid, ifname }, 'wireguard-go left by a previous nsmd does not die');
    }
  }

  let files: string[];
  try {
    files = readdirSync(UAPI_DIR);
  } catch {
    files = [];
  }
  for (const f of files) {
    if (!f.startsWith(opts.prefix) || !f.endsWith('.sock')) continue;
    const ifname = f.slice(0, -'.sock'.length);
    if ((await probeSocket(ifname)) !== 'stale') continue;
    rmSync(uapiSocketPath(ifname), { force: true });
    report.removedSockets.push(ifname);
  }
  if (report.removedSockets.length) log.info({ sockets: report.removedSockets }, 'removed stale WireGuard UAPI sockets');
  return report;
}
