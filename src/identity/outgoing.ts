import { Metadata } from '@grpc/grpc-js';
import type { DeepPartial, ServiceName } from '../api/codec.js';
import type { ApiClient } from '../api/grpc.js';
import type { Connection } from '../api/types.js';
import { fromTimestamp, toTimestamp } from '../chain/elements/expire.js';
import { unavailable } from '../util/errors.js';
import { issueToken, setTokenMetadata } from './path-tokens.js';
import type { Transport } from './transport.js';

/**
 * Before a hop sends a Request on, it signs its own path segment for the next hop — audience: the SPIFFE ID
 * the next hop showed in its TLS handshake — never outliving the token of the hop before it. Returns the
 * metadata carrying the token (empty in insecure mode).
 */
export async function signOwnSegment<S extends ServiceName>(
  transport: Transport,
  next: ApiClient<S>,
  conn: DeepPartial<Connection>,
  maxTokenLifetimeMs: number,
  timeoutMs: number,
): Promise<Metadata> {
  const metadata = new Metadata();
  const svid = transport.svid();
  if (!svid) return metadata;
  const audience = await next.peerId(timeoutMs).catch(() => undefined);
  if (!audience) throw unavailable(`${next.url} did not complete a TLS handshake`);
  const path = conn.path!;
  const index = path.index ?? 0;
  const segments = path.path_segments!;
  const prev = index > 0 ? segments[index - 1] : undefined;
  const cap = prev?.expires ? fromTimestamp({ seconds: prev.expires.seconds ?? 0, nanos: prev.expires.nanos ?? 0 }) : undefined;
  const t = issueToken(svid, audience, maxTokenLifetimeMs, cap);
  const own = segments[index]!;
  own.token = t.token;
  own.expires = toTimestamp(t.expires);
  return setTokenMetadata(metadata, t);
}
