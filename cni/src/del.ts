import { existsSync } from 'node:fs';
import { messageOf } from '../../src/util/errors.js';
import type { Invocation } from './invocation.js';
import { closeConnections, openIdentity, requireNsmdSocket } from './mesh.js';
import { attachmentFile, lockedAttachment, readAttachment, removeAttachment } from './state.js';

/**
 * Closes what ADD made and forgets it. Idempotent, and never blocked by what is already gone: with no record
 * there is nothing to do; an nsmd or identity provider that does not answer within closeTimeout leaves the
 * connections to expire in nsmd (it removes their interfaces then), and the record is removed either way.
 */
export async function del(inv: Invocation): Promise<void> {
  // Most pods ask for no service and leave no record: nothing to lock, and no lock file made for them.
  if (!existsSync(attachmentFile(inv.key))) return;
  // Held from reading the record to removing it, so a refresh running meanwhile cannot re-create what DEL closed.
  return lockedAttachment(inv.key, inv.conf.requestTimeout, () => closeAndForget(inv));
}

async function closeAndForget({ conf, key, log }: Invocation): Promise<void> {
  const att = await readAttachment(key, log);
  if (!att) return;
  if (att.connections.length > 0) {
    try {
      requireNsmdSocket(conf.nsmSocket);
      const transport = await openIdentity(conf, conf.closeTimeout, log);
      try {
        await closeConnections(conf.nsmSocket, transport, att.connections, conf.closeTimeout, log);
      } finally {
        transport.close();
      }
    } catch (e) {
      log.warn({ err: messageOf(e) }, 'could not close the connections; nsmd will close them when they expire');
    }
  }
  await removeAttachment(key);
}
