/**
 * What ADD made for one attachment (network, container, interface), kept on the node so that DEL — possibly
 * from a restarted runtime, with no prevResult — can close exactly those connections, and CHECK can verify
 * them. One small file per attachment, replaced atomically.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { Connection } from '../../src/api/types.js';
import type { Logger } from '../../src/util/log.js';
import { readStateFile, writeStateFile } from '../../src/util/state-file.js';
import { CniCode, CniError } from './errors.js';

export interface AttachmentKey {
  dataDir: string;
  network: string;
  containerId: string;
  ifname: string;
}

export interface Attachment {
  netns: string;
  /** Where the services came from (runtimeConfig, CNI_ARGS, annotation). */
  from: string;
  /** As nsmd returned them: the client's view, which Close takes back. */
  connections: Connection[];
}

const attachmentSchema = z.object({
  netns: z.string(),
  from: z.string(),
  connections: z.array(z.object({ id: z.string().min(1), network_service: z.string() }).passthrough()),
});

/** Network names and container ids are restricted to [a-zA-Z0-9_.-] at the edge, so they are safe path parts. */
export function attachmentFile(k: AttachmentKey): string {
  return path.join(k.dataDir, k.network, `${k.containerId}-${k.ifname}.json`);
}

export async function readAttachment(k: AttachmentKey, log: Logger): Promise<Attachment | undefined> {
  try {
    return await readStateFile(attachmentFile(k), (j) => attachmentSchema.parse(j) as unknown as Attachment, log, 'nsm-cni attachment');
  } catch (e) {
    throw new CniError(CniCode.IO_FAILURE, `cannot read ${attachmentFile(k)}: ${(e as Error).message}`);
  }
}

export async function writeAttachment(k: AttachmentKey, a: Attachment): Promise<void> {
  try {
    await writeStateFile(attachmentFile(k), a);
  } catch (e) {
    throw new CniError(CniCode.IO_FAILURE, `cannot record the attachment in ${attachmentFile(k)}: ${(e as Error).message}`, 'check that dataDir is writable');
  }
}

export async function removeAttachment(k: AttachmentKey): Promise<void> {
  try {
    await fs.promises.rm(attachmentFile(k), { force: true });
  } catch (e) {
    throw new CniError(CniCode.IO_FAILURE, `cannot remove ${attachmentFile(k)}: ${(e as Error).message}`);
  }
}
