import type { Timestamp } from '../../api/types.js';

/*
 * Readers for spec fields that hand-written objects spell in several ways. Each returns the value or a problem
 * that names the field and says what is accepted.
 */

/** A value read from an object, or why it could not be. */
export type Checked<T> = { ok: T } | { problem: string };

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

export function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A list of strings; missing or null is the empty list, as proto3 decodes it. */
export function stringList(v: unknown, field: string): Checked<string[]> {
  if (v === undefined || v === null) return { ok: [] };
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
    return { problem: `${field}: expected a list of strings, got ${describe(v)}` };
  }
  return { ok: [...v] };
}

export function stringMap(v: unknown, field: string): Checked<Record<string, string>> {
  if (v === undefined || v === null) return { ok: {} };
  if (!isMapping(v)) return { problem: `${field}: expected a map of string to string, got ${describe(v)}` };
  for (const [k, value] of Object.entries(v)) {
    if (typeof value !== 'string') {
      return { problem: `${field}.${k}: expected a string (quote numbers and booleans), got ${describe(value)}` };
    }
  }
  return { ok: { ...(v as Record<string, string>) } };
}

const RFC3339 = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/i;
const MAX_NANOS = 999_999_999;

/**
 * A google.protobuf.Timestamp as Go's encoding/json writes the struct (`{seconds, nanos}`, what upstream
 * registry-k8s stores) or as protojson writes it (an RFC 3339 string). Missing or null is unset.
 */
export function timestamp(v: unknown, field: string): Checked<Timestamp | null> {
  if (v === undefined || v === null) return { ok: null };
  const accepted = `expected {seconds, nanos} or an RFC 3339 time such as "2024-05-01T10:00:00Z"`;
  if (typeof v === 'string') {
    const m = RFC3339.exec(v);
    const ms = m ? Date.parse(`${m[1]}${m[3]}`) : NaN;
    if (!m || Number.isNaN(ms)) return { problem: `${field}: ${accepted}, got ${JSON.stringify(v)}` };
    return { ok: { seconds: ms / 1000, nanos: Number((m[2] ?? '').padEnd(9, '0')) } };
  }
  if (!isMapping(v)) return { problem: `${field}: ${accepted}, got ${describe(v)}` };
  // protojson writes int64 as a string; Go's encoding/json as a number.
  const seconds = typeof v.seconds === 'string' && /^-?\d+$/.test(v.seconds) ? Number(v.seconds) : (v.seconds ?? 0);
  const nanos = v.nanos ?? 0;
  const extra = Object.keys(v).filter((k) => k !== 'seconds' && k !== 'nanos');
  if (!Number.isSafeInteger(seconds) || !Number.isInteger(nanos) || (nanos as number) < 0 || (nanos as number) > MAX_NANOS || extra.length > 0) {
    return { problem: `${field}: ${accepted} (whole seconds, nanos 0-${MAX_NANOS}), got ${JSON.stringify(v)}` };
  }
  return { ok: { seconds: seconds as number, nanos: nanos as number } };
}
