/**
 * The SPIFFE trust bundle format (a JWK Set, SPIFFE Trust Domain and Bundle spec §4): what a federation
 * bundle endpoint serves. X.509 authorities are keys with `use: "x509-svid"` carrying exactly one DER
 * certificate in `x5c`; JWT authorities (`use: "jwt-svid"`) are not used by nsmesh and are skipped.
 */
import { X509Certificate, type JsonWebKey } from 'node:crypto';
import { z } from 'zod';

export interface SpiffeBundle {
  /** X.509 authorities of the trust domain. */
  x509Authorities: X509Certificate[];
  /** Seconds the publisher suggests between fetches; undefined when it gives none. */
  refreshHintS?: number;
  sequence?: number;
}

const keySchema = z
  .object({
    use: z.string().optional(),
    kty: z.string(),
    x5c: z.array(z.string()).optional(),
  })
  .passthrough();

const bundleSchema = z
  .object({
    keys: z.array(keySchema),
    spiffe_refresh_hint: z.number().int().nonnegative().optional(),
    spiffe_sequence: z.number().int().nonnegative().optional(),
  })
  .passthrough();

export class BundleFormatError extends Error {}

/** Encodes a trust domain's X.509 authorities as a SPIFFE bundle document. */
export function encodeSpiffeBundle(certs: readonly X509Certificate[], opts: { refreshHintS?: number; sequence?: number } = {}): string {
  const keys = certs.map((c) => ({
    use: 'x509-svid',
    ...(c.publicKey.export({ format: 'jwk' }) as JsonWebKey),
    x5c: [c.raw.toString('base64')],
  }));
  return JSON.stringify({
    keys,
    ...(opts.refreshHintS !== undefined ? { spiffe_refresh_hint: opts.refreshHintS } : {}),
    ...(opts.sequence !== undefined ? { spiffe_sequence: opts.sequence } : {}),
  });
}

/**
 * Decodes a SPIFFE bundle document. Each X.509 authority must carry exactly one certificate whose public key
 * is the key the JWK itself describes, so a document cannot smuggle in a certificate its keys do not vouch for.
 */
export function decodeSpiffeBundle(text: string, trustDomain: string): SpiffeBundle {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new BundleFormatError(`the bundle of ${trustDomain} is not JSON: ${(e as Error).message}`);
  }
  const parsed = bundleSchema.safeParse(json);
  if (!parsed.success) {
    throw new BundleFormatError(`the bundle of ${trustDomain} is not a SPIFFE bundle (JWK Set): ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  const certs: X509Certificate[] = [];
  parsed.data.keys.forEach((k, i) => {
    if (k.use !== 'x509-svid') return;
    if (k.x5c?.length !== 1) throw new BundleFormatError(`the bundle of ${trustDomain}: key ${i} (x509-svid) must carry exactly one certificate in x5c`);
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(Buffer.from(k.x5c[0]!, 'base64'));
    } catch (e) {
      throw new BundleFormatError(`the bundle of ${trustDomain}: key ${i} has an x5c certificate that does not parse: ${(e as Error).message}`);
    }
    if (!sameKey(cert, k)) throw new BundleFormatError(`the bundle of ${trustDomain}: key ${i} describes a different public key than its x5c certificate`);
    certs.push(cert);
  });
  if (certs.length === 0) throw new BundleFormatError(`the bundle of ${trustDomain} has no X.509 authority (no key with use "x509-svid")`);
  return {
    x509Authorities: certs,
    ...(parsed.data.spiffe_refresh_hint !== undefined ? { refreshHintS: parsed.data.spiffe_refresh_hint } : {}),
    ...(parsed.data.spiffe_sequence !== undefined ? { sequence: parsed.data.spiffe_sequence } : {}),
  };
}

function sameKey(cert: X509Certificate, jwk: Record<string, unknown>): boolean {
  const own = cert.publicKey.export({ format: 'jwk' }) as Record<string, unknown>;
  const fields = Object.keys(own);
  return fields.every((f) => own[f] === jwk[f]);
}
