import { pino, type Logger } from 'pino';
import type { Registry } from '../types.js';
import { CoalescedWriter } from '../../util/coalesced-writer.js';
import { EmbeddedRegistry } from './embedded-registry.js';
import { readState, writeState } from './state-file.js';

export { RegistryRequestError } from './embedded-registry.js';

/** Upstream's defaultExpiration in nsmgr and the memory registry. */
export const DEFAULT_MAX_EXPIRATION_MS = 60_000;
/** Long enough to fold a burst of registrations into one write, short enough that a crash loses little. */
export const DEFAULT_PERSIST_DELAY_MS = 100;

export interface EmbeddedRegistryOptions {
  /** Where live registrations survive a restart; without it the registry is memory only. */
  stateFile?: string;
  /** Upper bound on an endpoint's expiration_time, counted from its (re-)registration. */
  maxExpirationMs?: number;
  logger?: Logger;
  /** Milliseconds since the epoch; injectable so tests can move time. */
  now?: () => number;
  /** How long changes are gathered before one state-file write. */
  persistDelayMs?: number;
}

/**
 * An in-process registry with upstream memory-registry semantics (Find templates, expiry with deleted events).
 * Watchers first receive every current match (deleted=false), then changes, like upstream Find with watch=true,
 * so a gRPC Find(watch=true) maps onto one watch call without a find/watch race.
 */
export async function createEmbeddedRegistry(opts: EmbeddedRegistryOptions = {}): Promise<Registry> {
  const logger = opts.logger ?? pino({ level: 'silent' });
  const now = opts.now ?? Date.now;
  const maxExpirationMs = opts.maxExpirationMs ?? DEFAULT_MAX_EXPIRATION_MS;
  if (!(maxExpirationMs > 0)) throw new RangeError(`maxExpirationMs must be positive, got ${maxExpirationMs}`);

  const file = opts.stateFile;
  const initial = file ? await readState(file, logger) : { services: [], endpoints: [] };
  const persistence = file
    ? new CoalescedWriter(
        () => writeState(file, registry.snapshot()),
        opts.persistDelayMs ?? DEFAULT_PERSIST_DELAY_MS,
        (err) => logger.error({ err, file }, 'failed to write registry state; will retry on the next change'),
      )
    : undefined;
  const registry: EmbeddedRegistry = new EmbeddedRegistry({ maxExpirationMs, logger, now, persistence }, initial);
  return registry;
}
