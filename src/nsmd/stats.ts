import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Logger } from '../util/log.js';

export interface StatsReporter {
  stop(): void;
}

/**
 * The histogram samples the loop with a timer of this period, so a stall is under-reported by at most this
 * much. 2 ms keeps that error small next to the stalls worth knowing about at negligible cost.
 */
const RESOLUTION_MS = 2;

/** The histogram records whole timer periods, so the part beyond the period is the loop's delay. */
const delayMs = (ns: number) => Math.max(0, Math.round((ns / 1e6 - RESOLUTION_MS) * 100) / 100);

/**
 * Logs one `stats` line per interval: memory, live connections, and the event loop's delay over that
 * interval (the histogram is reset after each line, so each line's max is that interval's worst stall).
 * An interval of 0 turns it off.
 */
export function startStatsReporter(intervalMs: number, log: Logger, connections: () => number): StatsReporter {
  if (intervalMs <= 0) return { stop() {} };
  const h = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  h.enable();
  const timer = setInterval(() => {
    const mem = process.memoryUsage();
    // With no sample yet the histogram reports max 0 but p99 as a huge sentinel; report both as 0.
    const sampled = h.count > 0;
    log.info(
      {
        rssBytes: mem.rss,
        heapUsedBytes: mem.heapUsed,
        connections: connections(),
        eventLoopDelayMaxMs: sampled ? delayMs(h.max) : 0,
        eventLoopDelayP99Ms: sampled ? delayMs(h.percentile(99)) : 0,
      },
      'stats',
    );
    h.reset();
  }, intervalMs);
  // Reporting must never be what keeps nsmd alive.
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      h.disable();
    },
  };
}
