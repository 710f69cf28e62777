/**
 * What /proc tells about processes and their sockets, for supervising wireguard-go and for finding the
 * ones a previous nsmd left behind. /proc/<pid>/net/* shows the network namespace of that process, so the
 * UDP socket of a wireguard-go in a node namespace can be checked without entering the namespace.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { readFile, readdir, readlink } from 'node:fs/promises';

/** Names the nsmd (pid and start time) that spawned a wireguard-go; pids are reused, pid + start time are not. */
export const OWNER_ENV = 'NSMESH_WG_OWNER';

interface Stat {
  state: string;
  startTime: string;
}

function parseStat(text: string): Stat | undefined {
  // The command name (field 2) may contain spaces and parentheses; everything after its last ')' is fixed.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  const startTime = rest[19]; // field 22 overall
  return state && startTime ? { state, startTime } : undefined;
}

function statOf(pid: number | 'self'): Stat | undefined {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Start time in clock ticks since boot, as a decimal string; undefined if no such process. */
export function startTimeOf(pid: number | 'self'): string | undefined {
  return statOf(pid)?.startTime;
}

/** True while the process exists, has not exited (zombies count as gone) and, if given, started at `startTime`. */
export function isRunning(pid: number, startTime?: string): boolean {
  const st = statOf(pid);
  if (!st || st.state === 'Z' || st.state === 'X') return false;
  return startTime === undefined || st.startTime === startTime;
}

/** `<pid>:<start time>` of this process, the value of OWNER_ENV in the children it spawns. */
export function selfOwnerMark(): string {
  return `${process.pid}:${startTimeOf('self') ?? '0'}`;
}

/** Whether the nsmd named by an OWNER_ENV value still runs. */
export function ownerAlive(mark: string): boolean {
  const m = /^(\d+):(\d+)$/.exec(mark);
  if (!m) return false;
  return isRunning(Number(m[1]), m[2]);
}

export function listPids(): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number);
}

export function cmdlineOf(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`);
    if (raw.length === 0) return undefined; // kernel thread or zombie
    return raw.toString('utf8').replace(/\0$/, '').split('\0');
  } catch {
    return undefined;
  }
}

export function envOf(pid: number, name: string): string | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/environ`, 'utf8');
    for (const kv of raw.split('\0')) {
      if (kv.startsWith(`${name}=`)) return kv.slice(name.length + 1);
    }
    return undefined;
  } catch {
    return undefined;
  }
}

/** Identity (`dev/ino` as `ls -L` shows it) of the network namespace a process is in. */
export function netnsOfPid(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

async function socketInodes(pid: number): Promise<Set<string>> {
  const out = new Set<string>();
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  await Promise.all(
    fds.map(async (fd) => {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m) out.add(m[1] as string);
    }),
  );
  return out;
}

/**
 * UDP ports (v4 and v6) on which `pid` itself holds a socket, in whatever namespace the process lives.
 * Sockets of other processes in that namespace on the same port do not count.
 */
export async function udpPortsOf(pid: number): Promise<Set<number>> {
  const [inodes, v4, v6] = await Promise.all([
    socketInodes(pid),
    readFile(`/proc/${pid}/net/udp`, 'utf8').catch(() => ''),
    readFile(`/proc/${pid}/net/udp6`, 'utf8').catch(() => ''),
  ]);
  const ports = new Set<number>();
  for (const line of `${v4}\n${v6}`.split('\n')) {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …
    const f = line.trim().split(/\s+/);
    const local = f[1];
    const inode = f[9];
    if (!local || !inode || !inodes.has(inode)) continue;
    const port = parseInt(local.slice(local.lastIndexOf(':') + 1), 16);
    if (Number.isInteger(port)) ports.add(port);
  }
  return ports;
}
