import type { Logger } from 'pino';
import { ExpiryTimer } from '../embedded/expiry-timer.js';

interface Tracked {
  resourceVersion: string;
  dueAtMs: number;
}

export interface CleanupPolicy {
  /** How long after expiry an nsmd deletes an endpoint object it did not register itself. */
  foreignGraceMs: number;
  /** Wait before trying again when a delete failed (API unreachable). */
  retryMs: number;
}

/**
 * Deletes NetworkServiceEndpoint objects whose expiration_time has passed. The API server has no TTL for custom
 * resources, so without this every endpoint of a crashed nsmd would stay in the cluster forever (readers already
 * ignore it; this keeps `kubectl get` and the API server's storage honest).
 *
 * Several nsmds share the namespace, so any of them may delete any lapsed object, and doing it twice is harmless:
 * - each delete is conditional on the resourceVersion seen expired, so a registration refreshed meanwhile (by any
 *   nsmd) is never removed — the API answers 409 and the refreshed object stays;
 * - the registering nsmd deletes its own at expiry; the others wait `foreignGraceMs` more (with jitter), so the
 *   usual case is one delete, not one per node, and a clock running a little fast on one node cannot remove
 *   another node's endpoints early.
 */
export class ExpiredEndpointCleanup {
  private readonly tracked = new Map<string, Tracked>();
  private readonly timer: ExpiryTimer;
  private stopped = false;

  constructor(
    private readonly remove: (objectName: string, resourceVersion: string) => Promise<string>,
    private readonly policy: CleanupPolicy,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.timer = new ExpiryTimer(now, () => this.sweep());
  }

  /** The object as last seen; replaces what was tracked for it. Infinite expiry (no expiration_time) is never due. */
  track(objectName: string, resourceVersion: string, expiresAtMs: number, own: boolean): void {
    if (this.stopped) return;
    if (!Number.isFinite(expiresAtMs)) {
      this.forget(objectName);
      return;
    }
    const grace = own ? 0 : this.policy.foreignGraceMs * (1 + Math.random() / 2);
    const dueAtMs = expiresAtMs + grace;
    this.tracked.set(objectName, { resourceVersion, dueAtMs });
    this.timer.armBy(dueAtMs);
  }

  forget(objectName: string): void {
    this.tracked.delete(objectName);
  }

  stop(): void {
    this.stopped = true;
    this.timer.stop();
    this.tracked.clear();
  }

  private sweep(): void {
    if (this.stopped) return;
    const now = this.now();
    let next: number | undefined;
    for (const [name, t] of this.tracked) {
      if (t.dueAtMs <= now) {
        this.tracked.delete(name);
        void this.delete(name, t);
      } else if (next === undefined || t.dueAtMs < next) {
        next = t.dueAtMs;
      }
    }
    this.timer.rearm(next);
  }

  private async delete(name: string, t: Tracked): Promise<void> {
    try {
      const outcome = await this.remove(name, t.resourceVersion);
      if (outcome === 'deleted') this.logger.info({ nse: name }, 'deleted expired network service endpoint object');
      else this.logger.debug({ nse: name, outcome }, 'expired endpoint object already gone or refreshed; left alone');
    } catch (err) {
      if (this.stopped) return;
      this.logger.warn({ nse: name, err: (err as Error).message }, 'could not delete expired endpoint object; will retry');
      // Unless a newer version was seen meanwhile (and is tracked in its own right), try this one again later.
      if (!this.tracked.has(name)) {
        const dueAtMs = this.now() + this.policy.retryMs;
        this.tracked.set(name, { ...t, dueAtMs });
        this.timer.armBy(dueAtMs);
      }
    }
  }
}
