import type { Element } from '../../chain/types.js';
import type { NsmdCloseState, NsmdRequestState } from './state.js';

/** Adds the labels selectors template against (nodeName, clusterName) when the client did not set them. */
export function clientInfo(labels: Record<string, string>): Element<NsmdRequestState, NsmdCloseState> {
  return {
    name: 'client-info',
    request(st, next) {
      const conn = st.request.connection;
      for (const [k, v] of Object.entries(labels)) if (v && !(k in conn.labels)) conn.labels[k] = v;
      return next.request(st);
    },
    close: (st, next) => next.close(st),
  };
}
