import { spawn, type ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import { withDeadline } from './wait.js';

/** A long-running child (nsmd, an endpoint) whose stderr is read line by line. */
export class Child {
  readonly proc: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly tailLines: string[] = [];
  private done = false;

  constructor(
    readonly name: string,
    cmd: string,
    args: string[],
    env: Record<string, string>,
    onLine?: (line: string) => void,
  ) {
    this.proc = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    this.exited = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => {
        this.done = true;
        resolve({ code, signal });
      });
      // A failed spawn (ENOENT) emits 'error' and never 'exit'.
      this.proc.once('error', (e) => {
        this.done = true;
        this.tailLines.push(`spawn failed: ${e.message}`);
        resolve({ code: null, signal: null });
      });
    });
    readline.createInterface({ input: this.proc.stderr! }).on('line', (line) => {
      this.tailLines.push(line);
      if (this.tailLines.length > 40) this.tailLines.shift();
      onLine?.(line);
    });
  }

  get running(): boolean {
    return !this.done;
  }

  tail(): string {
    return this.tailLines.join('\n');
  }

  /** SIGTERM, then SIGKILL if it has not exited by the deadline. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.proc.kill('SIGTERM');
    try {
      await withDeadline(`${this.name} to exit after SIGTERM`, this.exited, graceMs);
    } catch {
      this.proc.kill('SIGKILL');
      await withDeadline(`${this.name} to exit after SIGKILL`, this.exited, 5000).catch(() => undefined);
    }
  }
}
