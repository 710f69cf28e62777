/** What every demo does around its own steps: print, tear down on every way out, exit with a code. */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';

export const say = (s: string) => process.stdout.write(`${s}\n`);

/**
 * Runs `main`, then `teardown` — also on Ctrl-C, SIGTERM and failure, and when output is piped into a reader
 * that closes early (`| head`), so no namespace or process is ever left behind.
 */
export async function runDemo(main: () => Promise<void>, teardown: () => Promise<void>, finished: string): Promise<void> {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      void teardown().then(() => process.exit(130));
    });
  }
  process.stdout.on('error', () => {
    void teardown().then(() => process.exit(1));
  });
  try {
    await main();
    await teardown();
    say(`\n${finished}`);
  } catch (e) {
    process.stderr.write(`demo failed: ${(e as Error).message}\n`);
    await teardown();
    process.exit(1);
  }
}

/**
 * The namespaces and processes a demo makes, all named `nsmdemo-<tag>-*`, and the temporary directory they use;
 * release() stops the processes (last started first), deletes the namespaces and the directory.
 */
export class DemoLab {
  readonly tag = randomBytes(2).toString('hex');
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsmesh-demo-'));
  readonly namespaces: string[] = [];
  private readonly procs: ResultPromise[] = [];
  private readonly tails = new Map<ResultPromise, string>();

  nsName(n: string): string {
    return `nsmdemo-${this.tag}-${n}`;
  }

  async netns(n: string): Promise<string> {
    const full = this.nsName(n);
    await execa('ip', ['netns', 'add', full]);
    this.namespaces.push(full);
    await execa('ip', ['-n', full, 'link', 'set', 'lo', 'up']);
    return full;
  }

  /** A process inside a namespace; the end of its stderr is kept for tail(). */
  spawnIn(ns: string, cmd: string[], env: Record<string, string>): ResultPromise {
    const p = execa('ip', ['netns', 'exec', ns, ...cmd], { env, reject: false, stdout: 'ignore', stderr: 'pipe' });
    this.tails.set(p, '');
    p.stderr?.on('data', (d: Buffer) => this.tails.set(p, (this.tails.get(p)! + d.toString()).slice(-8000)));
    this.procs.push(p);
    return p;
  }

  tail(p: ResultPromise): string {
    return this.tails.get(p) ?? '';
  }

  /** `beforeNamespaces` runs once the processes are gone and before the namespaces go (a lab's own links). */
  async release(beforeNamespaces: () => Promise<void> = async () => {}): Promise<void> {
    for (const p of [...this.procs].reverse()) p.kill('SIGTERM');
    await Promise.allSettled(this.procs);
    await beforeNamespaces();
    for (const n of this.namespaces) await execa('ip', ['netns', 'del', n], { reject: false });
    fs.rmSync(this.dir, { recursive: true, force: true });
    say(`removed ${this.namespaces.length} namespaces and ${this.procs.length} processes`);
  }
}
