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
const HEADER = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT' }));

export function signToken(key: KeyObject, claims: TokenClaims): string {
  const body = `${HEADER}.${b64url(JSON.stringify(claims))}`;
  const sig = crypto.sign('sha256', Buffer.from(body), { key, dsaEncoding: 'ieee-p1363' });
  return `${body}.${b64url(sig)}`;
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
