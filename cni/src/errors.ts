/**
 * CNI error results. The spec reserves codes 1–99 for well-known conditions a runtime may act on (11 means
 * "retry the same call later"); 100 and up are this plugin's own.
 */
export const CniCode = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  CONTAINER_UNKNOWN: 3,
  INVALID_ENV: 4,
  IO_FAILURE: 5,
  DECODING_FAILURE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  /** nsmd refused or failed the Request (the gRPC status is in details). */
  MESH_REQUEST_FAILED: 100,
  /** CHECK: an interface this plugin added is missing from the container or lacks its addresses. */
  INTERFACE_MISMATCH: 101,
  /** CHECK: nsmd no longer has a connection this plugin made, or it is not UP. */
  CONNECTION_MISSING: 102,
  /** The pod's annotation could not be read from the Kubernetes API. */
  POD_LOOKUP_FAILED: 103,
  /** A bug in this plugin. */
  INTERNAL: 999,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message);
    this.name = 'CniError';
  }
}

/** The error object the spec puts on stdout. */
export function cniErrorObject(cniVersion: string, e: unknown): { cniVersion: string; code: number; msg: string; details: string } {
  if (e instanceof CniError) return { cniVersion, code: e.code, msg: e.message, details: e.details };
  // Anything else is a bug in this plugin: still answer in the spec's form so the runtime can report it.
  return { cniVersion, code: CniCode.INTERNAL, msg: `nsm-cni internal error: ${e instanceof Error ? e.message : String(e)}`, details: e instanceof Error ? (e.stack ?? '') : '' };
}
