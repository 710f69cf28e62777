const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses Go-style durations as upstream's configuration uses them: "750ms", "15s", "10m", "1h30m". */
export function parseDuration(text: string): number {
  const t = text.trim();
  if (t === '0') return 0;
  if (/^\d+$/.test(t)) throw new Error(`duration "${text}" has no unit: write e.g. 750ms, 15s, 10m or 1h`);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let matched = 0;
  for (let m = re.exec(t); m; m = re.exec(t)) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    matched = re.lastIndex;
  }
  if (t.length === 0 || matched !== t.length) throw new Error(`invalid duration "${text}": write e.g. 750ms, 15s, 10m or 1h`);
  return total;
}

export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
