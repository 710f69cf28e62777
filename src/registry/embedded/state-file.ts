import type { Logger } from 'pino';
import { z } from 'zod';
import { messageCodec } from '../../api/codec.js';
import type { NetworkService, NetworkServiceEndpoint } from '../../api/types.js';
import { readStateFile, writeStateFile } from '../../util/state-file.js';

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

/** Reads the state written by writeState; a missing or corrupt file is an empty registry. */
export async function readState(file: string, logger: Logger): Promise<RegistryState> {
  return (await readStateFile(file, decodeState, logger, 'registry')) ?? { services: [], endpoints: [] };
}

function decodeState(json: unknown): RegistryState {
  const parsed = stateSchema.parse(json);
  const nsCodec = messageCodec('registry.NetworkService');
  const nseCodec = messageCodec('registry.NetworkServiceEndpoint');
  return {
    services: parsed.services.map((s) => nsCodec.normalize(s as never)),
    endpoints: parsed.endpoints.map((e) => nseCodec.normalize(e as never)),
  };
}

export function writeState(file: string, state: RegistryState): Promise<void> {
  return writeStateFile(file, { version: STATE_FILE_VERSION, ...state });
}
