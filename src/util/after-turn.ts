/**
 * Runs effects after the current turn of the event loop, in the order they were queued: work caused by a
 * call (announcing it, persisting it) waits until the call's answer has been written.
 */
export class AfterTurn {
  private queued: (() => void)[] = [];

  push(effect: () => void): void {
    if (this.queued.push(effect) === 1) setImmediate(this.run);
  }

  /** Runs what is queued now (e.g. before a flush to disk). */
  readonly run = (): void => {
    const effects = this.queued;
    this.queued = [];
    for (const f of effects) f();
  };
}
