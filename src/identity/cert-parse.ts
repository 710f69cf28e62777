/**
 * Reads what SPIFFE verification needs from a certificate and node:crypto does not expose:
 * the URI SANs exactly as encoded (Node only offers a display string), keyUsage bits, and
 * the list of extensions (to refuse duplicates and unknown critical ones).
 */
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  BasicConstraints,
  Certificate,
  KeyUsage,
  SubjectAlternativeName,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_nameConstraints,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
} from '@peculiar/asn1-x509';

export interface CertFacts {
  uriSans: string[];
  /** basicConstraints CA flag; false when the extension is absent. */
  isCa: boolean;
  /** KeyUsageFlags bits, or undefined when the certificate has no keyUsage extension. */
  keyUsage: number | undefined;
  notBefore: number;
  notAfter: number;
  /** Extension OIDs that appear more than once (RFC 5280 forbids it). */
  duplicateExtensions: string[];
  /** Critical extensions this verifier does not understand; a verifier must refuse those. */
  unknownCritical: string[];
}

const UNDERSTOOD = new Set<string>([
  id_ce_basicConstraints,
  id_ce_keyUsage,
  id_ce_extKeyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  id_ce_authorityKeyIdentifier,
  id_ce_nameConstraints,
]);

export function certFacts(der: Uint8Array): CertFacts {
  const cert = AsnConvert.parse(der, Certificate);
  const tbs = cert.tbsCertificate;
  const facts: CertFacts = {
    uriSans: [],
    isCa: false,
    keyUsage: undefined,
    notBefore: tbs.validity.notBefore.getTime().getTime(),
    notAfter: tbs.validity.notAfter.getTime().getTime(),
    duplicateExtensions: [],
    unknownCritical: [],
  };
  const seen = new Set<string>();
  for (const ext of tbs.extensions ?? []) {
    if (seen.has(ext.extnID)) facts.duplicateExtensions.push(ext.extnID);
    seen.add(ext.extnID);
    if (ext.critical && !UNDERSTOOD.has(ext.extnID)) facts.unknownCritical.push(ext.extnID);
    const value = ext.extnValue.buffer;
    switch (ext.extnID) {
      case id_ce_basicConstraints:
        facts.isCa = AsnConvert.parse(value, BasicConstraints).cA;
        break;
      case id_ce_keyUsage:
        facts.keyUsage = AsnConvert.parse(value, KeyUsage).toNumber();
        break;
      case id_ce_subjectAltName:
        for (const name of AsnConvert.parse(value, SubjectAlternativeName)) {
          if (name.uniformResourceIdentifier !== undefined) facts.uriSans.push(name.uniformResourceIdentifier);
        }
        break;
    }
  }
  return facts;
}
