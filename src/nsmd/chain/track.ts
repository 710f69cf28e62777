import type { Element } from '../../chain/types.js';
import type { ConnectionStore } from '../connection-store.js';
import type { NsmdCloseState, NsmdRequestState } from './state.js';

/** Keeps the store (and through it, monitors and the state file) in step with the chain's outcome. */
export function track(store: ConnectionStore): Element<NsmdRequestState, NsmdCloseState> {
  return {
    name: 'track',
    async request(st, next) {
      const conn = await next.request(st);
      const path = st.request.connection.path!;
      const prev = path.path_segments[path.index - 1];
      store.put({
        id: st.request.connection.id,
        clientId: prev?.id ?? st.request.connection.id,
        connection: structuredClone(conn),
        endpoint: { name: st.endpoint!.name, url: st.target!.url, connection: st.endpointConnection! },
        dataplane: st.plumbed!,
        expiresAt: st.expiresAt!,
        ...(st.owner ? { owner: st.owner } : {}),
      });
      return conn;
    },
    async close(st, next) {
      try {
        await next.close(st);
      } finally {
        store.delete(st.record.id);
      }
    },
  };
}
