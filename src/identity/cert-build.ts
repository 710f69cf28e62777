/**
 * Builds and signs X.509 v3 certificates: ASN.1 structures from @peculiar/asn1-x509, keys and
 * signatures from node:crypto (OpenSSL), so no private key ever passes through JavaScript crypto code.
 */
import crypto, { type KeyObject, type X509Certificate } from 'node:crypto';
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
  Name,
  RelativeDistinguishedName,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
  SubjectPublicKeyInfo,
  TBSCertificate,
  Validity,
  Version,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
} from '@peculiar/asn1-x509';

export { KeyUsageFlags } from '@peculiar/asn1-x509';

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  countryName: '2.5.4.6',
  organizationName: '2.5.4.10',
  commonName: '2.5.4.3',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

export const ExtKeyUsage = { serverAuth: OID.serverAuth, clientAuth: OID.clientAuth } as const;

export interface DistinguishedName {
  country?: string;
  organization?: string;
  commonName?: string;
}

export interface CertificateTemplate {
  subject: DistinguishedName;
  /** The issuing CA's certificate; omitted: self-signed (issuer = subject, signed by the subject's own key). */
  issuer?: X509Certificate;
  subjectPublicKey: KeyObject;
  /** The issuer's private key (or the subject's own, for a self-signed certificate); EC P-256. */
  signingKey: KeyObject;
  notBefore: Date;
  notAfter: Date;
  isCa: boolean;
  pathLen?: number;
  /** KeyUsageFlags bits. */
  keyUsage: number;
  extKeyUsage?: string[];
  uriSans?: string[];
  /** For web-PKI server certificates (a federation bundle endpoint), never in an SVID. */
  dnsSans?: string[];
  ipSans?: string[];
  /** Positive serial as big-endian bytes; random 127 bits when omitted. */
  serial?: Buffer;
}

function encodeName(dn: DistinguishedName): Name {
  const rdns: RelativeDistinguishedName[] = [];
  const add = (type: string, value: AttributeValue) =>
    rdns.push(new RelativeDistinguishedName([new AttributeTypeAndValue({ type, value })]));
  if (dn.country) add(OID.countryName, new AttributeValue({ printableString: dn.country }));
  if (dn.organization) add(OID.organizationName, new AttributeValue({ utf8String: dn.organization }));
  if (dn.commonName) add(OID.commonName, new AttributeValue({ utf8String: dn.commonName }));
  return new Name(rdns);
}

function spkiOf(key: KeyObject): SubjectPublicKeyInfo {
  return AsnConvert.parse(key.export({ type: 'spki', format: 'der' }), SubjectPublicKeyInfo);
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits; it links a certificate to its issuer's key. */
export function keyIdentifier(key: KeyObject): Buffer {
  return crypto.createHash('sha1').update(Buffer.from(spkiOf(key).subjectPublicKey)).digest();
}

export function randomSerial(): Buffer {
  const b = crypto.randomBytes(16);
  // DER INTEGERs are signed and minimal: clear the top bit (positive) and keep the first byte non-zero.
  b[0] = (b[0]! & 0x7f) | 0x40;
  return b;
}

/** X.509 carries whole seconds; rounding here keeps "notAfter ≤ CA notAfter" exact after encoding. */
export function toCertTime(ms: number): Date {
  return new Date(Math.floor(ms / 1000) * 1000);
}

function extension(extnID: string, critical: boolean, value: unknown): Extension {
  return new Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

export function buildCertificate(t: CertificateTemplate): Buffer {
  const signatureAlgorithm = new AlgorithmIdentifier({ algorithm: OID.ecdsaWithSha256 });
  // The issuer's subject is copied as encoded, so that name matching never depends on re-encoding.
  const issuerName = t.issuer ? AsnConvert.parse(t.issuer.raw, Certificate).tbsCertificate.subject : encodeName(t.subject);
  const issuerKey = t.issuer?.publicKey ?? t.subjectPublicKey;
  const extensions: Extension[] = [
    extension(id_ce_basicConstraints, true, new BasicConstraints(t.isCa ? { cA: true, pathLenConstraint: t.pathLen } : {})),
    extension(id_ce_keyUsage, true, new KeyUsage(t.keyUsage)),
    extension(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(keyIdentifier(t.subjectPublicKey))),
    extension(id_ce_authorityKeyIdentifier, false, new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(keyIdentifier(issuerKey)) })),
  ];
  if (t.extKeyUsage?.length) extensions.push(extension(id_ce_extKeyUsage, false, new ExtendedKeyUsage(t.extKeyUsage)));
  const sans = [
    ...(t.uriSans ?? []).map((uri) => new GeneralName({ uniformResourceIdentifier: uri })),
    ...(t.dnsSans ?? []).map((dns) => new GeneralName({ dNSName: dns })),
    ...(t.ipSans ?? []).map((ip) => new GeneralName({ iPAddress: ip })),
  ];
  if (sans.length) {
    const subjectEmpty = !t.subject.country && !t.subject.organization && !t.subject.commonName;
    // RFC 5280 §4.2.1.6: with an empty subject the SAN extension is the identity and must be critical.
    extensions.push(extension(id_ce_subjectAltName, subjectEmpty, new SubjectAlternativeName(sans)));
  }
  const serial = t.serial ?? randomSerial();
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: serial.buffer.slice(serial.byteOffset, serial.byteOffset + serial.byteLength) as ArrayBuffer,
    signature: signatureAlgorithm,
    issuer: issuerName,
    validity: new Validity({ notBefore: toCertTime(t.notBefore.getTime()), notAfter: toCertTime(t.notAfter.getTime()) }),
    subject: encodeName(t.subject),
    subjectPublicKeyInfo: spkiOf(t.subjectPublicKey),
    extensions: new Extensions(extensions),
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const signature = crypto.sign('sha256', tbsDer, { key: t.signingKey, dsaEncoding: 'der' });
  const cert = new Certificate({
    tbsCertificate: tbs,
    signatureAlgorithm,
    signatureValue: signature.buffer.slice(signature.byteOffset, signature.byteOffset + signature.byteLength) as ArrayBuffer,
  });
  return Buffer.from(AsnConvert.serialize(cert));
}

export function generateKeyPair(): { privateKey: KeyObject; publicKey: KeyObject } {
  return crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
}
