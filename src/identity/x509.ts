/**
 * X.509-SVIDs: a trust domain's CA, the SVIDs it issues, and their verification by the rules of the
 * X.509-SVID standard (one URI SAN, leaf not a CA, chained to the bundle of the leaf's own trust domain).
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import { buildCertificate, generateKeyPair, ExtKeyUsage, KeyUsageFlags, toCertTime } from './cert-build.js';
import { certFacts, type CertFacts } from './cert-parse.js';
import { parseSpiffeId, parseTrustDomain, trustDomainId, trustDomainOf, SpiffeIdError } from './spiffe-id.js';

export interface Ca {
  trustDomain: string;
  cert: X509Certificate;
  certDer: Buffer;
  privateKey: KeyObject;
  notAfter: number;
}

export interface IssuedSvid {
  spiffeId: string;
  /** Leaf only: this CA signs SVIDs directly. */
  certDer: Buffer;
  /** Leaf first, as the Workload API's x509_svid carries it. */
  chainDer: Buffer[];
  keyPkcs8Der: Buffer;
  notAfter: number;
}

export interface VerifiedSvid {
  spiffeId: string;
  trustDomain: string;
  leaf: X509Certificate;
  notAfter: number;
}

/** Trust domain name → its CA certificates. */
export type Bundles = ReadonlyMap<string, readonly X509Certificate[]>;

export const DEFAULT_CA_TTL_MS = 365 * 24 * 3600_000;

/** Why a certificate chain is not an acceptable X.509-SVID; `reason` is meant for a person. */
export class SvidError extends Error {
  constructor(readonly reason: string) {
    super(`X.509-SVID refused: ${reason}`);
    this.name = 'SvidError';
  }
}

const caName = (trustDomain: string) => ({ organization: 'SPIFFE', commonName: `${trustDomain} CA` });

export function createCa(trustDomain: string, opts: { ttlMs?: number; now?: number } = {}): Ca {
  const td = parseTrustDomain(trustDomain);
  const now = opts.now ?? Date.now();
  const { privateKey, publicKey } = generateKeyPair();
  const certDer = buildCertificate({
    subject: caName(td),
    subjectPublicKey: publicKey,
    signingKey: privateKey,
    // Backdated a little so that a peer whose clock is slightly behind still accepts it.
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + (opts.ttlMs ?? DEFAULT_CA_TTL_MS)),
    isCa: true,
    keyUsage: KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign,
    uriSans: [trustDomainId(td)],
  });
  return caFromDer(td, certDer, privateKey);
}

/** Rebuilds a CA from stored parts, checking they belong together and to the trust domain. */
export function caFromDer(trustDomain: string, certDer: Buffer, privateKey: KeyObject): Ca {
  const td = parseTrustDomain(trustDomain);
  const cert = new X509Certificate(certDer);
  const facts = certFacts(certDer);
  if (!facts.isCa) throw new Error(`the CA certificate of ${td} is not a CA (basicConstraints CA=false)`);
  if (!facts.uriSans.includes(trustDomainId(td))) {
    throw new Error(`the CA certificate has URI SANs [${facts.uriSans.join(', ')}], not ${trustDomainId(td)}`);
  }
  if (!cert.checkPrivateKey(privateKey)) throw new Error(`the CA private key of ${td} does not match its certificate`);
  return { trustDomain: td, cert, certDer: Buffer.from(certDer), privateKey, notAfter: facts.notAfter };
}

export function issueSvid(ca: Ca, spiffeId: string, ttlMs: number, opts: { now?: number } = {}): IssuedSvid {
  const id = parseSpiffeId(spiffeId);
  if (id.trustDomain !== ca.trustDomain) {
    throw new Error(`cannot issue ${spiffeId}: this CA signs for trust domain ${ca.trustDomain} only`);
  }
  if (id.path === '') throw new Error(`cannot issue ${spiffeId}: a workload's SPIFFE ID needs a path (this is the trust domain's own ID)`);
  const now = opts.now ?? Date.now();
  // An SVID must not outlive its CA: peers would refuse the chain from then on anyway.
  const notAfter = toCertTime(Math.min(now + ttlMs, ca.notAfter)).getTime();
  const { privateKey, publicKey } = generateKeyPair();
  const certDer = buildCertificate({
    subject: { organization: 'SPIFFE' },
    issuer: ca.cert,
    subjectPublicKey: publicKey,
    signingKey: ca.privateKey,
    notBefore: new Date(Math.min(now - 60_000, notAfter - 1000)),
    notAfter: new Date(notAfter),
    isCa: false,
    keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment | KeyUsageFlags.keyAgreement,
    extKeyUsage: [ExtKeyUsage.serverAuth, ExtKeyUsage.clientAuth],
    uriSans: [spiffeId],
  });
  return {
    spiffeId,
    certDer,
    chainDer: [certDer],
    keyPkcs8Der: privateKey.export({ type: 'pkcs8', format: 'der' }),
    notAfter,
  };
}

