import type { Metadata } from '@grpc/grpc-js';
import type { Path } from '../api/types.js';
import { permissionDenied } from '../util/errors.js';
import type { SpiffePeer } from './tls.js';
import type { Svid } from './source.js';
import { X509Certificate } from 'node:crypto';
import { decodeToken, signerCertOf, signToken, TokenError, verifyToken, type TokenClaims } from './token.js';
import { verifySvid, type Bundles } from './x509.js';

export const TOKEN_HEADER = 'nsm-client-token';
export const TOKEN_EXPIRES_HEADER = 'nsm-client-token-expires';

export interface IssuedToken {
  token: string;
  /** Epoch ms. */
  expires: number;
}

/**
 * Tokens bind only subject, audience and expiry — not the connection — so a hop reuses the one it signed
 * for an audience while it still fits, instead of paying an ECDSA signature per Request. A token fits when
 * it expires no later than this Request allows and at most a little (a tenth of the lifetime, ≤ 60 s)
 * earlier. A new SVID (rotation) means a new key, hence a new cache key.
 */
const issued = new Map<string, IssuedToken>();
const MAX_CACHED = 1024;

/** A token for the next hop: expiry ≤ the lifetime, ≤ our SVID's NotAfter, ≤ an upstream cap (the caller's expiry). */
export function issueToken(svid: Svid, audience: string, maxLifetimeMs: number, capMs = Infinity): IssuedToken {
  const now = Date.now();
  const wanted = Math.floor(Math.min(now + maxLifetimeMs, svid.notAfter, capMs) / 1000) * 1000;
  const key = `${svid.serial}|${audience}`;
  const slack = Math.min(60_000, (wanted - now) / 10);
  const cached = issued.get(key);
  if (cached && cached.expires <= wanted && cached.expires >= wanted - slack) return cached;
  const t = sign(svid, audience, now, wanted);
  if (issued.size >= MAX_CACHED) issued.delete(issued.keys().next().value!);
  issued.set(key, t);
  return t;
}

function sign(svid: Svid, audience: string, now: number, expires: number): IssuedToken {
  const token = signToken(svid.privateKey, { sub: svid.spiffeId, aud: [audience], exp: Math.floor(expires / 1000), iat: Math.floor(now / 1000) }, Buffer.from(svid.leaf.raw));
  return { token, expires };
}

/** Tokens already verified against a peer's certificate: a repeat costs a map lookup, not an ECDSA verify. */
const verified = new Map<string, TokenClaims>();

/**
 * Upstream requires the previous segment to be signed by the TLS peer's certificate. After an SVID rotation
 * a live connection still shows the peer's previous certificate while its tokens are signed with the new
 * key, so a token that names its signer (x5c) is also accepted when that certificate is a valid SVID of the
 * very same SPIFFE ID as the peer: same identity, proven by our trust bundle, without a reconnect.
 */
function verifyCached(token: string, peer: SpiffePeer, bundles: Bundles): TokenClaims {
  const key = `${peer.leaf.fingerprint256}|${token}`;
  const hit = verified.get(key);
  if (hit) return hit;
  const signer = signerCertOf(token);
  let claims: TokenClaims;
  if (!signer || signer.equals(peer.leaf.raw)) {
    claims = verifyToken(token, peer.leaf.publicKey);
  } else {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(signer);
      const v = verifySvid([cert], bundles);
      if (v.spiffeId !== peer.spiffeId) throw new TokenError(`token is signed by ${v.spiffeId}, not by the caller ${peer.spiffeId}`);
    } catch (e) {
      throw new TokenError(`token signer certificate refused: ${(e as Error).message}`);
    }
    claims = verifyToken(token, cert.publicKey);
  }
  if (verified.size >= MAX_CACHED) verified.delete(verified.keys().next().value!);
  verified.set(key, claims);
  return claims;
}

export function setTokenMetadata(md: Metadata, t: IssuedToken): Metadata {
  md.set(TOKEN_HEADER, t.token);
  md.set(TOKEN_EXPIRES_HEADER, new Date(t.expires).toISOString());
  return md;
}

export function tokenFromMetadata(md: Metadata): string | undefined {
  const v = md.get(TOKEN_HEADER)[0];
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

/**
 * Upstream's default server checks on an incoming hop, done here without OPA: the caller's token is signed
 * by the caller's TLS certificate, names the caller as subject and us as audience, and has not expired; it
 * is written into the caller's segment; then every token on the path up to here decodes, is unexpired, and
 * the chain is linked (each token's audience names the next token's subject). Returns the path's origin.
 */
export function checkIncomingPath(
  path: Path,
  ownIndex: number,
  token: string | undefined,
  peer: SpiffePeer,
  self: string,
  bundles: Bundles,
  now = Date.now(),
): string {
  if (!token) throw permissionDenied(`no ${TOKEN_HEADER} from ${peer.spiffeId}: every hop must send a path token`);
  let claims: TokenClaims;
  try {
    claims = verifyCached(token, peer, bundles);
  } catch (e) {
    throw permissionDenied(`path token from ${peer.spiffeId} refused: ${(e as TokenError).message}`);
  }
  if (claims.sub !== peer.spiffeId) throw permissionDenied(`path token subject ${claims.sub} is not the caller ${peer.spiffeId}`);
  if (!claims.aud.includes(self)) throw permissionDenied(`path token from ${peer.spiffeId} is for ${claims.aud.join(', ')}, not for ${self}`);
  const prev = path.path_segments[ownIndex - 1];
  if (!prev) throw permissionDenied('the path has no segment for the caller');
  prev.token = token;
  prev.expires = { seconds: claims.exp, nanos: 0 };
  let prevClaims: TokenClaims | undefined;
  let origin = '';
  for (let i = 0; i < ownIndex; i++) {
    const seg = path.path_segments[i]!;
    let c: TokenClaims;
    try {
      c = decodeToken(seg.token);
    } catch (e) {
      throw permissionDenied(`path segment ${i} (${seg.name}) has no valid token: ${(e as Error).message}`);
    }
    if (c.exp * 1000 <= now) throw permissionDenied(`path token of segment ${i} (${c.sub}) expired at ${new Date(c.exp * 1000).toISOString()}`);
    if (prevClaims && !prevClaims.aud.includes(c.sub)) {
      throw permissionDenied(`path is not chained: segment ${i - 1} was issued for ${prevClaims.aud.join(', ')}, but segment ${i} is ${c.sub}`);
    }
    if (i === 0) origin = c.sub;
    prevClaims = c;
  }
  return origin;
}
