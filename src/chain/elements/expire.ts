import type { Timestamp } from '../../api/types.js';
import type { BaseCloseState, BaseRequestState, Element } from '../types.js';

export const toTimestamp = (ms: number): Timestamp => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 });
export const fromTimestamp = (t: Timestamp | null | undefined): number | undefined =>
  t && (t.seconds || t.nanos) ? t.seconds * 1000 + Math.floor(t.nanos / 1_000_000) : undefined;

/**
 * Connection lifetime: a connection not refreshed before its caller's segment expires is closed by this
 * hop itself (nsmd: devices and all; an endpoint: its addresses). The expiry is the caller's (token)
 * expiry, capped at maxLifetimeMs. Every hop times out its caller independently, as upstream's do.
 */
export class Expiry {
  private readonly timers = new Map<string, NodeJS.Timeout>();

  constructor(
    private readonly maxLifetimeMs: number,
    private readonly onExpire: (id: string) => void,
  ) {}

  /** `idOf` names the connection a Close refers to (the hop's own segment id). */
  element<R extends BaseRequestState & { expiresAt?: number }, C extends BaseCloseState>(idOf: (st: C) => string): Element<R, C> {
    return {
      name: 'expire',
      request: async (st, next) => {
        const path = st.request.connection.path!;
        const prev = path.index > 0 ? path.path_segments[path.index - 1] : undefined;
        const cap = Date.now() + this.maxLifetimeMs;
        const expiresAt = Math.min(fromTimestamp(prev?.expires) ?? cap, cap);
        if (prev) prev.expires = toTimestamp(expiresAt);
        path.path_segments[path.index]!.expires = toTimestamp(expiresAt);
        st.expiresAt = expiresAt;
        const conn = await next.request(st);
        this.arm(st.request.connection.id, expiresAt);
        return conn;
      },
      close: async (st, next) => {
        this.cancel(idOf(st));
        await next.close(st);
      },
    };
  }

  arm(id: string, expiresAt: number): void {
    this.cancel(id);
    const t = setTimeout(() => {
      this.timers.delete(id);
      this.onExpire(id);
    }, Math.max(0, expiresAt - Date.now()));
    t.unref();
    this.timers.set(id, t);
  }

  cancel(id: string): void {
    const t = this.timers.get(id);
    if (t) clearTimeout(t);
    this.timers.delete(id);
  }

  stop(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}
