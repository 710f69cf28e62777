import { silentLogger, type Logger } from '../util/log.js';

/**
 * Tries `attempt` on each target in the given order (already RFC 2782-ordered by the resolver) and returns
 * the first success. A target that fails or does not answer is logged and the next one is tried; only when
 * all have failed does the caller see an error, and it names every target and why it failed.
 */
export async function pickInOrder<T extends { url: string }, R>(
  targets: readonly T[],
  attempt: (target: T) => Promise<R>,
  log: Logger = silentLogger,
): Promise<{ target: T; result: R }> {
  if (targets.length === 0) throw new Error('no targets to try');
  const failures: string[] = [];
  const errors: unknown[] = [];
  for (const target of targets) {
    try {
      return { target, result: await attempt(target) };
    } catch (e) {
      log.debug({ url: target.url, err: e }, 'target did not answer, trying the next');
      failures.push(`${target.url}: ${(e as Error)?.message ?? String(e)}`);
      errors.push(e);
    }
  }
  throw new AggregateError(errors, `all ${targets.length} targets failed: ${failures.join('; ')}`);
}