/** Bundle CAs are verified against on every call; their ASN.1 parse (≈1 ms) is done once per object. */
const factsCache = new WeakMap<X509Certificate, CertFacts>();
function factsOf(cert: X509Certificate): CertFacts {
  let f = factsCache.get(cert);
  if (!f) factsCache.set(cert, (f = certFacts(cert.raw)));
  return f;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** True when `issuer` names itself as `cert`'s issuer and its key verifies `cert`'s signature. */
function signs(issuer: X509Certificate, cert: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** Names itself as issuer and carries its own signature; checkIssued would not say so for a leaf (no keyCertSign). */
function isSelfSigned(cert: X509Certificate): boolean {
  try {
    return cert.subject === cert.issuer && cert.verify(cert.publicKey);
  } catch {
    return false;
  }
}

function asCert(c: Buffer | Uint8Array | X509Certificate): X509Certificate {
  return c instanceof X509Certificate ? c : new X509Certificate(Buffer.from(c));
}

/** Longest chain followed through presented intermediates; real deployments use at most two. */
const MAX_INTERMEDIATES = 8;

/**
 * Verifies an X.509-SVID chain (leaf first, then any intermediates) and returns the peer's identity.
 * The trust anchor must be in the bundle of the trust domain named in the leaf's SPIFFE ID: with
 * several federated bundles a CA of one trust domain must not be able to speak for another.
 */
export function verifySvid(chain: readonly (Buffer | Uint8Array | X509Certificate)[], bundles: Bundles, now = Date.now()): VerifiedSvid {
  if (chain.length === 0) throw new SvidError('no certificate was presented');
  let certs: X509Certificate[];
  try {
    certs = chain.map(asCert);
  } catch (e) {
    throw new SvidError(`a certificate does not parse: ${(e as Error).message}`);
  }
  const leaf = certs[0]!;
  const facts = factsOf(leaf);
  if (facts.duplicateExtensions.length) throw new SvidError(`certificate repeats extension(s) ${facts.duplicateExtensions.join(', ')}`);
  if (facts.unknownCritical.length) throw new SvidError(`certificate has unsupported critical extension(s) ${facts.unknownCritical.join(', ')}`);
  if (facts.uriSans.length !== 1) {
    throw new SvidError(`certificate has ${facts.uriSans.length} URI SANs; an X.509-SVID has exactly one, its SPIFFE ID`);
  }
  const spiffeId = facts.uriSans[0]!;
  let trustDomain: string;
  try {
    trustDomain = trustDomainOf(spiffeId);
  } catch (e) {
    throw new SvidError(e instanceof SpiffeIdError ? e.message : String(e));
  }
  if (facts.isCa) throw new SvidError(`certificate of ${spiffeId} is a CA certificate (basicConstraints CA=true), not a leaf SVID`);
  if (facts.keyUsage === undefined || !(facts.keyUsage & KeyUsageFlags.digitalSignature)) {
    throw new SvidError(`certificate of ${spiffeId} lacks keyUsage digitalSignature`);
  }
  if (facts.keyUsage & (KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign)) {
    throw new SvidError(`certificate of ${spiffeId} has keyUsage keyCertSign or cRLSign, which a leaf SVID must not have`);
  }
  if (isSelfSigned(leaf)) throw new SvidError(`certificate of ${spiffeId} is self-signed`);
  if (now < facts.notBefore) throw new SvidError(`certificate of ${spiffeId} is not valid before ${iso(facts.notBefore)}`);
  if (now > facts.notAfter) throw new SvidError(`certificate of ${spiffeId} expired at ${iso(facts.notAfter)}`);

  const roots = bundles.get(trustDomain);
  if (!roots || roots.length === 0) throw new SvidError(`trust domain ${trustDomain} is not trusted (no bundle)`);

  const notes: string[] = [];
  const rootValid = (root: X509Certificate): boolean => {
    const f = factsOf(root);
    if (now > f.notAfter) notes.push(`CA ${root.subject.replace(/\n/g, ', ')} expired at ${iso(f.notAfter)}`);
    else if (now < f.notBefore) notes.push(`CA ${root.subject.replace(/\n/g, ', ')} is not valid before ${iso(f.notBefore)}`);
    else return true;
    return false;
  };
  const intermediates = certs.slice(1);
  const used = new Set<X509Certificate>();
  let current = leaf;
  for (let depth = 0; depth <= MAX_INTERMEDIATES; depth++) {
    if (roots.some((root) => signs(root, current) && rootValid(root))) {
      return { spiffeId, trustDomain, leaf, notAfter: facts.notAfter };
    }
    const next = intermediates.find((c) => !used.has(c) && signs(c, current));
    if (!next) break;
    const f = factsOf(next);
    if (!f.isCa || (f.keyUsage !== undefined && !(f.keyUsage & KeyUsageFlags.keyCertSign))) {
      throw new SvidError(`intermediate ${next.subject.replace(/\n/g, ', ')} in the chain of ${spiffeId} is not a CA`);
    }
    if (now > f.notAfter) throw new SvidError(`intermediate CA in the chain of ${spiffeId} expired at ${iso(f.notAfter)}`);
    if (now < f.notBefore) throw new SvidError(`intermediate CA in the chain of ${spiffeId} is not valid before ${iso(f.notBefore)}`);
    used.add(next);
    current = next;
  }
  throw new SvidError(
    `certificate of ${spiffeId} is signed by no CA of trust domain ${trustDomain}` + (notes.length ? ` (${notes.join('; ')})` : ''),
  );
}
