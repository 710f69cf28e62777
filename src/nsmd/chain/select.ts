import type { Element } from '../../chain/types.js';
import { remaining } from '../../chain/types.js';
import type { RoundRobin } from '../../select/index.js';
import { messageOf, status, statusOf, unavailable } from '../../util/errors.js';
import type { NsmdCloseState, NsmdRequestState } from './state.js';

/** Tries the candidates in round-robin order until one connects; a failing endpoint costs one attempt, not the Request. */
export function select(rr: RoundRobin): Element<NsmdRequestState, NsmdCloseState> {
  return {
    name: 'select',
    async request(st, next) {
      const conn = st.request.connection;
      const candidates = st.existing && !st.healFrom ? st.candidates! : rr.order(conn.network_service, st.candidates!);
      const failures: string[] = [];
      let last: unknown;
      for (let i = 0; i < candidates.length; i++) {
        const candidate = candidates[i]!;
        if (remaining(st) === 0) break;
        st.endpoint = candidate;
        conn.network_service_endpoint_name = candidate.name;
        try {
          return await next.request(st);
        } catch (e) {
          last = e;
          failures.push(`${candidate.name}: ${messageOf(e)}`);
          st.log.warn({ endpoint: candidate.name, err: messageOf(e) }, 'endpoint failed; trying the next candidate');
          if (st.existing && !st.healFrom && i === candidates.length - 1 && st.alternatives && statusOf(e) === status.UNAVAILABLE) {
            // The connection's own endpoint does not answer a refresh (crashed, still registered): heal it onto
            // another, as if it had left.
            const others = await st.alternatives().catch(() => []);
            if (others.length) {
              st.healFrom = candidate.name;
              candidates.push(...rr.order(conn.network_service, others));
            }
          }
        }
      }
      if (failures.length === 1) throw last;
      throw unavailable(
        `no endpoint of "${conn.network_service}" could be connected (${failures.length} tried${remaining(st) === 0 ? ', deadline reached' : ''}): ${failures.join('; ')}`,
      );
    },
    close: (st, next) => next.close(st),
  };
}
