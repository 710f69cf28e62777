/**
 * The seed example's endpoints as real processes (from dist/), each inside its own test namespace with its
 * own SPIFFE identity, stopped in afterAll whatever happened.
 */
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll } from 'vitest';
import { ApiClient } from '../../src/api/grpc.js';
import { ids, testTransport, workloadSocket } from '../helpers/identity.js';
import type { Netns } from '../helpers/netns.js';
import { waitFor } from '../helpers/wait.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
export const CHAIN_BIN = {
  firewall: path.join(ROOT, 'dist/examples/firewall/main.js'),
  vpnGateway: path.join(ROOT, 'dist/examples/vpn-gateway/main.js'),
};

const running = new Set<ResultPromise>();
afterAll(async () => {
  for (const p of running) p.kill('SIGKILL');
  await Promise.allSettled([...running]);
});

export interface EndpointProcess {
  name: string;
  proc: ResultPromise;
  /** The last of its stderr (pino JSON lines), for failure messages. */
  tail(): string;
  /** SIGTERM (a graceful stop) and wait for the exit; resolves with the exit code. */
  stop(): Promise<number | undefined>;
}

/** Starts `bin` in `ns` as endpoint `name` and waits until nsmd's registry lists it. */
export async function startEndpointProcess(ns: Netns, bin: string, o: { name: string; connectTo: string; env: Record<string, string> }): Promise<EndpointProcess> {
  let output = '';
  const proc = execa('ip', ['netns', 'exec', ns.name, 'node', bin], {
    env: {
      SPIFFE_ENDPOINT_SOCKET: await workloadSocket(ids.pod(o.name)),
      NSM_NAME: o.name,
      NSM_CONNECT_TO: o.connectTo,
      NSM_LOG_LEVEL: 'WARN',
      ...o.env,
    },
    reject: false,
  });
  running.add(proc);
  void proc.finally(() => running.delete(proc));
  proc.stderr?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-6000)));
  const reg = new ApiClient('registry.NetworkServiceEndpointRegistry', o.connectTo, await testTransport(ids.admin));
  try {
    await waitFor(`endpoint ${o.name} to register`, async () => {
      if (proc.exitCode !== null) throw new Error(`${o.name} exited: ${output}`);
      return (await reg.collect('Find', { network_service_endpoint: { name: o.name } }, { timeoutMs: 1000 })).length > 0;
    }, 20_000);
  } finally {
    reg.close();
  }
  return {
    name: o.name,
    proc,
    tail: () => output,
    async stop() {
      proc.kill('SIGTERM');
      return (await proc).exitCode;
    },
  };
}
