/**
 * Identities for integration tests: one embedded SPIFFE issuer per test file, a Workload API socket per
 * process the test starts (attestation by socket), and in-process transports for the test's own gRPC calls.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';
import { EmbeddedIssuer, type EmbeddedIssuerOptions } from '../../src/identity/issuer.js';
import { loadOrCreateCa } from '../../src/identity/ca-store.js';
import type { Ca } from '../../src/identity/x509.js';
import { pino } from 'pino';
import { podId } from '../../src/identity/spiffe-id.js';
import { sourceTransport, type Transport } from '../../src/identity/transport.js';
import { tag } from './netns.js';

export const TRUST_DOMAIN = 'nsmesh.local';
export const ids = {
  nsmd: (name: string) => `spiffe://${TRUST_DOMAIN}/nsmesh/nsmd/${name}`,
  pod: (name: string) => podId(TRUST_DOMAIN, 'default', name),
  admin: `spiffe://${TRUST_DOMAIN}/nsmesh/admin/nsmctl`,
};

let issuer: Promise<EmbeddedIssuer> | undefined;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), `nsmid-${tag}-`));
const sockets = new Map<string, string>();

let issuerOptions: EmbeddedIssuerOptions = {};

/** Options for this file's issuer (e.g. a fast rotation); call before anything asks for an identity. */
export function configureIssuer(o: EmbeddedIssuerOptions): void {
  if (issuer) throw new Error('configureIssuer must run before the issuer starts');
  issuerOptions = o;
}

export function testIssuer(): Promise<EmbeddedIssuer> {
  issuer ??= EmbeddedIssuer.start({ ...issuerOptions, trustDomain: TRUST_DOMAIN, stateDir: path.join(dir, 'ca') });
  return issuer;
}

/** The issuer's CA, read back from its state directory, to forge near-valid certificates in refusal tests. */
export async function testCa(): Promise<Ca> {
  await testIssuer();
  return loadOrCreateCa({ stateDir: path.join(dir, 'ca'), trustDomain: TRUST_DOMAIN, minRemainingMs: 0, log: pino({ level: 'silent' }) }).ca;
}

/** SPIFFE_ENDPOINT_SOCKET for a process that should run as `spiffeId` (one socket per identity). */
export async function workloadSocket(spiffeId: string): Promise<string> {
  let url = sockets.get(spiffeId);
  if (!url) {
    const file = path.join(dir, `${createHash('sha256').update(spiffeId).digest('hex').slice(0, 12)}.sock`);
    url = await (await testIssuer()).addWorkload(spiffeId, file);
    sockets.set(spiffeId, url);
  }
  return url;
}

/** mTLS for the test process itself, as `spiffeId`. */
export async function testTransport(spiffeId: string): Promise<Transport> {
  return sourceTransport((await testIssuer()).x509Source(spiffeId));
}

afterAll(async () => {
  if (issuer) await (await issuer).close();
  fs.rmSync(dir, { recursive: true, force: true });
});
