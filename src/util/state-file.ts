import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from './log.js';

/**
 * A JSON file written atomically (temp file + rename, mode 0600) with writes coalesced: a burst of
 * changes produces one write, and the last state always reaches the disk.
 */
export class StateFile<T> {
  private pending: T | undefined;
  private writing: Promise<void> | undefined;

  constructor(
    readonly file: string,
    private readonly log: Logger,
  ) {}

  /** Reads the file; a missing file is `undefined`, a corrupt one is moved aside and reported. */
  load(): T | undefined {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try {
      return JSON.parse(text) as T;
    } catch (e) {
      const aside = `${this.file}.corrupt`;
      fs.renameSync(this.file, aside);
      this.log.warn({ file: this.file, movedTo: aside, err: (e as Error).message }, 'state file is corrupt; starting empty');
      return undefined;
    }
  }

  save(state: T): void {
    this.pending = state;
    this.writing ??= this.drain();
  }

  /** Resolves when everything saved so far is on disk. */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
  }

  private async drain(): Promise<void> {
    // Yield once so that synchronous bursts of save() collapse into one write.
    await new Promise((r) => setImmediate(r));
    try {
      while (this.pending !== undefined) {
        const state = this.pending;
        this.pending = undefined;
        await this.write(state);
      }
    } catch (e) {
      this.log.error({ file: this.file, err: (e as Error).message }, 'could not write state file');
    } finally {
      this.writing = undefined;
    }
  }

  private async write(state: T): Promise<void> {
    await fs.promises.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.${process.pid}.tmp`;
    await fs.promises.writeFile(tmp, JSON.stringify(state), { mode: 0o600 });
    await fs.promises.rename(tmp, this.file);
  }
}
