import type { Element } from '../../chain/types.js';
import { KeyedMutex } from '../../util/keyed-mutex.js';
import type { ConnectionStore } from '../connection-store.js';
import type { NsmdCloseState, NsmdRequestState } from './state.js';

/** Serialises every event of one connection and tells the rest of the chain whether this is a refresh. */
export function begin(store: ConnectionStore, mutex = new KeyedMutex()): Element<NsmdRequestState, NsmdCloseState> {
  return {
    name: 'begin',
    request: (st, next) =>
      mutex.run(st.request.connection.id, async () => {
        st.existing = store.get(st.request.connection.id);
        st.refresh = st.existing !== undefined;
        return next.request(st);
      }),
    close: (st, next) =>
      mutex.run(st.record.id, async () => {
        // Closed meanwhile by another event (expiry racing an explicit Close): nothing left to undo.
        if (store.get(st.record.id) !== st.record) return;
        await next.close(st);
      }),
  };
}
