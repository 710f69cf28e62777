/**
 * Certificate byte formats at the edges: the Workload API carries certificates as DER blobs
 * concatenated without separators, TLS stacks want PEM.
 */
import { X509Certificate } from 'node:crypto';

/** Reads one DER TLV header; returns the total length of the element starting at `offset`. */
function elementLength(bytes: Uint8Array, offset: number): number {
  if (bytes[offset] !== 0x30) throw new Error(`byte ${offset}: expected a DER SEQUENCE (0x30), found 0x${(bytes[offset] ?? 0).toString(16)}`);
  const first = bytes[offset + 1];
  if (first === undefined) throw new Error(`byte ${offset}: truncated DER length`);
  if (first < 0x80) return 2 + first;
  const n = first & 0x7f;
  // Indefinite lengths are BER, not DER; more than 4 length bytes would be a certificate over 4 GiB.
  if (n === 0 || n > 4) throw new Error(`byte ${offset}: unsupported DER length form`);
  if (offset + 2 + n > bytes.length) throw new Error(`byte ${offset}: truncated DER length`);
  let len = 0;
  for (let i = 0; i < n; i++) len = len * 256 + bytes[offset + 2 + i]!;
  return 2 + n + len;
}

/** Splits concatenated DER certificates (the Workload API's `x509_svid`, `bundle` and bundle map values). */
export function splitDer(bytes: Uint8Array): Buffer[] {
  const out: Buffer[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const len = elementLength(bytes, offset);
    if (offset + len > bytes.length) throw new Error(`byte ${offset}: DER element runs past the end of the data`);
    out.push(Buffer.from(bytes.subarray(offset, offset + len)));
    offset += len;
  }
  return out;
}

/** Parses concatenated DER certificates. */
export function parseCertificates(bytes: Uint8Array): X509Certificate[] {
  return splitDer(bytes).map((der) => new X509Certificate(der));
}

export function concatDer(certs: readonly (Buffer | X509Certificate)[]): Buffer {
  return Buffer.concat(certs.map((c) => (c instanceof X509Certificate ? c.raw : c)));
}

export function toPem(certs: readonly (Buffer | X509Certificate)[]): string {
  return certs.map((c) => (c instanceof X509Certificate ? c : new X509Certificate(c)).toString()).join('');
}

/** Accepts one DER blob (possibly several certificates concatenated) or a list of them. */
export function toDerList(certsDer: Buffer | Uint8Array | readonly (Buffer | Uint8Array)[]): Buffer[] {
  const list = Array.isArray(certsDer) ? certsDer : [certsDer as Uint8Array];
  return list.flatMap((b) => splitDer(b));
}

/** Every CERTIFICATE block of a PEM text (a bundle file written with --bundle-out, for instance). */
export function fromPem(text: string): X509Certificate[] {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b));
}
