import path from 'node:path';
import type { Logger } from '../util/log.js';
import { readStateFile, writeStateFile } from '../util/state-file.js';
import { CoalescedWriter } from '../util/coalesced-writer.js';

/**
 * Endpoints registered through this nsmd's local socket. In a shared registry they are published with this
 * nsmd's remote URL (other nodes reach them through it, as upstream's nsmgr does); the socket each one really
 * listens on is known only here, and kept on disk so that a restarted nsmd can still reach them.
 */
export class LocalEndpoints {
  private readonly urls = new Map<string, string>();
  private readonly writer: CoalescedWriter;

  private constructor(
    private readonly file: string,
    log: Logger,
  ) {
    this.writer = new CoalescedWriter(
      () => writeStateFile(this.file, Object.fromEntries(this.urls)),
      20,
      (err) => log.error({ err: (err as Error).message, file }, 'could not persist local endpoints'),
    );
  }

  static async open(stateDir: string, log: Logger): Promise<LocalEndpoints> {
    const le = new LocalEndpoints(path.join(stateDir, 'local-endpoints.json'), log);
    const saved = await readStateFile(
      le.file,
      (json) => {
        if (typeof json !== 'object' || json === null) throw new Error('expected an object of name to URL');
        return json as Record<string, string>;
      },
      log,
      'local endpoints',
    );
    for (const [name, url] of Object.entries(saved ?? {})) if (typeof url === 'string') le.urls.set(name, url);
    return le;
  }

  set(name: string, url: string): void {
    if (this.urls.get(name) === url) return;
    this.urls.set(name, url);
    this.writer.schedule();
  }

  delete(name: string): void {
    if (this.urls.delete(name)) this.writer.schedule();
  }

  get(name: string): string | undefined {
    return this.urls.get(name);
  }

  flush(): Promise<void> {
    return this.writer.flush();
  }
}
