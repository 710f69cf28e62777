import { performance } from 'node:perf_hooks';
import { status, type ServiceError } from '@grpc/grpc-js';
import type { ApiClient } from '../../src/api/grpc.js';
import type { Connection, DeepPartial, NetworkServiceRequest } from '../../src/api/types.js';
import { inodeUrlOf } from '../../src/dataplane/netns.js';
import { signOwnSegment } from '../../src/identity/outgoing.js';
import type { Transport } from '../../src/identity/transport.js';

/** What the benches' client needs: a channel to its nsmd, its identity (none for the insecure mesh), its pod. */
export interface BenchClient {
  client: ApiClient<'networkservice.NetworkService'>;
  transport: Transport | undefined;
  cli: { path: string };
  service: string;
  /** Sent with every Request (e.g. `encryption: required`); none when absent. */
  labels?: Record<string, string>;
}

export interface Timed {
  ms: number;
  conn?: Connection;
  error?: string;
}

export function errorText(e: unknown): string {
  const se = e as Partial<ServiceError>;
  if (typeof se.code === 'number') return `${status[se.code] ?? se.code}: ${se.details ?? se.message}`;
  return (e as Error).message ?? String(e);
}

/** Identical messages counted, most frequent first, so a thousand failures read as a few lines. */
export function grouped(messages: string[]): string[] {
  const counts = new Map<string, number>();
  for (const m of messages) counts.set(m, (counts.get(m) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]).map(([m, n]) => `${n} x ${m}`);
}

export function kernelRequest(mesh: BenchClient, id: string, ifname: string): DeepPartial<NetworkServiceRequest> {
  return {
    connection: {
      id,
      network_service: mesh.service,
      labels: { ...mesh.labels },
      path: { index: 0, path_segments: [{ name: 'nsmb-client', id }] },
    },
    mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: ifname, inodeURL: inodeUrlOf(mesh.cli.path) } }],
  };
}

/** The Request round trip as the client sees it, signing its own path segment (as nsc does) included. */
export async function timedRequest(mesh: BenchClient, id: string, ifname: string, timeoutMs: number): Promise<Timed> {
  const t0 = performance.now();
  try {
    const req = kernelRequest(mesh, id, ifname);
    const metadata = mesh.transport ? await signOwnSegment(mesh.transport, mesh.client, req.connection!, 600_000, timeoutMs) : undefined;
    const conn = await mesh.client.unary('Request', req, { timeoutMs, ...(metadata ? { metadata } : {}) });
    return { ms: performance.now() - t0, conn };
  } catch (e) {
    return { ms: performance.now() - t0, error: errorText(e) };
  }
}

/** Interface names: 'n' + tag + phase letter + index, at most 10 characters (the kernel allows 15). */
export const names = (tag: string, phase: string, n: number) =>
  Array.from({ length: n }, (_, i) => ({ id: `${tag}-${phase}-${i}`, ifname: `n${tag}${phase}${i}` }));

/** Close as the client sees it. */
export async function timedClose(mesh: Pick<BenchClient, 'client'>, conn: Connection, timeoutMs: number): Promise<Timed> {
  const t0 = performance.now();
  try {
    await mesh.client.unary('Close', conn, { timeoutMs });
    return { ms: performance.now() - t0 };
  } catch (e) {
    return { ms: performance.now() - t0, error: errorText(e) };
  }
}
