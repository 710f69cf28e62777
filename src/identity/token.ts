import crypto, { type KeyObject } from 'node:crypto';

/**
 * Path tokens as upstream NSM makes them: a JWT signed ES256 with the hop's own X.509-SVID key (not a
 * JWT-SVID), `sub` the hop's SPIFFE ID, `aud` the next hop's, `exp` bounded by the token lifetime and
 * both SVIDs' expiry.
 */
export interface TokenClaims {
  sub: string;
  aud: string[];
  exp: number; // seconds since the epoch
  iat: number;
}

export class TokenError extends Error {
  override name = 'TokenError';
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/**
 * `signerCert` (the signer's SVID leaf, DER) goes into the standard `x5c` header. A verifier can then check a
 * token signed with a freshly rotated key even while the TLS connection it came over still shows the
 * previous certificate of the same identity.
 */
export function signToken(key: KeyObject, claims: TokenClaims, signerCert?: Buffer): string {
  const header = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT', ...(signerCert ? { x5c: [signerCert.toString('base64')] } : {}) }));
  const body = `${header}.${b64url(JSON.stringify(claims))}`;
  const sig = crypto.sign('sha256', Buffer.from(body), { key, dsaEncoding: 'ieee-p1363' });
  return `${body}.${b64url(sig)}`;
}

/** The signer's certificate from the `x5c` header, if the token carries one. */
export function signerCertOf(token: string): Buffer | undefined {
  try {
    const header = JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString('utf8')) as { x5c?: unknown };
    const first = Array.isArray(header.x5c) ? header.x5c[0] : undefined;
    return typeof first === 'string' ? Buffer.from(first, 'base64') : undefined;
  } catch {
    return undefined;
  }
}

/** Decodes without checking the signature; rejects anything that is not a well-formed ES256 JWT. */
export function decodeToken(token: string): TokenClaims {
  const parts = token.split('.');
  if (parts.length !== 3) throw new TokenError('token is not a JWT (expected three dot-separated parts)');
  let header: { alg?: unknown };
  let claims: Partial<TokenClaims> & { aud?: unknown };
  try {
    header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
  } catch {
    throw new TokenError('token header or claims are not base64url JSON');
  }
  if (header.alg !== 'ES256') throw new TokenError(`token algorithm ${String(header.alg)} is not ES256`);
  const aud = typeof claims.aud === 'string' ? [claims.aud] : claims.aud;
  if (typeof claims.sub !== 'string' || !Array.isArray(aud) || !aud.every((a) => typeof a === 'string') || typeof claims.exp !== 'number') {
    throw new TokenError('token claims need sub (string), aud (string or list) and exp (number)');
  }
  return { sub: claims.sub, aud: aud as string[], exp: claims.exp, iat: typeof claims.iat === 'number' ? claims.iat : 0 };
}

/** Decodes and checks the signature against the signer's public key (the TLS peer's leaf). */
export function verifyToken(token: string, publicKey: KeyObject): TokenClaims {
  const claims = decodeToken(token);
  const i = token.lastIndexOf('.');
  const ok = crypto.verify('sha256', Buffer.from(token.slice(0, i)), { key: publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(token.slice(i + 1), 'base64url'));
  if (!ok) throw new TokenError(`token of ${claims.sub} is not signed by the caller's certificate (tampered, or signed by someone else)`);
  return claims;
}
