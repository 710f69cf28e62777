/**
 * Upstream spreads load with one counter per network-service name (`roundrobin.roundRobinSelector`), shared by
 * every request of the process, and tries each candidate in turn until one Request succeeds.
 */
export class RoundRobin {
  private readonly counters = new Map<string, number>();

  /**
   * One candidate, advancing the counter by one: exactly upstream's selectEndpoint. Returns undefined when
   * there are no candidates (the counter does not move).
   */
  pick<T>(key: string, candidates: readonly T[]): T | undefined {
    if (candidates.length === 0) return undefined;
    const n = this.counters.get(key) ?? 0;
    this.counters.set(key, n + 1);
    return candidates[n % candidates.length];
  }

  /**
   * All candidates, rotated to start at the current offset, advancing the counter by one. A caller tries them
   * in this order; successive calls start one further along, so load spreads even when the first try succeeds.
   */
  order<T>(key: string, candidates: readonly T[]): T[] {
    if (candidates.length === 0) return [];
    const n = this.counters.get(key) ?? 0;
    this.counters.set(key, n + 1);
    const start = n % candidates.length;
    return [...candidates.slice(start), ...candidates.slice(0, start)];
  }

  /** Forgets a key, e.g. when its network service is unregistered, so the map does not grow forever. */
  forget(key: string): void {
    this.counters.delete(key);
  }
}
