import { pino, type Logger } from 'pino';
import type { Registry } from '../types.js';
import { createEtcdClient, EtcdCaller, EtcdRegistryError } from './client.js';
import { EtcdRegistry } from './etcd-registry.js';
import { hostPortProblem } from './url.js';

export { EtcdRegistryError } from './client.js';
export { parseEtcdRegistryUrl } from './url.js';

export const DEFAULT_ETCD_PREFIX = '/nsmesh/registry/';
/** Upstream's defaultExpiration, as in the embedded registry. */
export const DEFAULT_MAX_EXPIRATION_MS = 60_000;
/**
 * Long enough for a loaded etcd to commit a write (fsync on slow disks), short enough that a request chain
 * waiting on the registry fails well before upstream's 15 s request deadlines.
 */
export const DEFAULT_ETCD_DIAL_TIMEOUT_MS = 3_000;

export interface EtcdRegistryOptions {
  /** Client endpoints of one etcd cluster, host:port each (see parseEtcdRegistryUrl). */
  endpoints: string[];
  /** Key prefix of all records; must end with '/'. Default '/nsmesh/registry/'. */
  prefix?: string;
  /** Upper bound on an endpoint's expiration_time, counted from its (re-)registration. Default 60 s. */
  maxExpirationMs?: number;
  logger?: Logger;
  /** How long connecting to etcd may take, for the first connection and for every call. Default 3 s. */
  dialTimeoutMs?: number;
  /** Deadline of each etcd call, connection included; defaults to dialTimeoutMs. */
  callTimeoutMs?: number;
}

/**
 * A Registry stored in etcd v3, shared by every nsmd pointed at the same cluster and prefix.
 *
 * - Records: protobuf-encoded registry.NetworkService at `<prefix>ns/<name>` and
 *   registry.NetworkServiceEndpoint at `<prefix>nse/<name>`; each endpoint key has a lease of its own whose
 *   TTL (whole seconds, rounded up) covers its expiration_time, so endpoints of a dead nsmd vanish by themselves.
 * - Watchers get the current matches first, then changes, including deleted=true on unregister and expiry.
 * - Every call has a deadline; while etcd is unreachable calls reject with an EtcdRegistryError naming it.
 *   Watches and this instance's own registrations survive etcd restarts, member failures and a wiped data dir.
 * - close() leaves registrations in etcd (see EtcdRegistry.close).
 *
 * Resolves once etcd has answered a full read and the watch is running; rejects if that does not happen
 * within the dial timeout, so a wrong address fails at startup rather than at the first request.
 */
export async function createEtcdRegistry(opts: EtcdRegistryOptions): Promise<Registry> {
  if (opts.endpoints.length === 0) throw new RangeError('etcd registry needs at least one endpoint');
  for (const e of opts.endpoints) {
    const why = hostPortProblem(e);
    if (why) throw new RangeError(`invalid etcd endpoint: ${why}`);
  }
  const prefix = opts.prefix ?? DEFAULT_ETCD_PREFIX;
  // Without the trailing '/', '/a/registry' would also cover '/a/registry2/...' of another mesh.
  if (!prefix.endsWith('/')) {
    throw new RangeError(`etcd registry prefix must end with '/', got ${JSON.stringify(prefix)}`);
  }
  const maxExpirationMs = opts.maxExpirationMs ?? DEFAULT_MAX_EXPIRATION_MS;
  if (!(maxExpirationMs > 0)) throw new RangeError(`maxExpirationMs must be positive, got ${maxExpirationMs}`);
  const dialTimeoutMs = opts.dialTimeoutMs ?? DEFAULT_ETCD_DIAL_TIMEOUT_MS;
  const callTimeoutMs = opts.callTimeoutMs ?? dialTimeoutMs;
  if (!(dialTimeoutMs > 0) || !(callTimeoutMs > 0)) throw new RangeError('etcd timeouts must be positive');
  const logger = opts.logger ?? pino({ level: 'silent' });

  const client = createEtcdClient(opts.endpoints);
  const where = opts.endpoints.join(',');
  const registry = new EtcdRegistry(client, new EtcdCaller(where, callTimeoutMs), {
    prefix,
    maxExpirationMs,
    callTimeoutMs,
    logger,
  });
  let timer: NodeJS.Timeout | undefined;
  const dialDeadline = new Promise<never>((_, reject) => {
    const message = `registry etcd at ${where} unreachable: no answer within ${dialTimeoutMs} ms`;
    timer = setTimeout(() => reject(new EtcdRegistryError(message, true)), dialTimeoutMs);
  });
  try {
    await Promise.race([registry.start(), dialDeadline]);
  } catch (err) {
    await registry.close();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return registry;
}
