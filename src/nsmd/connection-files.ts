import fs from 'node:fs';
import path from 'node:path';
import { KeyedMutex } from '../util/keyed-mutex.js';
import type { Logger } from '../util/log.js';

/**
 * One small file per connection (`<dir>/<id>.json`), written when the connection changes and removed when
 * it closes. A Request costs one tiny write off the event loop instead of rewriting every connection nsmd
 * holds, and a crash loses at most the writes still in flight. Writes for one connection are serialised so
 * that a late write can never resurrect a connection whose file was already removed.
 */
export class ConnectionFiles<T> {
  private readonly mutex = new KeyedMutex();
  private readonly latest = new Map<string, T | null>();
  private readonly pending = new Set<Promise<void>>();
  private dirReady: Promise<unknown> | undefined;

  constructor(
    readonly dir: string,
    private readonly log: Logger,
  ) {}

  private file(id: string): string {
    // Connection ids come from clients: encode them so that none can name a path outside the directory.
    return path.join(this.dir, `${encodeURIComponent(id)}.json`);
  }

  async loadAll(): Promise<T[]> {
    let names: string[];
    try {
      names = await fs.promises.readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: T[] = [];
    for (const n of names.filter((x) => x.endsWith('.json'))) {
      const f = path.join(this.dir, n);
      try {
        out.push(JSON.parse(await fs.promises.readFile(f, 'utf8')) as T);
      } catch (e) {
        await fs.promises.rename(f, `${f}.corrupt`).catch(() => undefined);
        this.log.warn({ file: f, err: (e as Error).message }, 'connection state file is corrupt; moved aside');
      }
    }
    return out;
  }

  save(id: string, value: T): void {
    this.enqueue(id, value);
  }

  remove(id: string): void {
    this.enqueue(id, null);
  }

  /** Resolves when every change made so far is on disk. */
  async flush(): Promise<void> {
    while (this.pending.size) await Promise.all([...this.pending]);
  }

  private enqueue(id: string, value: T | null): void {
    const queued = this.latest.has(id);
    this.latest.set(id, value);
    if (queued) return; // the queued write will pick up the newest value
    const p = this.mutex
      .run(id, async () => {
        const v = this.latest.get(id);
        this.latest.delete(id);
        if (v === null) await fs.promises.rm(this.file(id), { force: true });
        else await this.write(id, v as T);
      })
      .catch((e: unknown) => this.log.error({ conn: id, err: (e as Error).message }, 'could not persist connection state'))
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  private async write(id: string, v: T): Promise<void> {
    // Once per run, not per write: the directory is nsmd's own.
    await (this.dirReady ??= fs.promises.mkdir(this.dir, { recursive: true, mode: 0o700 }));
    const f = this.file(id);
    const tmp = `${f}.tmp`;
    await fs.promises.writeFile(tmp, JSON.stringify(v), { mode: 0o600 });
    await fs.promises.rename(tmp, f);
  }
}
