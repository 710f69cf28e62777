/**
 * A CA and server certificates as a cluster would give the webhook (cert-manager or a setup job): the server
 * certificate names the webhook Service's DNS name in its subjectAltName, which is what the API server checks.
 * Both are built with src/identity/cert-build.ts.
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { buildCertificate, ExtKeyUsage, generateKeyPair, KeyUsageFlags } from '../../../src/identity/cert-build.js';
import { toPem } from '../../../src/identity/der.js';

export interface TestCa {
  cert: X509Certificate;
  certPem: string;
  key: KeyObject;
}

export interface ServerPair {
  certPem: string;
  keyPem: string;
  fingerprint256: string;
}

export function createTestCa(name = 'nsm-webhook test CA'): TestCa {
  const { privateKey, publicKey } = generateKeyPair();
  const der = buildCertificate({
    subject: { organization: 'nsmesh tests', commonName: name },
    subjectPublicKey: publicKey,
    signingKey: privateKey,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 24 * 3600_000),
    isCa: true,
    pathLen: 0,
    keyUsage: KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign,
  });
  return { cert: new X509Certificate(der), certPem: toPem([der]), key: privateKey };
}

/** A TLS server certificate for `names` (DNS names and IP addresses), signed by `ca`. */
export function issueServerPair(ca: TestCa, names: string[], validMs = 3600_000): ServerPair {
  const { privateKey, publicKey } = generateKeyPair();
  const der = buildCertificate({
    subject: { commonName: names[0]! },
    issuer: ca.cert,
    subjectPublicKey: publicKey,
    signingKey: ca.key,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + validMs),
    isCa: false,
    keyUsage: KeyUsageFlags.digitalSignature,
    extKeyUsage: [ExtKeyUsage.serverAuth],
    dnsSans: names.filter((n) => !isIP(n)),
    ipSans: names.filter((n) => isIP(n)),
  });
  const cert = new X509Certificate(der);
  if (!cert.verify(ca.cert.publicKey)) throw new Error('test certificate does not verify against its CA');
  return { certPem: toPem([der]), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), fingerprint256: cert.fingerprint256 };
}
