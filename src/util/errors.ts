import { status, Metadata, type ServiceError } from '@grpc/grpc-js';

export { status };

/** An error that carries the gRPC status a caller should see and a message a person can act on. */
export class MeshError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
    this.name = 'MeshError';
  }
}

export const invalidArgument = (msg: string) => new MeshError(status.INVALID_ARGUMENT, msg);
export const notFound = (msg: string) => new MeshError(status.NOT_FOUND, msg);
export const permissionDenied = (msg: string) => new MeshError(status.PERMISSION_DENIED, msg);
export const unavailable = (msg: string) => new MeshError(status.UNAVAILABLE, msg);
export const failedPrecondition = (msg: string) => new MeshError(status.FAILED_PRECONDITION, msg);
export const deadlineExceeded = (msg: string) => new MeshError(status.DEADLINE_EXCEEDED, msg);
export const resourceExhausted = (msg: string) => new MeshError(status.RESOURCE_EXHAUSTED, msg);
export const internal = (msg: string) => new MeshError(status.INTERNAL, msg);

export function isServiceError(e: unknown): e is ServiceError {
  return e instanceof Error && typeof (e as Partial<ServiceError>).code === 'number' && 'metadata' in e;
}

/** The gRPC status of anything thrown: ours, one relayed from another hop, or an unexpected bug (INTERNAL). */
export function statusOf(e: unknown): status {
  if (e instanceof MeshError) return e.code;
  if (isServiceError(e)) return e.code;
  return status.INTERNAL;
}

export function messageOf(e: unknown): string {
  if (isServiceError(e)) return e.details || e.message;
  return e instanceof Error ? e.message : String(e);
}

/** Turns anything thrown into what grpc-js sends back to the caller. */
export function toServiceError(e: unknown): Partial<ServiceError> {
  return { code: statusOf(e), details: messageOf(e), metadata: new Metadata() };
}
