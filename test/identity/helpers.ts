import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';
import { buildCertificate, generateKeyPair, KeyUsageFlags } from '../../src/identity/cert-build.js';
import { Svid, StaticX509Source } from '../../src/identity/source.js';
import { issueSvid, type Ca } from '../../src/identity/x509.js';

/** A fresh directory for sockets and state; short, because unix socket paths are limited to 107 bytes. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsmid-'));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

export { waitFor } from '../helpers/wait.js';

export function svidFrom(ca: Ca, spiffeId: string, ttlMs = 3600_000, now?: number): Svid {
  const s = issueSvid(ca, spiffeId, ttlMs, { now });
  return Svid.fromDer(spiffeId, s.chainDer, s.keyPkcs8Der);
}

export function sourceFor(ca: Ca, spiffeId: string, bundles: Ca[] = [ca]): StaticX509Source {
  return new StaticX509Source(svidFrom(ca, spiffeId), new Map(bundles.map((b) => [b.trustDomain, [b.cert]])));
}

/** A leaf that names itself as issuer: trusted by nobody. */
export function selfSignedLeaf(spiffeId: string): { der: Buffer; svid: Svid } {
  const { privateKey, publicKey } = generateKeyPair();
  const der = buildCertificate({
    subject: { organization: 'SPIFFE', commonName: 'self' },
    subjectPublicKey: publicKey,
    signingKey: privateKey,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3600_000),
    isCa: false,
    keyUsage: KeyUsageFlags.digitalSignature,
    uriSans: [spiffeId],
  });
  return { der, svid: new Svid(spiffeId, [new X509Certificate(der)], privateKey) };
}

/** A leaf for `spiffeId` signed by `signer` whatever trust domain the ID names (a forgery when they differ). */
export function leafSignedBy(
  signer: Ca,
  spiffeId: string,
  extra: { isCa?: boolean; keyUsage?: number; uriSans?: string[]; notBefore?: number; notAfter?: number } = {},
): { der: Buffer; svid: () => Svid } {
  const { privateKey, publicKey } = generateKeyPair();
  const der = buildCertificate({
    subject: { organization: 'SPIFFE' },
    issuer: signer.cert,
    subjectPublicKey: publicKey,
    signingKey: signer.privateKey,
    notBefore: new Date(extra.notBefore ?? Date.now() - 60_000),
    notAfter: new Date(extra.notAfter ?? Date.now() + 3600_000),
    isCa: extra.isCa ?? false,
    keyUsage: extra.keyUsage ?? KeyUsageFlags.digitalSignature,
    uriSans: extra.uriSans ?? [spiffeId],
  });
  return { der, svid: () => new Svid(spiffeId, [new X509Certificate(der)], privateKey) };
}

// A tiny test service with JSON messages, so the TLS tests depend on nothing but grpc-js and the code under test.
const json = {
  serialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()) as unknown,
};
export const probeService: grpc.ServiceDefinition = {
  Whoami: {
    path: '/test.Probe/Whoami',
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
  Ticks: {
    path: '/test.Probe/Ticks',
    requestStream: false,
    responseStream: true,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
};
export const ProbeClient = grpc.makeGenericClientConstructor(probeService, 'Probe');
export type ProbeClient = InstanceType<typeof ProbeClient>;

export function whoami(client: grpc.Client, timeoutMs = 5000): Promise<{ spiffeId?: string; serial?: string }> {
  return new Promise((resolve, reject) =>
    (client as unknown as Record<string, (...a: unknown[]) => void>).Whoami!(
      {},
      new grpc.Metadata(),
      { deadline: Date.now() + timeoutMs },
      (err: grpc.ServiceError | null, res: { spiffeId?: string; serial?: string }) => (err ? reject(err) : resolve(res)),
    ),
  );
}

/** A logger whose records the test can read (and check that no key material is ever logged). */
export function captureLog(): { log: Logger; records: () => Array<Record<string, unknown>>; text: () => string } {
  const lines: string[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
  return { log, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>), text: () => lines.join('') };
}
