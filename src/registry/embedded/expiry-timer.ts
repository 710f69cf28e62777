/** setTimeout cannot wait longer than this; a later deadline is reached by re-arming. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/**
 * One timer for the earliest deadline of a whole collection, instead of one per record: with thousands of
 * endpoints refreshing every 40 s, per-record timers would mean constant clearTimeout/setTimeout churn.
 * The owner calls `due` from `onDue`, removes what is due and re-arms with the next deadline.
 */
export class ExpiryTimer {
  private timer: NodeJS.Timeout | undefined;
  private deadline = Infinity;

  constructor(
    private readonly now: () => number,
    private readonly onDue: () => void,
  ) {}

  /** Makes sure the timer fires no later than `at` (ms since the epoch). */
  armBy(at: number): void {
    if (at < this.deadline) this.arm(at);
  }

  /** Replaces the deadline; undefined stops the timer. */
  rearm(at: number | undefined): void {
    if (at === undefined) this.stop();
    else if (at !== this.deadline || !this.timer) this.arm(at);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.deadline = Infinity;
  }

  private arm(at: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.deadline = at;
    const delay = Math.min(Math.max(at - this.now(), 0), MAX_TIMEOUT_MS);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.deadline = Infinity;
      this.onDue();
    }, delay);
    // Expiry bookkeeping alone must not keep a process alive; close() stops the timer explicitly anyway.
    this.timer.unref();
  }
}
