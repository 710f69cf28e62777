/**
 * Real nsmesh processes for integration tests: nsmd, endpoints and clients run from the build (dist/) as
 * they would in production, each endpoint and client inside its own test namespace. Every process a test
 * starts is stopped in afterAll, failed tests or not.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll } from 'vitest';
import { ApiClient } from '../../src/api/grpc.js';
import { ids, testTransport, workloadSocket } from './identity.js';
import type { Netns } from './netns.js';
import { tag } from './netns.js';
import { waitFor } from './wait.js';

export { waitFor };

const ROOT = path.resolve(import.meta.dirname, '../..');
export const BIN = {
  nsmd: path.join(ROOT, 'dist/src/cli/nsmd.js'),
  nsc: path.join(ROOT, 'dist/src/cli/nsc.js'),
  nsmctl: path.join(ROOT, 'dist/src/cli/nsmctl.js'),
  icmpResponder: path.join(ROOT, 'dist/examples/icmp-responder/main.js'),
};

const running = new Set<ResultPromise>();
afterAll(async () => {
  for (const p of running) p.kill('SIGKILL');
  await Promise.allSettled([...running]);
});

function track(p: ResultPromise, label: string): ResultPromise {
  running.add(p);
  let output = '';
  p.stderr?.on('data', (d: Buffer) => {
    output = (output + d.toString()).slice(-4000);
  });
  void p.finally(() => running.delete(p));
  (p as unknown as { label: string; tail: () => string }).label = label;
  (p as unknown as { tail: () => string }).tail = () => output;
  return p;
}

export interface NsmdProc {
  url: string;
  dir: string;
  proc: ResultPromise;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Environment that gives a process `spiffeId` — or, with insecure, no identity at all. */
async function identityEnv(spiffeId: string, insecure = false): Promise<Record<string, string>> {
  return insecure ? { NSM_INSECURE: 'true' } : { SPIFFE_ENDPOINT_SOCKET: await workloadSocket(spiffeId) };
}

export async function startNsmd(opts: { name?: string; dir?: string; env?: Record<string, string>; insecure?: boolean } = {}): Promise<NsmdProc> {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), `nsmesh-${tag}-`));
  const url = `unix://${dir}/nsm.io.sock`;
  const name = opts.name ?? `nsmd-${tag}`;
  const proc = track(
    execa('node', [BIN.nsmd], {
      env: {
        ...(await identityEnv(ids.nsmd(name), opts.insecure)),
        NSM_NAME: name,
        NSM_LISTEN_ON: url,
        NSM_STATE_DIR: path.join(dir, 'state'),
        NODE_NAME: `node-${tag}`,
        NSM_LOG_LEVEL: 'WARN',
        ...opts.env,
      },
      reject: false,
    }),
    'nsmd',
  );
  const probe = new ApiClient('networkservice.NetworkService', url, await testTransport(ids.admin));
  try {
    await waitFor('nsmd to serve its socket', async () => {
      if (proc.exitCode !== null) throw new Error(`nsmd exited: ${(proc as unknown as { tail: () => string }).tail()}`);
      await probe.waitForReady(200);
      return true;
    });
  } finally {
    probe.close();
  }
  return {
    url,
    dir,
    proc,
    async stop(signal = 'SIGTERM') {
      proc.kill(signal);
      await proc;
    },
  };
}

export interface EndpointProc {
  name: string;
  proc: ResultPromise;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts nse-icmp-responder inside `ns` and waits until nsmd's registry lists it. */
export async function startIcmpResponder(
  ns: Netns,
  o: { name: string; connectTo: string; services: string[]; labels?: Record<string, string>; cidr?: string; env?: Record<string, string>; insecure?: boolean },
): Promise<EndpointProc> {
  const identity = await identityEnv(ids.pod(o.name), o.insecure);
  const proc = track(
    execa('ip', ['netns', 'exec', ns.name, 'node', BIN.icmpResponder], {
      env: {
        ...identity,
        NSM_NAME: o.name,
        NSM_CONNECT_TO: o.connectTo,
        NSM_SERVICE_NAMES: o.services.join(','),
        NSM_LABELS: Object.entries(o.labels ?? {}).map(([k, v]) => `${k}:${v}`).join(','),
        NSM_CIDR_PREFIX: o.cidr ?? '169.254.0.0/16',
        NSM_LOG_LEVEL: 'WARN',
        ...o.env,
      },
      reject: false,
    }),
    o.name,
  );
  const reg = new ApiClient('registry.NetworkServiceEndpointRegistry', o.connectTo, o.insecure ? undefined : await testTransport(ids.admin));
  try {
    await waitFor(`endpoint ${o.name} to register`, async () => {
      if (proc.exitCode !== null) throw new Error(`${o.name} exited: ${(proc as unknown as { tail: () => string }).tail()}`);
      const found = await reg.collect('Find', { network_service_endpoint: { name: o.name } }, { timeoutMs: 1000 });
      return found.length > 0;
    });
  } finally {
    reg.close();
  }
  return {
    name: o.name,
    proc,
    async stop(signal = 'SIGTERM') {
      proc.kill(signal);
      await proc;
    },
  };
}

/** Runs nsc once inside `ns` with JSON output. */
export async function runNsc(ns: Netns, o: { name: string; connectTo: string; services: string; env?: Record<string, string>; insecure?: boolean }) {
  const r = await execa('ip', ['netns', 'exec', ns.name, 'node', BIN.nsc, '--output', 'json'], {
    env: { ...(await identityEnv(ids.pod(o.name), o.insecure)), NSM_NAME: o.name, NSM_CONNECT_TO: o.connectTo, NSM_NETWORK_SERVICES: o.services, ...o.env },
    reject: false,
  });
  return { exitCode: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr), json: r.exitCode === 0 ? JSON.parse(String(r.stdout)) : undefined };
}

/** nsmctl as an admin identity (or with a given one, or none). */
export async function nsmctl(connectTo: string, args: string[], input?: string, as: { spiffeId?: string; insecure?: boolean } = {}) {
  const env = { ...(await identityEnv(as.spiffeId ?? ids.admin, as.insecure)), NSM_CONNECT_TO: connectTo };
  const r = await execa('node', [BIN.nsmctl, ...args], { env, reject: false, ...(input ? { input } : {}) });
  return { exitCode: r.exitCode, stdout: String(r.stdout), stderr: String(r.stderr) };
}
