import type { Timestamp } from '../api/types.js';

/** Milliseconds since the epoch; sub-millisecond nanos are dropped (timers cannot use them anyway). */
export function timestampToMs(ts: Timestamp): number {
  return ts.seconds * 1000 + Math.floor(ts.nanos / 1e6);
}

export function msToTimestamp(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/** Negative, zero or positive like a sort comparator; exact to the nanosecond. */
export function compareTimestamps(a: Timestamp, b: Timestamp): number {
  return a.seconds !== b.seconds ? a.seconds - b.seconds : a.nanos - b.nanos;
}
