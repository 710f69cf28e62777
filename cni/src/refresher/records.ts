/**
 * nsm-cni's records as the refresher sees them: where they are, when each is next due, and whether the pod
 * namespace a record was made for still exists.
 */
import fs from 'node:fs';
import path from 'node:path';
import { KernelParam } from '../../../src/api/types.js';
import { earliestExpiry } from '../../../src/client/nsc.js';
import { formatInodeUrl, parseInodeUrl } from '../../../src/dataplane/netns.js';
import { decodeAttachment, type Attachment } from '../state.js';

/** Records are `<dataDir>/<network>/<containerid>-<ifname>.json`; temp, lock and corrupt files are not records. */
export const isRecordFile = (name: string) => name.endsWith('.json');

/** The network directories under dataDir (none when nsm-cni has not run yet). */
export async function networkDirs(dataDir: string): Promise<string[]> {
  const entries = await fs.promises.readdir(dataDir, { withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory()).map((e) => path.join(dataDir, e.name));
}

export async function recordFiles(networkDir: string): Promise<string[]> {
  const names = await fs.promises.readdir(networkDir).catch(() => []);
  return names.filter(isRecordFile).map((n) => path.join(networkDir, n));
}

/**
 * A record read without the lock, only to schedule it: records are replaced by rename, so this sees a whole
 * old or whole new one. Undefined when it is gone or not a record (the locked read deals with that).
 */
export async function peekRecord(file: string): Promise<Attachment | undefined> {
  try {
    return decodeAttachment(JSON.parse(await fs.promises.readFile(file, 'utf8')));
  } catch {
    return undefined;
  }
}

/**
 * When the record must next be refreshed: after `intervalMs`, but before 2/3 of the time left until the
 * earliest expiry on any of its connections' paths has passed, so that a failed refresh still has time to be
 * retried.
 */
export function dueAt(att: Attachment, now: number, intervalMs: number): number {
  const earliest = Math.min(...att.connections.map(earliestExpiry));
  return Math.min(now + intervalMs, now + (2 / 3) * Math.max(0, earliest - now));
}

export type NamespaceState = 'present' | 'gone' | 'unknown';

/**
 * Whether the record's pod namespace still exists: its path opens, and opens the same namespace the
 * connections were made into (a path can be reused for another pod's namespace). "unknown" when the path
 * cannot be looked at (permissions): then nothing is dropped on that account.
 */
export async function namespaceState(att: Attachment): Promise<NamespaceState> {
  let st: fs.BigIntStats;
  try {
    st = await fs.promises.stat(att.netns, { bigint: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR' || code === 'ESRCH' ? 'gone' : 'unknown';
  }
  const current = formatInodeUrl({ dev: st.dev.toString(), ino: st.ino.toString() });
  for (const c of att.connections) {
    const recorded = c.mechanism?.parameters[KernelParam.INODE_URL];
    if (!recorded) continue;
    try {
      if (formatInodeUrl(parseInodeUrl(recorded)) !== current) return 'gone';
    } catch {
      // Not an inode URL: nothing to compare with.
    }
  }
  return 'present';
}
