/**
 * Runs `write` at most once per `delayMs` however often `schedule` is called, and never two at once. `write`
 * must snapshot the state when it runs, so the last write always contains the latest changes.
 */
export class CoalescedWriter {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private dirty = false;

  constructor(
    private readonly write: () => Promise<void>,
    private readonly delayMs: number,
    private readonly onError: (err: unknown) => void,
  ) {}

  schedule(): void {
    this.dirty = true;
    if (this.timer || this.running) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.runOnce().catch(this.onError);
    }, this.delayMs);
  }

  /** Writes any pending change now and waits for it; rejects if that write fails. */
  async flush(): Promise<void> {
    for (;;) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      // A write under way may predate the latest change, so wait for it and look again.
      if (this.running) {
        await this.running;
        continue;
      }
      if (!this.dirty) return;
      await this.runOnce();
    }
  }

  private runOnce(): Promise<void> {
    this.dirty = false;
    const p = (async () => this.write())();
    this.running = p.then(
      () => {
        this.running = undefined;
        // Changes that arrived during the write found `running` set and only marked dirty.
        if (this.dirty) this.schedule();
      },
      () => {
        this.running = undefined;
        // Keep the change pending, but do not retry in a loop: the next schedule() or flush() tries again.
        this.dirty = true;
      },
    );
    return p;
  }
}
