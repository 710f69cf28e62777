import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from './log.js';

/**
 * Reads a JSON state file. A missing file is `undefined`. A file that cannot be understood (bad JSON, or
 * `decode` throws) is moved aside to `<file>.corrupt` — kept for a person to look at, and so the next write
 * does not destroy it — and the caller starts empty: refusing to start over a cache would take the node down.
 */
export async function readStateFile<T>(file: string, decode: (json: unknown) => T, log: Logger, what: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    return decode(JSON.parse(text));
  } catch (err) {
    const aside = `${file}.corrupt`;
    await fs.promises.rename(file, aside);
    log.warn({ err: (err as Error).message, file, movedTo: aside }, `${what} state file is corrupt; moved aside, starting empty`);
    return undefined;
  }
}

/**
 * Replaces the file atomically: a crash leaves either the old or the new state, never half of one. State
 * files hold endpoint URLs, labels and namespaces, so they are private to the owner (0600, directory 0700).
 */
export async function writeStateFile(file: string, value: unknown): Promise<void> {
  const dir = path.dirname(file);
  await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp`;
  const fh = await fs.promises.open(tmp, 'w', 0o600);
  try {
    // A temp file left by a crash keeps its old mode through open('w'); force it.
    await fh.chmod(0o600);
    await fh.writeFile(JSON.stringify(value), 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.promises.rename(tmp, file);
  await syncDir(dir);
}

/** Makes the rename itself durable; not every filesystem allows fsync on a directory, so failure is ignored. */
async function syncDir(dir: string): Promise<void> {
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(dir, 'r');
    await fh.sync();
  } catch {
    // best effort
  } finally {
    await fh?.close().catch(() => undefined);
  }
}
