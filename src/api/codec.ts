import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import type * as grpc from '@grpc/grpc-js';
import { services, type MessageTypes } from './gen/types.js';

export type ServiceName = keyof typeof services;
export type MethodName<S extends ServiceName> = keyof (typeof services)[S] & string;
type MethodInfo<S extends ServiceName, M extends MethodName<S>> = (typeof services)[S][M] extends {
  request: infer Q extends keyof MessageTypes;
  response: infer R extends keyof MessageTypes;
  responseStream: infer RS;
}
  ? { request: MessageTypes[Q]; response: MessageTypes[R]; responseStream: RS }
  : never;
export type RequestOf<S extends ServiceName, M extends MethodName<S>> = MethodInfo<S, M>['request'];
export type ResponseOf<S extends ServiceName, M extends MethodName<S>> = MethodInfo<S, M>['response'];

/** What may be sent: any field can be left out, the codec fills proto3 defaults. */
export type DeepPartial<T> = T extends (infer U)[]
  ? DeepPartial<U>[]
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> | null }
    : T;

/** Server handlers for one service, typed by the generated message types. */
export type Handlers<S extends ServiceName> = {
  [M in MethodName<S>]: MethodInfo<S, M>['responseStream'] extends true
    ? grpc.handleServerStreamingCall<RequestOf<S, M>, DeepPartial<ResponseOf<S, M>>>
    : grpc.handleUnaryCall<RequestOf<S, M>, DeepPartial<ResponseOf<S, M>>>;
};

/** The project root holds proto/; found by walking up so that both src/ (tests) and dist/ work. */
function findProtoDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, 'proto');
    if (fs.existsSync(path.join(candidate, 'connection.proto'))) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('proto/ directory not found above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
}

let root: protobuf.Root | undefined;
function protoRoot(): protobuf.Root {
  if (root) return root;
  const dir = findProtoDir();
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => (target.startsWith('google/') ? target : path.join(dir, path.basename(target)));
  r.loadSync(
    fs.readdirSync(dir).filter((f) => f.endsWith('.proto')),
    { keepCase: true },
  );
  r.resolveAll();
  root = r;
  return r;
}

const toObjectOptions: protobuf.IConversionOptions = {
  longs: Number,
  enums: String,
  defaults: true,
  arrays: true,
  objects: true,
};

export interface MessageCodec<T> {
  encode(value: DeepPartial<T>): Buffer;
  decode(bytes: Uint8Array): T;
  /** Normalises a partial object to the fully defaulted decoded shape. */
  normalize(value: DeepPartial<T>): T;
}

const codecs = new Map<string, MessageCodec<unknown>>();
export function messageCodec<K extends keyof MessageTypes>(name: K): MessageCodec<MessageTypes[K]> {
  const cached = codecs.get(name);
  if (cached) return cached as MessageCodec<MessageTypes[K]>;
  const type = protoRoot().lookupType(name);
  const codec: MessageCodec<MessageTypes[K]> = {
    encode: (value) => Buffer.from(type.encode(type.fromObject(value as object)).finish()),
    decode: (bytes) => type.toObject(type.decode(bytes), toObjectOptions) as MessageTypes[K],
    normalize: (value) => type.toObject(type.fromObject(value as object), toObjectOptions) as MessageTypes[K],
  };
  codecs.set(name, codec as MessageCodec<unknown>);
  return codec;
}

/** A grpc-js service definition for one of the API's services. */
export function serviceDefinition(name: ServiceName): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const [method, info] of Object.entries(services[name])) {
    const req = messageCodec(info.request);
    const res = messageCodec(info.response);
    def[method] = {
      path: `/${name}/${method}`,
      requestStream: info.requestStream,
      responseStream: info.responseStream,
      requestSerialize: (v: object) => req.encode(v as never),
      requestDeserialize: (b: Buffer) => req.decode(b),
      responseSerialize: (v: object) => res.encode(v as never),
      responseDeserialize: (b: Buffer) => res.decode(b),
    };
  }
  return def as grpc.ServiceDefinition;
}
