import { describe, expect, it } from 'vitest';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { buildCertificate, generateKeyPair, KeyUsageFlags } from '../../src/identity/cert-build.js';
import { certFacts } from '../../src/identity/cert-parse.js';
import { concatDer, splitDer } from '../../src/identity/der.js';
import { createCa, issueSvid, verifySvid, SvidError, type Ca } from '../../src/identity/x509.js';
import { leafSignedBy, selfSignedLeaf } from './helpers.js';

const A = 'a.example';
const B = 'b.example';
const caA = createCa(A);
const caB = createCa(B);
const bundles = (...cas: Ca[]) => new Map(cas.map((c) => [c.trustDomain, [c.cert]]));

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SvidError);
    return (e as SvidError).reason;
  }
  throw new Error('expected a refusal');
}

describe('CA and SVID issuance', () => {
  it('creates a P-256 CA for the trust domain', () => {
    const f = certFacts(caA.certDer);
    expect(f.isCa).toBe(true);
    expect(f.keyUsage! & KeyUsageFlags.keyCertSign).toBeTruthy();
    expect(f.uriSans).toEqual(['spiffe://a.example']);
    expect(caA.cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('issues a leaf with one URI SAN, CA=false, digitalSignature, not outliving the CA', () => {
    const shortCa = createCa(A, { ttlMs: 120_000 });
    const s = issueSvid(shortCa, 'spiffe://a.example/ns/default/pod/p1', 3600_000);
    const f = certFacts(s.certDer);
    expect(f.uriSans).toEqual(['spiffe://a.example/ns/default/pod/p1']);
    expect(f.isCa).toBe(false);
    expect(f.keyUsage! & KeyUsageFlags.digitalSignature).toBeTruthy();
    expect(f.keyUsage! & (KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign)).toBe(0);
    expect(s.notAfter).toBeLessThanOrEqual(shortCa.notAfter);
    expect(f.notAfter).toBe(s.notAfter);
    // the key is PKCS#8 DER, as the Workload API carries it
    const key = createPrivateKey({ key: s.keyPkcs8Der, format: 'der', type: 'pkcs8' });
    expect(new X509Certificate(s.certDer).checkPrivateKey(key)).toBe(true);
  });

  it('refuses to issue for another trust domain or for the bare trust domain ID', () => {
    expect(() => issueSvid(caA, 'spiffe://b.example/x', 1000)).toThrow('trust domain a.example only');
    expect(() => issueSvid(caA, 'spiffe://a.example', 1000)).toThrow('needs a path');
  });

  it('splits and joins concatenated DER', () => {
    const s = issueSvid(caA, 'spiffe://a.example/x', 60_000);
    const joined = concatDer([s.certDer, caA.certDer]);
    expect(splitDer(joined).map((b) => b.toString('hex'))).toEqual([s.certDer.toString('hex'), caA.certDer.toString('hex')]);
    expect(() => splitDer(joined.subarray(0, joined.length - 3))).toThrow('past the end');
  });
});

describe('verifySvid', () => {
  it('accepts an SVID chained to its own trust domain bundle', () => {
    const s = issueSvid(caA, 'spiffe://a.example/ns/x/pod/y', 60_000);
    const v = verifySvid(s.chainDer, bundles(caA, caB));
    expect(v.spiffeId).toBe('spiffe://a.example/ns/x/pod/y');
    expect(v.trustDomain).toBe(A);
    expect(v.notAfter).toBe(s.notAfter);
  });

  it('refuses a certificate of another trust domain that is not trusted', () => {
    const s = issueSvid(caB, 'spiffe://b.example/x', 60_000);
    expect(refusal(() => verifySvid(s.chainDer, bundles(caA)))).toBe('trust domain b.example is not trusted (no bundle)');
  });

  it("refuses trust domain A's ID signed by B's CA even when both are trusted", () => {
    const forged = leafSignedBy(caB, 'spiffe://a.example/admin');
    expect(refusal(() => verifySvid([forged.der], bundles(caA, caB)))).toBe(
      'certificate of spiffe://a.example/admin is signed by no CA of trust domain a.example',
    );
  });

  it('refuses an expired SVID, saying when it expired', () => {
    const s = issueSvid(caA, 'spiffe://a.example/x', 60_000, { now: Date.now() - 3600_000 });
    expect(refusal(() => verifySvid(s.chainDer, bundles(caA)))).toBe(
      `certificate of spiffe://a.example/x expired at ${new Date(s.notAfter).toISOString()}`,
    );
  });

  it('refuses an SVID that is not yet valid', () => {
    const s = issueSvid(caA, 'spiffe://a.example/x', 60_000);
    expect(refusal(() => verifySvid(s.chainDer, bundles(caA), Date.now() - 3600_000))).toMatch(/is not valid before/);
  });

  it('refuses a self-signed certificate', () => {
    const { der } = selfSignedLeaf('spiffe://a.example/x');
    expect(refusal(() => verifySvid([der], bundles(caA)))).toBe('certificate of spiffe://a.example/x is self-signed');
  });

  it('refuses a CA certificate as leaf', () => {
    expect(refusal(() => verifySvid([caA.certDer], bundles(caA)))).toBe(
      'certificate of spiffe://a.example is a CA certificate (basicConstraints CA=true), not a leaf SVID',
    );
  });

  it('refuses a leaf with keyCertSign, without digitalSignature, or without exactly one URI SAN', () => {
    expect(refusal(() => verifySvid([leafSignedBy(caA, 'spiffe://a.example/x', { keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.keyCertSign }).der], bundles(caA)))).toMatch(/keyCertSign or cRLSign/);
    expect(refusal(() => verifySvid([leafSignedBy(caA, 'spiffe://a.example/x', { keyUsage: KeyUsageFlags.keyEncipherment }).der], bundles(caA)))).toMatch(/lacks keyUsage digitalSignature/);
    expect(refusal(() => verifySvid([leafSignedBy(caA, 'x', { uriSans: ['spiffe://a.example/x', 'spiffe://a.example/y'] }).der], bundles(caA)))).toBe(
      'certificate has 2 URI SANs; an X.509-SVID has exactly one, its SPIFFE ID',
    );
    expect(refusal(() => verifySvid([leafSignedBy(caA, 'x', { uriSans: ['https://a.example/x'] }).der], bundles(caA)))).toMatch(/not a valid SPIFFE ID/);
  });

  it('refuses when the only CA of the trust domain has expired, and says so', () => {
    const old = createCa(A, { ttlMs: 120_000, now: Date.now() - 3600_000 });
    const leaf = leafSignedBy(old, 'spiffe://a.example/x');
    expect(refusal(() => verifySvid([leaf.der], bundles(old)))).toMatch(
      /^certificate of spiffe:\/\/a.example\/x is signed by no CA of trust domain a.example \(CA O=SPIFFE, CN=a.example CA expired at .*Z\)$/,
    );
  });

  it('follows a presented intermediate CA up to the bundle', () => {
    const { privateKey, publicKey } = generateKeyPair();
    const interDer = buildCertificate({
      subject: { organization: 'SPIFFE', commonName: 'intermediate' },
      issuer: caA.cert,
      subjectPublicKey: publicKey,
      signingKey: caA.privateKey,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3600_000),
      isCa: true,
      keyUsage: KeyUsageFlags.keyCertSign,
      uriSans: ['spiffe://a.example'],
    });
    const inter: Ca = { trustDomain: A, cert: new X509Certificate(interDer), certDer: interDer, privateKey, notAfter: Date.now() + 3600_000 };
    const s = issueSvid(inter, 'spiffe://a.example/deep', 60_000);
    expect(verifySvid([s.certDer, interDer], bundles(caA)).spiffeId).toBe('spiffe://a.example/deep');
    expect(refusal(() => verifySvid([s.certDer], bundles(caA)))).toMatch(/signed by no CA of trust domain a.example/);
    // the intermediate is A's: B's bundle must not make it valid for a B identity
    expect(refusal(() => verifySvid([s.certDer, interDer], bundles(caB)))).toBe('trust domain a.example is not trusted (no bundle)');
  });
});
