/**
 * A container runtime's side of CNI, as libcni does it, for tests: each plugin of a conflist is found by its
 * `type` in CNI_PATH and run as a process with the CNI_* environment and its configuration on stdin (the
 * list's name and cniVersion injected, the previous plugin's result as prevResult, runtimeConfig holding the
 * capability arguments the plugin declares); ADD runs the plugins in order, DEL in reverse, CHECK and DEL
 * get the cached ADD result. Plugins run inside a "node" namespace, so the host end of ptp's veth lands
 * there and not in the machine's own namespace.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';

export interface PluginConf {
  type: string;
  capabilities?: Record<string, boolean>;
  [field: string]: unknown;
}

export interface Conflist {
  cniVersion: string;
  name: string;
  plugins: PluginConf[];
}

export interface Attachment {
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS entries. */
  args?: Record<string, string>;
  /** Capability arguments, handed to plugins that declare the capability. */
  capabilityArgs?: Record<string, unknown>;
}

export interface PluginRun {
  plugin: string;
  exitCode: number;
  stdout: string;
  stderr: string;
  /** stdout parsed, when it is JSON. */
  json: Record<string, unknown> | undefined;
  ms: number;
}

export class CniCallError extends Error {
  constructor(readonly run: PluginRun) {
    super(`${run.plugin} exited ${run.exitCode}: ${run.stdout.trim() || run.stderr.trim()}`);
  }
}

const ROOT = path.resolve(import.meta.dirname, '../..');
export const NSM_CNI_JS = path.join(ROOT, 'dist/cni/src/nsm-cni.js');

/**
 * A CNI_PATH directory holding the Debian plugins and nsm-cni as a runtime would find them: nsm-cni as the
 * executable an npm install links (here a two-line launcher of the built script).
 */
export function makeBinDir(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const p of ['ptp', 'host-local', 'loopback']) fs.symlinkSync(`/usr/lib/cni/${p}`, path.join(dir, p));
  fs.writeFileSync(path.join(dir, 'nsm-cni'), `#!/bin/sh\nexec ${process.execPath} ${NSM_CNI_JS} "$@"\n`, { mode: 0o755 });
  return dir;
}

export class CniRuntime {
  /** Without nodeNetns the plugins run in the test's own namespace (for runs that plumb nothing). */
  constructor(private readonly o: { binDir: string; nodeNetns?: string }) {}

  /** Runs one plugin binary once, exactly as the runtime would, and returns what it printed. */
  async exec(type: string, command: string, a: Partial<Attachment>, stdin: string): Promise<PluginRun> {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_COMMAND: command,
      CNI_PATH: this.o.binDir,
    };
    if (a.containerId !== undefined) env.CNI_CONTAINERID = a.containerId;
    if (a.netns !== undefined) env.CNI_NETNS = a.netns;
    if (a.ifname !== undefined) env.CNI_IFNAME = a.ifname;
    if (a.args) env.CNI_ARGS = Object.entries(a.args).map(([k, v]) => `${k}=${v}`).join(';');
    const t0 = performance.now();
    const bin = path.join(this.o.binDir, type);
    const [file, ...argv] = this.o.nodeNetns ? ['ip', 'netns', 'exec', this.o.nodeNetns, bin] : [bin];
    const r = await execa(file!, argv, {
      env,
      extendEnv: false,
      input: stdin,
      reject: false,
      timeout: 30_000,
    });
    const stdout = String(r.stdout);
    let json: Record<string, unknown> | undefined;
    try {
      json = stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : undefined;
    } catch {
      json = undefined;
    }
    return { plugin: type, exitCode: r.exitCode ?? -1, stdout, stderr: String(r.stderr), json, ms: performance.now() - t0 };
  }

  /** The configuration one plugin of the list gets on stdin. */
  pluginConf(list: Conflist, plugin: PluginConf, a: Attachment, prevResult: unknown): Record<string, unknown> {
    const { capabilities, ...conf } = plugin;
    const runtimeConfig: Record<string, unknown> = {};
    for (const [cap, on] of Object.entries(capabilities ?? {})) {
      if (on && a.capabilityArgs && cap in a.capabilityArgs) runtimeConfig[cap] = a.capabilityArgs[cap];
    }
    return {
      ...conf,
      ...(capabilities ? { capabilities } : {}),
      name: list.name,
      cniVersion: list.cniVersion,
      ...(Object.keys(runtimeConfig).length ? { runtimeConfig } : {}),
      ...(prevResult !== undefined ? { prevResult } : {}),
    };
  }

  async add(list: Conflist, a: Attachment): Promise<{ result: Record<string, unknown>; runs: PluginRun[] }> {
    let prev: Record<string, unknown> | undefined;
    const runs: PluginRun[] = [];
    for (const p of list.plugins) {
      const run = await this.exec(p.type, 'ADD', a, JSON.stringify(this.pluginConf(list, p, a, prev)));
      runs.push(run);
      if (run.exitCode !== 0 || !run.json) throw new CniCallError(run);
      prev = run.json;
    }
    return { result: prev!, runs };
  }

  async check(list: Conflist, a: Attachment, cached: Record<string, unknown>): Promise<PluginRun[]> {
    const runs: PluginRun[] = [];
    for (const p of list.plugins) {
      const run = await this.exec(p.type, 'CHECK', a, JSON.stringify(this.pluginConf(list, p, a, cached)));
      runs.push(run);
      if (run.exitCode !== 0) throw new CniCallError(run);
    }
    return runs;
  }

  /** Reverse order, stopping at the first failure, as libcni deletes; returns every run made. */
  async del(list: Conflist, a: Attachment, cached: Record<string, unknown> | undefined): Promise<PluginRun[]> {
    const runs: PluginRun[] = [];
    for (const p of [...list.plugins].reverse()) {
      const run = await this.exec(p.type, 'DEL', a, JSON.stringify(this.pluginConf(list, p, a, cached)));
      runs.push(run);
      if (run.exitCode !== 0) break;
    }
    return runs;
  }
}
