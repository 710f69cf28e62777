import type * as grpc from '@grpc/grpc-js';
import type { Caller } from '../chain/types.js';
import { tokenFromMetadata } from './path-tokens.js';
import type { Transport } from './transport.js';

/** The verified caller of a server call and the path token it sent; undefined in insecure mode. */
export function callerOf(transport: Transport, call: grpc.ServerUnaryCall<unknown, unknown>): Caller | undefined {
  const peer = transport.peer(call);
  return peer ? { peer, token: tokenFromMetadata(call.metadata) } : undefined;
}
