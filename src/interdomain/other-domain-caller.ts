import type { Element } from '../chain/types.js';
import type { Transport } from '../identity/transport.js';
import type { NsmdCloseState, NsmdRequestState } from '../nsmd/chain/state.js';
import { fromOtherDomain } from './remote-api.js';

/**
 * On the remote API: marks Requests whose caller is another domain's nsmd (an SVID of another trust domain,
 * as each domain has its own), so that this node's tunnel address is answered as that domain reaches it.
 */
export function otherDomainCaller(transport: Transport): Element<NsmdRequestState, NsmdCloseState> {
  return {
    name: 'other-domain-caller',
    request(st, next) {
      st.fromOtherDomain = fromOtherDomain(transport, st.caller?.peer.trustDomain);
      return next.request(st);
    },
    close: (st, next) => next.close(st),
  };
}
