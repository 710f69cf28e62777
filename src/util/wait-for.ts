/** Thrown by a waitFor check to stop waiting at once: the condition can no longer come true. */
export class FatalError extends Error {}

/**
 * Polls `check` until it returns something truthy or the deadline passes — waiting on a condition, never on
 * a guessed sleep; the pause between checks only paces the polling. The error names what was awaited and the
 * last failure seen.
 */
export async function waitFor<T>(what: string, check: () => Promise<T> | T, timeoutMs = 10_000, everyMs = 10): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      if (e instanceof FatalError) throw e;
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
