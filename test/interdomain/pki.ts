/**
 * Certificates for interdomain tests that are not SVIDs: a private web-PKI CA and server certificates for
 * federation bundle endpoints (https_web profile), written as PEM files where processes need them.
 */
import { X509Certificate } from 'node:crypto';
import { buildCertificate, ExtKeyUsage, generateKeyPair, KeyUsageFlags } from '../../src/identity/cert-build.js';

export interface WebCa {
  cert: X509Certificate;
  certPem: string;
  issue(ip: string): { certPem: string; keyPem: string };
}

export function createWebCa(name = 'nsmesh test web CA'): WebCa {
  const { privateKey, publicKey } = generateKeyPair();
  const now = Date.now();
  const der = buildCertificate({
    subject: { organization: 'nsmesh tests', commonName: name },
    subjectPublicKey: publicKey,
    signingKey: privateKey,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * 3600_000),
    isCa: true,
    keyUsage: KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign,
  });
  const cert = new X509Certificate(der);
  return {
    cert,
    certPem: cert.toString(),
    issue(ip: string) {
      const leaf = generateKeyPair();
      const leafDer = buildCertificate({
        subject: { organization: 'nsmesh tests', commonName: ip },
        issuer: cert,
        subjectPublicKey: leaf.publicKey,
        signingKey: privateKey,
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 24 * 3600_000),
        isCa: false,
        keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment,
        extKeyUsage: [ExtKeyUsage.serverAuth],
        ipSans: [ip],
      });
      return { certPem: new X509Certificate(leafDer).toString(), keyPem: leaf.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
    },
  };
}
