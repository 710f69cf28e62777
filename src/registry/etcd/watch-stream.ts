import type { Etcd3, IEvent, IWatchResponse } from 'etcd3';

export interface PrefixWatch {
  /** Settles (never rejects) with the reason once the stream has failed, ended or been cancelled. */
  readonly broken: Promise<Error>;
  cancel(): void;
}

/**
 * One etcd watch on [key, rangeEnd) from `startRevision`, on a gRPC stream of its own.
 *
 * etcd3's Watcher is not used on purpose: after a reconnect it resumes from the last revision it saw, which is
 * right after a plain restart but wrong after the data dir was wiped (revisions restart at 1, so the resumed
 * watch waits for a revision far in the future and silently misses every change until then). A failed stream is
 * therefore never resumed here; the registry resyncs from a fresh read and opens a new watch instead.
 */
export async function openPrefixWatch(
  client: Etcd3,
  range: { key: Buffer; rangeEnd: Buffer },
  startRevision: bigint,
  timeoutMs: number,
  onEvents: (events: IEvent[]) => void,
): Promise<PrefixWatch> {
  const stream = await client.watchClient.watch();
  let settle!: (reason: Error) => void;
  const broken = new Promise<Error>((resolve) => (settle = resolve));
  let done = false;
  let created = false;
  let onCreated: ((err?: Error) => void) | undefined;

  const fail = (reason: Error) => {
    if (done) return;
    done = true;
    onCreated?.(reason);
    settle(reason);
    try {
      stream.cancel();
    } catch {
      // Already torn down by grpc; nothing left to cancel.
    }
  };

  stream.on('error', (err: Error) => fail(err));
  stream.on('end', () => fail(new Error('etcd watch stream ended')));
  stream.on('data', (res: IWatchResponse) => {
    if (done) return;
    if (res.canceled) {
      const compacted = res.compact_revision !== '0' ? `compacted at ${res.compact_revision}` : 'no reason';
      const why = res.cancel_reason || compacted;
      fail(new Error(`etcd cancelled the watch: ${why}`));
      return;
    }
    if (res.created && !created) {
      created = true;
      onCreated?.();
    }
    if (res.events.length > 0) onEvents(res.events);
  });

  stream.write({
    create_request: { key: range.key, range_end: range.rangeEnd, start_revision: startRevision.toString() },
  });

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`etcd watch not created within ${timeoutMs} ms`)), timeoutMs);
    onCreated = (err) => {
      clearTimeout(timer);
      onCreated = undefined;
      if (err) reject(err);
      else resolve();
    };
    if (done) onCreated(new Error('etcd watch stream failed before the watch was created'));
  });

  return { broken, cancel: () => fail(new Error('watch cancelled')) };
}
