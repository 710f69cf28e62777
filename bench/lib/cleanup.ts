import { note } from './report.js';

/**
 * Undo steps for a bench run, run newest first exactly once, whichever of normal end, failure or signal
 * comes first: later steps (processes) usually depend on earlier ones (namespaces, directories) existing.
 */
export class Cleanups {
  private readonly steps: (() => Promise<unknown>)[] = [];
  private running: Promise<void> | undefined;
  /** Set on a signal: the failures that follow (the run's processes being stopped under it) are noise then. */
  interrupted = false;

  push(step: () => Promise<unknown>): void {
    this.steps.push(step);
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      for (const step of this.steps.reverse()) {
        try {
          await step();
        } catch (e) {
          note(`cleanup step failed: ${(e as Error).message}`);
        }
      }
    })();
    return this.running;
  }

  /** Ctrl-C, kill and a closed terminal all clean up before exiting with the conventional code. */
  onSignals(): void {
    for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
      process.on(sig, () => {
        this.interrupted = true;
        note(`${sig}: cleaning up`);
        void this.run().finally(() => process.exit(code));
      });
    }
  }
}
