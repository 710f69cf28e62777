import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import { messageCodec } from '../../api/codec.js';
import type { NetworkService, NetworkServiceEndpoint } from '../../api/types.js';

export const STATE_FILE_VERSION = 1;

export interface RegistryState {
  services: NetworkService[];
  endpoints: NetworkServiceEndpoint[];
}

const namedRecord = z.object({ name: z.string().min(1) }).passthrough();
const stateSchema = z.object({
  version: z.literal(STATE_FILE_VERSION),
  services: z.array(namedRecord),
  endpoints: z.array(namedRecord),
});

/**
 * Reads the state written by writeState. A missing file is an empty registry. A file that cannot be understood
 * is moved aside to `<file>.corrupt` (kept for a human to look at, and so the next write does not destroy it)
 * and the registry starts empty: refusing to start would take the whole node's service mesh down over a cache.
 */
export async function readState(file: string, logger: Logger): Promise<RegistryState> {
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { services: [], endpoints: [] };
    throw err;
  }
  try {
    return decodeState(text);
  } catch (err) {
    const aside = `${file}.corrupt`;
    await fs.promises.rename(file, aside);
    logger.warn({ err, file, movedTo: aside }, 'registry state file is corrupt; moved aside, starting empty');
    return { services: [], endpoints: [] };
  }
}

function decodeState(text: string): RegistryState {
  const parsed = stateSchema.parse(JSON.parse(text));
  const nsCodec = messageCodec('registry.NetworkService');
  const nseCodec = messageCodec('registry.NetworkServiceEndpoint');
  return {
    services: parsed.services.map((s) => nsCodec.normalize(s as never)),
    endpoints: parsed.endpoints.map((e) => nseCodec.normalize(e as never)),
  };
}

/**
 * Replaces the file atomically: a crash leaves either the old or the new state, never half of one. The file
 * holds endpoint URLs and labels, so it is private to the owner (0600).
 */
export async function writeState(file: string, state: RegistryState): Promise<void> {
  const dir = path.dirname(file);
  await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp`;
  const body = JSON.stringify({ version: STATE_FILE_VERSION, ...state });
  const fh = await fs.promises.open(tmp, 'w', 0o600);
  try {
    // A temp file left by a crash keeps its old mode through open('w'); force it.
    await fh.chmod(0o600);
    await fh.writeFile(body, 'utf8');
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
