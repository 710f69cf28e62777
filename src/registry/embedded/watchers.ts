import type { Logger } from 'pino';
import type { Unsubscribe } from '../types.js';

interface Watcher<E> {
  accepts: (event: E) => boolean;
  onEvent: (event: E) => void;
  queue: E[];
  flushing: boolean;
  active: boolean;
}

/**
 * Fans registry events out to subscribers. Delivery is asynchronous (a microtask) and in order per watcher so a
 * callback never runs inside register/unregister, never before `watch()` has returned its Unsubscribe, and a
 * throwing callback cannot break the registry or other watchers.
 */
export class WatcherSet<E> {
  private readonly watchers = new Set<Watcher<E>>();

  constructor(private readonly logger: Logger) {}

  /** `initial` is delivered first (the current matches, like upstream Find with watch=true), then changes. */
  subscribe(accepts: (event: E) => boolean, onEvent: (event: E) => void, initial: readonly E[]): Unsubscribe {
    const w: Watcher<E> = { accepts, onEvent, queue: [], flushing: false, active: true };
    this.watchers.add(w);
    for (const e of initial) this.enqueue(w, e);
    return () => {
      w.active = false;
      w.queue.length = 0;
      this.watchers.delete(w);
    };
  }

  publish(event: E): void {
    for (const w of this.watchers) {
      if (w.accepts(event)) this.enqueue(w, event);
    }
  }

  closeAll(): void {
    for (const w of this.watchers) {
      w.active = false;
      w.queue.length = 0;
    }
    this.watchers.clear();
  }

  get size(): number {
    return this.watchers.size;
  }

  private enqueue(w: Watcher<E>, event: E): void {
    // Each watcher gets its own copy: one subscriber mutating an event must not change what another sees.
    w.queue.push(structuredClone(event));
    if (w.flushing) return;
    w.flushing = true;
    queueMicrotask(() => this.flush(w));
  }

  private flush(w: Watcher<E>): void {
    while (w.active && w.queue.length > 0) {
      const event = w.queue.shift()!;
      try {
        w.onEvent(event);
      } catch (err) {
        this.logger.warn({ err }, 'registry watcher callback threw; event dropped for that watcher');
      }
    }
    w.flushing = false;
  }
}
