/** iperf3 between two namespaces: a server left listening for the whole phase, a client run per measurement. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Child } from './child.js';
import type { Cleanups } from './cleanup.js';
import type { BenchNamespaces, Netns } from './netns.js';
import { runTracked } from './underlay.js';
import { FatalError, waitFor } from './wait.js';

const run = promisify(execFile);

/** `iperf3 -s` bound to `bindIp` in `ns`; resolves once its socket listens (iperf3 prints no readiness we can read unbuffered). */
export async function startIperfServer(nss: BenchNamespaces, cleanups: Cleanups, ns: Netns, bindIp: string, port: number): Promise<Child> {
  const child = new Child(`iperf3 server in ${ns.name}`, 'ip', ['netns', 'exec', ns.name, 'iperf3', '-s', '-B', bindIp, '-p', String(port)], {});
  nss.adopt(child.proc.pid);
  cleanups.push(() => child.stop());
  await waitFor(`iperf3 to listen on ${bindIp}:${port} in ${ns.name}`, async () => {
    if (!child.running) throw new FatalError(`iperf3 server in ${ns.name} exited:\n${child.tail()}`);
    const { stdout } = await run('ss', ['-N', ns.name, '-H', '-l', '-t', '-n']);
    return stdout.split('\n').some((l) => l.includes(`${bindIp}:${port} `));
  }, 10_000, 50);
  return child;
}

export interface IperfResult {
  /** What the receiver got, the figure that counts for a TCP stream. */
  gbps: number;
  retransmits: number;
}

interface IperfJson {
  error?: string;
  end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } };
}

export interface IperfClientOptions {
  /** Seconds at the start left out of the figure (iperf3 -O): TCP's slow start is not what is compared. */
  omit?: number;
  /**
   * CPUs for the client and the server for this one test (iperf3 -A client,server). Over veths a stream's
   * receive path runs in softirq on the sending CPU, so placement alone moves one stream's throughput by up
   * to 2x on a 2-vCPU host (hand-built VXLAN here: 18–28 Gbit/s with both on CPU 0, 11–25 split 0/1,
   * 12–15 split 1/0); left to the scheduler, it differs from run to run.
   */
  cpus?: [number, number];
}

/** One TCP stream for `seconds` (after `omit`) from `ns` (source `bindIp`) to `serverIp`. */
export async function runIperfClient(
  cleanups: Cleanups,
  ns: Netns,
  serverIp: string,
  bindIp: string,
  port: number,
  seconds: number,
  o: IperfClientOptions = {},
): Promise<IperfResult> {
  const cmd = ['iperf3', '-c', serverIp, '-B', bindIp, '-p', String(port), '-t', String(seconds), '-P', '1', '-J'];
  if (o.omit) cmd.push('-O', String(o.omit));
  if (o.cpus) cmd.push('-A', o.cpus.join(','));
  const r = await runTracked(cleanups, ns, cmd, (seconds + (o.omit ?? 0) + 30) * 1000);
  let out: IperfJson;
  try {
    out = JSON.parse(r.stdout) as IperfJson;
  } catch {
    throw new Error(`iperf3 -c ${serverIp} in ${ns.name} printed no JSON (exit ${r.code}): ${r.stderr.trim() || r.stdout.slice(0, 300)}`);
  }
  const bps = out.end?.sum_received?.bits_per_second;
  if (r.code !== 0 || out.error || !bps) throw new Error(`iperf3 -c ${serverIp} in ${ns.name} failed (exit ${r.code}): ${out.error ?? r.stderr.trim()}`);
  return { gbps: bps / 1e9, retransmits: out.end?.sum_sent?.retransmits ?? 0 };
}
