import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, found from the compiled file's place in dist/bench/lib/. */
export const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

/** Nearest-rank percentile: always a value that was actually observed. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

export const round = (v: number, digits = 2) => Math.round(v * 10 ** digits) / 10 ** digits;

/** Figures in the order they were measured, printed as `key: value unit` the moment they are known. */
export class Metrics {
  private readonly values: Record<string, number> = {};

  set(key: string, value: number, unit: string): void {
    const v = Number.isInteger(value) ? value : round(value);
    this.values[key] = v;
    process.stdout.write(`${key}: ${v} ${unit}\n`);
  }

  get(key: string): number | undefined {
    return this.values[key];
  }

  /** bench/results/<bench>.json; results are per machine and run, so they are not committed. */
  write(bench: string): string {
    const dir = path.join(ROOT, 'bench', 'results');
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${bench}.json`);
    fs.writeFileSync(file, `${JSON.stringify({ bench, metrics: this.values }, null, 2)}\n`);
    return file;
  }
}

/** Progress and diagnostics go to stderr so that stdout carries only the figures. */
export function note(text: string): void {
  process.stderr.write(`[bench] ${text}\n`);
}
