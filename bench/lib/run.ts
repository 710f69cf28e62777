import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Cleanups } from './cleanup.js';
import { BenchNamespaces, sweepStale } from './netns.js';
import { Metrics, note, ROOT } from './report.js';

export interface BenchRun {
  nss: BenchNamespaces;
  tmp: string;
  m: Metrics;
}

/**
 * What every bench does first: remove what a killed earlier run left, make this run's namespaces and
 * temporary directory (both undone by `cleanups`), and start the metrics with the host's load — every figure
 * is CPU-bound on a small machine, so a busy host (a build, tests) skews them all.
 */
export async function startRun(cleanups: Cleanups): Promise<BenchRun> {
  const stale = await sweepStale();
  if (stale.length) note(`removed namespaces left by earlier runs: ${stale.join(' ')}`);
  const nss = new BenchNamespaces();
  cleanups.push(async () => {
    const removed = await nss.cleanup();
    note(`deleted namespaces: ${removed.join(' ') || '(none)'}`);
  });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `nsmesh-bench-${nss.tag}-`));
  cleanups.push(async () => fs.rmSync(tmp, { recursive: true, force: true }));
  note(`run tag ${nss.prefix}, ${os.cpus().length} CPUs, node ${process.version}`);
  const m = new Metrics();
  m.set('host_loadavg_1m_at_start', os.loadavg()[0]!, 'load');
  return { nss, tmp, m };
}

/** Writes the results, says which targets were met, and gives the exit code: failures (not missed targets) fail. */
export function finishRun(bench: string, m: Metrics, targets: [string, boolean][], failures: string[]): number {
  const file = m.write(bench);
  note(`wrote ${path.relative(ROOT, file)}`);
  for (const [what, met] of targets) note(`target ${met ? 'met' : 'MISSED'}: ${what}`);
  for (const f of failures) process.stderr.write(`FAILED: ${f}\n`);
  return failures.length ? 1 : 0;
}

/** Runs a bench's main with its cleanups on every way out, then exits with its code. */
export async function runBench(cleanups: Cleanups, main: () => Promise<number>): Promise<never> {
  cleanups.onSignals();
  let code = 1;
  try {
    code = await main();
  } catch (e) {
    if (!cleanups.interrupted) process.stderr.write(`error: ${(e as Error).message}\n`);
  } finally {
    await cleanups.run();
  }
  process.exit(code);
}
