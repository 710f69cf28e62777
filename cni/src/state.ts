/**
 * What ADD made for one attachment (network, container, interface), kept on the node so that DEL — possibly
 * from a restarted runtime, with no prevResult — can close exactly those connections, and CHECK can verify
 * them, and nsm-cni-refresher can keep them alive. One small file per attachment, replaced atomically; whoever
 * changes it, or acts on nsmd for it, holds its lock (attachment-lock.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { Connection } from '../../src/api/types.js';
import type { Logger } from '../../src/util/log.js';
import { readStateFile, writeStateFile } from '../../src/util/state-file.js';
import { LockBusyError, withAttachmentLock } from './attachment-lock.js';
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

/** The record as written by writeAttachment; throws when it is not one. */
export function decodeAttachment(json: unknown): Attachment {
  return attachmentSchema.parse(json) as unknown as Attachment;
}

export function readAttachment(k: AttachmentKey, log: Logger): Promise<Attachment | undefined> {
  return readAttachmentFile(attachmentFile(k), log);
}

export async function readAttachmentFile(file: string, log: Logger): Promise<Attachment | undefined> {
  try {
    return await readStateFile(file, decodeAttachment, log, 'nsm-cni attachment');
  } catch (e) {
    throw new CniError(CniCode.IO_FAILURE, `cannot read ${file}: ${(e as Error).message}`);
  }
}

export function writeAttachment(k: AttachmentKey, a: Attachment): Promise<void> {
  return writeAttachmentFile(attachmentFile(k), a);
}

export async function writeAttachmentFile(file: string, a: Attachment): Promise<void> {
  try {
    await writeStateFile(file, a);
  } catch (e) {
    throw new CniError(CniCode.IO_FAILURE, `cannot record the attachment in ${file}: ${(e as Error).message}`, 'check that dataDir is writable');
  }
}

export function removeAttachment(k: AttachmentKey): Promise<void> {
  return removeAttachmentFile(attachmentFile(k));
}

export async function removeAttachmentFile(file: string): Promise<void> {
  try {
    await fs.promises.rm(file, { force: true });
  } catch (e) {
    throw new CniError(CniCode.IO_FAILURE, `cannot remove ${file}: ${(e as Error).message}`);
  }
}

/** Runs `fn` holding the attachment's lock; a lock another process keeps past `timeoutMs` asks the runtime to retry. */
export async function lockedAttachment<T>(k: AttachmentKey, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  try {
    return await withAttachmentLock(attachmentFile(k), timeoutMs, fn);
  } catch (e) {
    if (e instanceof LockBusyError) throw new CniError(CniCode.TRY_AGAIN_LATER, e.message);
    throw e;
  }
}
