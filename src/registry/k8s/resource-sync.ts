import { setTimeout as sleep } from 'node:timers/promises';
import type { Watch } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { CrdClient } from './api.js';
import type { ResourceKind } from './resources.js';
import { openWatch, type WatchEnd, type WatchEventType, type WatchStream } from './watch-stream.js';

export interface SyncTarget {
  /** A complete list of the kind at `resourceVersion`: whatever is not in it is gone. */
  reset(items: unknown[], resourceVersion: string): void;
  event(type: Exclude<WatchEventType, 'BOOKMARK'>, object: unknown): void;
}

export interface SyncTiming {
  /** How long the API server may take to answer a watch request. */
  connectTimeoutMs: number;
  /** Watches ask the server to end them after a random time between this and twice this, as client-go does. */
  watchTimeoutSeconds: number;
  /**
   * A watch still silent this long after the server should have ended it is taken as dead: a peer that vanished
   * (node lost, network partition) closes no socket.
   */
  watchGraceMs: number;
  backoffMinMs: number;
  backoffMaxMs: number;
}

/** A watch that lived shorter than this before failing counts as a failed attempt for the backoff. */
const HEALTHY_WATCH_MS = 5_000;

/**
 * Keeps one kind of object in step with the API server, the way an informer does: list, then watch from the
 * list's resourceVersion, and whenever the watch ends watch again from the last version seen. Only a 410 (the
 * server no longer has history that old) forces a new list, which the target turns into the difference.
 * Failures are retried with exponential backoff, with jitter so that many nsmds do not come back in step.
 */
export class ResourceSync {
  private resourceVersion: string | undefined;
  private stream: WatchStream | undefined;
  private readonly stopped = new AbortController();
  /** True while a watch is up on top of a complete list: the target then mirrors the API server. */
  private watching = false;

  constructor(
    private readonly kind: ResourceKind,
    private readonly client: CrdClient,
    private readonly watch: Watch,
    private readonly target: SyncTarget,
    private readonly timing: SyncTiming,
    private readonly logger: Logger,
  ) {}

  get live(): boolean {
    return this.watching;
  }

  /** The first list and watch; rejects with the API error when either fails, so a bad setup fails at startup. */
  async start(): Promise<void> {
    await this.list();
    const stream = await this.openStream();
    if (!stream.established) {
      const end = await stream.ended;
      throw new Error(`cannot watch ${this.kind.plural} at ${this.client.server}: ${describeEnd(end)}`);
    }
    void this.follow(stream);
  }

  stop(): void {
    this.stopped.abort();
    this.watching = false;
    this.stream?.cancel();
  }

  private async list(): Promise<void> {
    const { items, resourceVersion } = await this.client.list(this.kind);
    this.target.reset(items, resourceVersion);
    this.resourceVersion = resourceVersion;
  }

  private async openStream(): Promise<WatchStream> {
    const timeoutSeconds = Math.round(this.timing.watchTimeoutSeconds * (1 + Math.random()));
    const stream = await openWatch(
      this.watch,
      this.client.path(this.kind),
      this.resourceVersion!,
      {
        connectTimeoutMs: this.timing.connectTimeoutMs,
        idleTimeoutMs: timeoutSeconds * 1000 + this.timing.watchGraceMs,
        timeoutSeconds,
      },
      (type, object) => this.onEvent(type, object),
    );
    this.stream = stream;
    this.watching = stream.established && !this.stopped.signal.aborted;
    if (this.stopped.signal.aborted) stream.cancel();
    return stream;
  }

  private onEvent(type: WatchEventType, object: unknown): void {
    if (this.stopped.signal.aborted) return;
    const rv = (object as { metadata?: { resourceVersion?: unknown } } | null)?.metadata?.resourceVersion;
    if (typeof rv === 'string' && rv !== '') this.resourceVersion = rv;
    if (type !== 'BOOKMARK') this.target.event(type, object);
  }

  /** Runs for the registry's lifetime. */
  private async follow(first: WatchStream): Promise<void> {
    let stream: WatchStream | undefined = first;
    let openedAt = Date.now();
    let needList = false;
    let delay = this.timing.backoffMinMs;
    let failures = 0;
    while (!this.stopped.signal.aborted) {
      if (stream) {
        const end = await stream.ended;
        this.watching = false;
        if (this.stopped.signal.aborted) return;
        const healthy = Date.now() - openedAt >= HEALTHY_WATCH_MS;
        if (end.kind === 'gone') {
          this.logger.info({ kind: this.kind.plural, detail: end.detail }, 'watch history expired; listing again');
          needList = true;
        } else if (end.kind === 'failed') {
          failures = healthy ? 1 : failures + 1;
          if (failures === 1) this.logger.warn({ kind: this.kind.plural, err: end.error.message }, 'watch broke; watching again');
          else this.logger.debug({ kind: this.kind.plural, err: end.error.message, failures }, 'watch broke again');
        }
        if (healthy) delay = this.timing.backoffMinMs;
        // A healthy watch that ended normally or with a 410 is followed up at once; anything else waits its turn.
        if (!(healthy && end.kind !== 'failed')) {
          if (!(await this.pause(delay))) return;
          delay = Math.min(delay * 2, this.timing.backoffMaxMs);
        }
        stream = undefined;
      }
      try {
        if (needList) {
          await this.list();
          needList = false;
        }
        openedAt = Date.now();
        stream = await this.openStream();
      } catch (err) {
        failures++;
        if (failures === 1) this.logger.warn({ kind: this.kind.plural, err: (err as Error).message }, 'cannot list; retrying');
        if (!(await this.pause(delay))) return;
        delay = Math.min(delay * 2, this.timing.backoffMaxMs);
      }
    }
  }

  /** Sleeps `ms` ± 20 %; false when the sync was stopped meanwhile. */
  private async pause(ms: number): Promise<boolean> {
    try {
      await sleep(ms * (0.8 + Math.random() * 0.4), undefined, { signal: this.stopped.signal });
      return true;
    } catch {
      return false;
    }
  }
}

function describeEnd(end: WatchEnd): string {
  if (end.kind === 'failed') return end.error.message;
  if (end.kind === 'gone') return `resource version expired (${end.detail})`;
  return 'stream closed at once';
}
