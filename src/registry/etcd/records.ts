import type { Logger } from 'pino';
import { messageCodec } from '../../api/codec.js';
import type { NetworkService, NetworkServiceEndpoint } from '../../api/types.js';
import { compareTimestamps, msToTimestamp, timestampToMs } from '../timestamp.js';

/*
 * Storage layout under the registry prefix (default /nsmesh/registry/):
 *   <prefix>ns/<name>     registry.NetworkService, protobuf wire encoding, no lease
 *   <prefix>nse/<name>    registry.NetworkServiceEndpoint, protobuf wire encoding, attached to a lease of its own
 *                         whose TTL covers expiration_time
 *   <prefix>incarnation   random id written once per etcd data set; a changed id means the data was wiped
 * Protobuf rather than JSON: it is upstream's own schema, so any NSM-aware tool in any language can read the
 * records, and decode() gives exactly the shape the gRPC servers return.
 */

export const SERVICES = 'ns/';
export const ENDPOINTS = 'nse/';
export const INCARNATION = 'incarnation';

const nsCodec = () => messageCodec('registry.NetworkService');
const nseCodec = () => messageCodec('registry.NetworkServiceEndpoint');

export function normalizeService(ns: NetworkService): NetworkService {
  return nsCodec().normalize(ns);
}

export function normalizeEndpoint(nse: NetworkServiceEndpoint): NetworkServiceEndpoint {
  return nseCodec().normalize(nse);
}

export function encodeService(ns: NetworkService): Buffer {
  return nsCodec().encode(ns);
}

export function encodeEndpoint(nse: NetworkServiceEndpoint): Buffer {
  return nseCodec().encode(nse);
}

/** Undefined (and a warning) for bytes that are not a record: whoever wrote them, they must not break readers. */
export function decodeService(value: Buffer, key: string, logger: Logger): NetworkService | undefined {
  try {
    return nsCodec().decode(value);
  } catch (err) {
    logger.warn({ err, key }, 'ignoring undecodable network service record in etcd');
    return undefined;
  }
}

export function decodeEndpoint(value: Buffer, key: string, logger: Logger): NetworkServiceEndpoint | undefined {
  try {
    return nseCodec().decode(value);
  } catch (err) {
    logger.warn({ err, key }, 'ignoring undecodable network service endpoint record in etcd');
    return undefined;
  }
}

/** A record without expiration_time was not written by us; its lease alone decides when it goes. */
export function endpointExpiryMs(nse: NetworkServiceEndpoint): number {
  return nse.expiration_time ? timestampToMs(nse.expiration_time) : Infinity;
}

/** expiration_time = min(requested, now + max), as upstream's `expire` element and the embedded registry. */
export function capExpiration(
  nse: NetworkServiceEndpoint,
  now: number,
  maxExpirationMs: number,
): NetworkServiceEndpoint {
  const cap = msToTimestamp(now + maxExpirationMs);
  const requested = nse.expiration_time;
  return { ...nse, expiration_time: requested && compareTimestamps(requested, cap) < 0 ? requested : cap };
}

/** Whole seconds (etcd's unit) rounded up so the lease never ends before expiration_time; at least 1 s. */
export function leaseTtlSeconds(expiresAtMs: number, now: number): number {
  return Math.max(1, Math.ceil((expiresAtMs - now) / 1000));
}
