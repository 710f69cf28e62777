/**
 * The Debian CNI `ptp` plugin run by hand, ADD then DEL per cycle, as a container runtime would run it:
 * a fresh plugin process per operation, network configuration on stdin, the result on stdout.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';

export const PTP = '/usr/lib/cni/ptp';

export interface PtpCyclesSpec {
  /** Run before the plugin, e.g. `ip netns exec NODE`; empty when already inside the node namespace. */
  prefix: string[];
  config: string;
  podNetnsPath: string;
  containerIdPrefix: string;
  warmup: number;
  cycles: number;
  /** Per operation; a plugin that hangs must not hang the bench. */
  timeoutMs: number;
}

export interface PtpCyclesResult {
  addMs: number[];
  delMs: number[];
  failures: string[];
}

interface OpResult {
  ms: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

function runOnce(spec: PtpCyclesSpec, command: 'ADD' | 'DEL', containerId: string): Promise<OpResult> {
  const [cmd, ...args] = [...spec.prefix, PTP];
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(cmd!, args, {
      env: {
        PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
        CNI_COMMAND: command,
        CNI_CONTAINERID: containerId,
        CNI_NETNS: spec.podNetnsPath,
        CNI_IFNAME: 'eth0',
        CNI_PATH: '/usr/lib/cni',
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), spec.timeoutMs);
    p.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    p.once('close', (code) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      resolve({ ms, code, stdout, stderr });
    });
    p.stdin.end(spec.config);
  });
}

/** CNI reports errors as JSON on stdout ({code, msg, details}); fall back to whatever was printed. */
function failureText(r: OpResult): string {
  try {
    const e = JSON.parse(r.stdout) as { msg?: string; details?: string };
    if (e.msg) return `${e.msg}${e.details ? `: ${e.details}` : ''}`;
  } catch {
    // not JSON
  }
  return (r.stderr || r.stdout).trim() || `exit code ${r.code}`;
}

function addressOf(result: string): string | undefined {
  try {
    return (JSON.parse(result) as { ips?: { address?: string }[] }).ips?.[0]?.address;
  } catch {
    return undefined;
  }
}

export async function runPtpCycles(spec: PtpCyclesSpec): Promise<PtpCyclesResult> {
  const out: PtpCyclesResult = { addMs: [], delMs: [], failures: [] };
  for (let i = 0; i < spec.warmup + spec.cycles; i++) {
    const timed = i >= spec.warmup;
    const id = `${spec.containerIdPrefix}${i}`;
    const add = await runOnce(spec, 'ADD', id);
    if (add.code !== 0) {
      out.failures.push(`ADD ${id}: ${failureText(add)}`);
    } else if (!addressOf(add.stdout)) {
      out.failures.push(`ADD ${id}: result has no address: ${add.stdout.slice(0, 200)}`);
    } else if (timed) {
      out.addMs.push(add.ms);
    }
    // DEL even after a failed ADD: the plugin may have done half the work, and DEL is idempotent.
    const del = await runOnce(spec, 'DEL', id);
    if (del.code !== 0) out.failures.push(`DEL ${id}: ${failureText(del)}`);
    else if (timed) out.delMs.push(del.ms);
  }
  return out;
}
