/**
 * WireGuard keys: X25519 key pairs from node:crypto, and the two text forms WireGuard uses for the same
 * 32 bytes (base64 in `wg` and in upstream's WIREGUARD mechanism parameters, hex on the UAPI socket).
 *
 * Private keys stay KeyObjects wherever possible: a KeyObject serialises to `{}` with JSON.stringify and
 * prints without its material in util.inspect, so a careless log line or state file cannot leak it. The raw
 * bytes are only taken out (as a Buffer the caller zeroes) when they are written to wireguard-go.
 * Nothing here turns a private key into a string.
 */
import { createPrivateKey, createPublicKey, generateKeyPair as generateKeyPairCb, generateKeyPairSync, KeyObject } from 'node:crypto';

export const WG_KEY_LEN = 32;

// DER wrappers of an X25519 key (RFC 8410): fixed prefixes followed by the 32 raw bytes.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

export interface WgKeyPair {
  privateKey: KeyObject;
  /** base64, as the mechanism's src_public_key/dst_public_key carry it. */
  publicKey: string;
}

export class WgKeyError extends Error {
  readonly code = 'EINVAL';
  constructor(message: string) {
    super(message);
    this.name = 'WgKeyError';
  }
}

export function generateKeyPair(): WgKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  return { privateKey, publicKey: rawPublicKeyOf(publicKey).toString('base64') };
}

/** The same, made on libuv's thread pool: for keys made ahead, off the event loop. */
export function generateKeyPairAsync(): Promise<WgKeyPair> {
  return new Promise((resolve, reject) =>
    generateKeyPairCb('x25519', {}, (err, publicKey, privateKey) =>
      err ? reject(err) : resolve({ privateKey, publicKey: rawPublicKeyOf(publicKey).toString('base64') }),
    ),
  );
}

function rawPublicKeyOf(k: KeyObject): Buffer {
  const der = k.export({ format: 'der', type: 'spki' });
  if (der.length !== SPKI_PREFIX.length + WG_KEY_LEN || !der.subarray(0, SPKI_PREFIX.length).equals(SPKI_PREFIX)) {
    throw new WgKeyError('not an X25519 public key');
  }
  return Buffer.from(der.subarray(SPKI_PREFIX.length));
}

/** Accepts what WireguardEnd.privateKey accepts and checks it is an X25519 private key. */
export function toPrivateKeyObject(k: KeyObject | Buffer): KeyObject {
  if (k instanceof KeyObject) {
    if (k.type !== 'private' || k.asymmetricKeyType !== 'x25519') throw new WgKeyError('private key must be an X25519 private KeyObject');
    return k;
  }
  return privateKeyFromRaw(k);
}

/**
 * The 32 raw private bytes, in a fresh Buffer the caller owns and should zero after use. The DER export
 * it is cut from is zeroed here.
 */
export function rawPrivateKey(k: KeyObject | Buffer): Buffer {
  if (Buffer.isBuffer(k)) {
    if (k.length !== WG_KEY_LEN) throw new WgKeyError(`private key must be ${WG_KEY_LEN} bytes`);
    return Buffer.from(k);
  }
  const der = toPrivateKeyObject(k).export({ format: 'der', type: 'pkcs8' });
  try {
    if (der.length !== PKCS8_PREFIX.length + WG_KEY_LEN || !der.subarray(0, PKCS8_PREFIX.length).equals(PKCS8_PREFIX)) {
      throw new WgKeyError('unexpected PKCS#8 layout for an X25519 key');
    }
    return Buffer.from(der.subarray(PKCS8_PREFIX.length));
  } finally {
    der.fill(0);
  }
}

export function privateKeyFromRaw(raw: Buffer): KeyObject {
  if (!Buffer.isBuffer(raw) || raw.length !== WG_KEY_LEN) throw new WgKeyError(`private key must be ${WG_KEY_LEN} bytes`);
  const der = Buffer.concat([PKCS8_PREFIX, raw]);
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

/** base64 public key of a private key. X25519 clamps the scalar itself, so unclamped raw keys (as `wg genkey` may give) agree with wg. */
export function publicKeyOf(k: KeyObject | Buffer): string {
  return rawPublicKeyOf(createPublicKey(toPrivateKeyObject(k))).toString('base64');
}

const B64_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;
const HEX_KEY = /^[0-9a-fA-F]{64}$/;

/** Decodes a base64 key strictly: 44 characters, 32 bytes, canonical padding bits (as wgtypes.ParseKey). */
export function keyFromBase64(s: string): Buffer {
  if (typeof s !== 'string' || !B64_KEY.test(s)) throw new WgKeyError('key must be 44 characters of base64 encoding 32 bytes');
  return Buffer.from(s, 'base64');
}

export function keyFromHex(s: string): Buffer {
  if (typeof s !== 'string' || !HEX_KEY.test(s)) throw new WgKeyError('key must be 64 hex digits');
  return Buffer.from(s, 'hex');
}

export function isValidBase64Key(s: string): boolean {
  return typeof s === 'string' && B64_KEY.test(s);
}

/** For public keys: base64 (mechanism, wg) to hex (UAPI). */
export function base64KeyToHex(s: string): string {
  return keyFromBase64(s).toString('hex');
}

/** For public keys: hex (UAPI) to base64 (mechanism, wg). */
export function hexKeyToBase64(s: string): string {
  return keyFromHex(s).toString('base64');
}

const HEX_DIGITS = Buffer.from('0123456789abcdef');

/**
 * Writes `src` as lowercase hex into `dst` at `offset` and returns the new offset. Exists so a private key
 * reaches the UAPI request buffer without ever becoming an (unzeroable, interned) JS string.
 */
export function writeHex(dst: Buffer, offset: number, src: Buffer): number {
  let o = offset;
  for (const b of src) {
    dst[o++] = HEX_DIGITS[b >> 4] as number;
    dst[o++] = HEX_DIGITS[b & 15] as number;
  }
  return o;
}
