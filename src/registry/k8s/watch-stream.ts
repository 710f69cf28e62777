import type { Watch } from '@kubernetes/client-node';

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK';

/** Why a watch stream stopped. */
export type WatchEnd =
  /** The resourceVersion is older than the API server keeps history for (410): only a fresh list can resume. */
  | { kind: 'gone'; detail: string }
  /** The server ended the stream normally (its timeoutSeconds ran out); watching again from the last version is fine. */
  | { kind: 'closed' }
  | { kind: 'failed'; error: Error };

export interface WatchStream {
  /** Whether the API server accepted the watch (answered 200); false when it failed before that. */
  readonly established: boolean;
  /** Settles once with the reason the stream stopped (never rejects). */
  readonly ended: Promise<WatchEnd>;
  cancel(): void;
}

export interface WatchTiming {
  /** How long the API server may take to answer the watch request. */
  connectTimeoutMs: number;
  /** The server closes the stream after this; asked for so that every watch ends and is renewed. */
  timeoutSeconds: number;
  /** A stream silent for this long is taken as dead (a peer that vanished closes no socket). */
  idleTimeoutMs: number;
}

/**
 * One `?watch=true` stream from `resourceVersion`, through @kubernetes/client-node's Watch. The library has no
 * deadline on the request itself (it waits for the response headers indefinitely) and reports an in-stream 410 as
 * an ordinary ERROR event, so both are handled here: a request unanswered in time and a stream silent for too long
 * end the watch, and an ERROR event or HTTP status 410 is reported as `gone`.
 */
export async function openWatch(
  watch: Watch,
  path: string,
  resourceVersion: string,
  timing: WatchTiming,
  onEvent: (type: WatchEventType, object: unknown) => void,
): Promise<WatchStream> {
  let settle!: (end: WatchEnd) => void;
  const ended = new Promise<WatchEnd>((resolve) => (settle = resolve));
  let done = false;
  let controller: AbortController | undefined;
  let idle: NodeJS.Timeout | undefined;

  const finish = (end: WatchEnd) => {
    if (done) return;
    done = true;
    clearTimeout(idle);
    controller?.abort();
    settle(end);
  };
  const armIdle = () => {
    clearTimeout(idle);
    idle = setTimeout(() => finish({ kind: 'failed', error: new Error(`watch silent for ${timing.idleTimeoutMs} ms`) }), timing.idleTimeoutMs);
    idle.unref();
  };

  const request = watch.watch(
    path,
    { resourceVersion, allowWatchBookmarks: true, timeoutSeconds: timing.timeoutSeconds },
    (type: string, object: unknown) => {
      if (done) return;
      armIdle();
      if (type === 'ERROR') {
        finish(errorEventEnd(object));
        return;
      }
      if (type === 'ADDED' || type === 'MODIFIED' || type === 'DELETED' || type === 'BOOKMARK') onEvent(type, object);
    },
    (err: unknown) => {
      if (!err) finish({ kind: 'closed' });
      else if ((err as { statusCode?: unknown }).statusCode === 410) finish({ kind: 'gone', detail: 'HTTP 410 Gone' });
      else finish({ kind: 'failed', error: err instanceof Error ? err : new Error(String(err)) });
    },
  );

  void request.then(
    (c) => {
      controller = c;
      // Answered after our deadline, or ended meanwhile: the stream is not wanted any more.
      if (done) c.abort();
    },
    // Watch reports request failures through `done`; a rejection here means the config itself is unusable.
    (err: unknown) => finish({ kind: 'failed', error: err instanceof Error ? err : new Error(String(err)) }),
  );
  const connectTimer = setTimeout(
    () => finish({ kind: 'failed', error: new Error(`watch request not answered within ${timing.connectTimeoutMs} ms`) }),
    timing.connectTimeoutMs,
  );
  // A request that never gets an answer cannot be aborted (the library hands out its AbortController only with the
  // response), so the deadline stops the wait rather than the request; a late answer is aborted on arrival.
  await Promise.race([request.catch(() => undefined), ended]);
  clearTimeout(connectTimer);
  if (!done) armIdle();
  return { established: !done, ended, cancel: () => finish({ kind: 'failed', error: new Error('watch cancelled') }) };
}

/** An ERROR event carries a Status; 410 (reason Expired or Gone) means history for our version is gone. */
function errorEventEnd(object: unknown): WatchEnd {
  const s = (object ?? {}) as { code?: unknown; reason?: unknown; message?: unknown };
  const detail = [s.reason, s.message].filter((x) => typeof x === 'string' && x !== '').join(': ') || 'no detail';
  if (s.code === 410 || s.reason === 'Expired' || s.reason === 'Gone') return { kind: 'gone', detail };
  return { kind: 'failed', error: new Error(`watch ERROR event: ${detail}`) };
}
