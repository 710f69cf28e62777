/**
 * A CA and server certificates as a cluster would give the webhook (cert-manager or a setup job): the server
 * certificate names the webhook Service's DNS name in its subjectAltName, which is what the API server checks.
 * The CA is built with src/identity/cert-build.ts; the server leaf needs DNS and IP SANs, which that builder (made
 * for SPIFFE URI SANs) does not write, so it is assembled here from the same ASN.1 library.
 */
import crypto, { X509Certificate, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AlgorithmIdentifier,
  AttributeTypeAndValue,
  AttributeValue,
  AuthorityKeyIdentifier,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  Extension,
  Extensions,
  GeneralName,
  KeyIdentifier,
  KeyUsage,
  KeyUsageFlags,
  Name,
  RelativeDistinguishedName,
  SubjectAlternativeName,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
} from '@peculiar/asn1-x509';
import { buildCertificate, generateKeyPair, keyIdentifier, randomSerial } from '../../../src/identity/cert-build.js';
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

const ext = (extnID: string, critical: boolean, value: unknown) =>
  new Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
const ab = (b: Buffer) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;

/** A TLS server certificate for `names` (DNS names and IP addresses), signed by `ca`. */
export function issueServerPair(ca: TestCa, names: string[], validMs = 3600_000): ServerPair {
  const { privateKey, publicKey } = generateKeyPair();
  const sigAlg = new AlgorithmIdentifier({ algorithm: '1.2.840.10045.4.3.2' });
  const sans = names.map((n) => (isIP(n) ? new GeneralName({ iPAddress: n }) : new GeneralName({ dNSName: n })));
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: ab(randomSerial()),
    signature: sigAlg,
    issuer: AsnConvert.parse(ca.cert.raw, Certificate).tbsCertificate.subject,
    validity: new Validity({ notBefore: new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000), notAfter: new Date(Math.floor((Date.now() + validMs) / 1000) * 1000) }),
    subject: new Name([new RelativeDistinguishedName([new AttributeTypeAndValue({ type: '2.5.4.3', value: new AttributeValue({ utf8String: names[0]! }) })])]),
    subjectPublicKeyInfo: AsnConvert.parse(publicKey.export({ type: 'spki', format: 'der' }), SubjectPublicKeyInfo),
    extensions: new Extensions([
      ext(id_ce_basicConstraints, true, new BasicConstraints({})),
      ext(id_ce_keyUsage, true, new KeyUsage(KeyUsageFlags.digitalSignature)),
      ext(id_ce_extKeyUsage, false, new ExtendedKeyUsage(['1.3.6.1.5.5.7.3.1'])),
      ext(id_ce_authorityKeyIdentifier, false, new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(keyIdentifier(ca.cert.publicKey)) })),
      ext(id_ce_subjectAltName, false, new SubjectAlternativeName(sans)),
    ]),
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const signature = crypto.sign('sha256', tbsDer, { key: ca.key, dsaEncoding: 'der' });
  const der = Buffer.from(AsnConvert.serialize(new Certificate({ tbsCertificate: tbs, signatureAlgorithm: sigAlg, signatureValue: ab(signature) })));
  const cert = new X509Certificate(der);
  if (!cert.verify(ca.cert.publicKey)) throw new Error('test certificate does not verify against its CA');
  return { certPem: toPem([der]), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), fingerprint256: cert.fingerprint256 };
}
