import { messageCodec } from '../../api/codec.js';
import type { NetworkServiceEndpoint } from '../../api/types.js';
import type { Element } from '../../chain/types.js';
import type { Registry } from '../../registry/types.js';
import { selectEndpoints } from '../../select/index.js';
import { ENCRYPTION_LABEL } from './routing.js';
import { messageOf, notFound } from '../../util/errors.js';
import type { NsmdCloseState, NsmdRequestState } from './state.js';

const nsTemplate = messageCodec('registry.NetworkService').normalize;
const nseTemplate = messageCodec('registry.NetworkServiceEndpoint').normalize;

/**
 * Finds the endpoints this Request may use: on a refresh the endpoint it already has; with an endpoint
 * name, that endpoint; otherwise the service's matches applied to the request labels.
 */
export function discover(registry: Registry): Element<NsmdRequestState, NsmdCloseState> {
  return {
    name: 'discover',
    async request(st, next) {
      const conn = st.request.connection;
      if (st.existing) {
        const { name, url } = st.existing.endpoint;
        let asked = true;
        // A refresh keeps its endpoint even when its registry cannot be asked now (another domain's, say).
        const [current] = await registry.lookupEndpoints(nseTemplate({ name })).catch((e: unknown) => {
          st.log.debug({ endpoint: name, err: messageOf(e) }, 'registry not reachable on refresh; keeping the known endpoint');
          asked = false;
          return [];
        });
        if (current || !asked) {
          st.candidates = [current ?? nseTemplate({ name, url })];
          // Asked only if the endpoint fails to answer: a refresh normally costs no selection.
          st.alternatives = async () => (await bySelection(registry, conn)).filter((e) => e.name !== name);
          return next.request(st);
        }
        // Its endpoint left the registry (stopped, expired, its node gone): heal the connection — same id and
        // interface — with an endpoint selected anew, rather than failing every refresh until it expires.
        st.log.info({ conn: conn.id, endpoint: name }, 'the connection\'s endpoint is gone; selecting another');
        st.healFrom = name;
        conn.network_service_endpoint_name = '';
      } else if (conn.network_service_endpoint_name) {
        const named = await registry.lookupEndpoints(nseTemplate({ name: conn.network_service_endpoint_name }));
        if (named.length === 0) {
          throw notFound(`network service endpoint "${conn.network_service_endpoint_name}" is not registered (or its registration expired)`);
        }
        st.candidates = named;
        return next.request(st);
      }
      st.candidates = await bySelection(registry, conn);
      return next.request(st);
    },
    close: (st, next) => next.close(st),
  };
}

/** The service's matches applied to the request labels; the endpoints in match order. */
async function bySelection(registry: Registry, conn: NsmdRequestState['request']['connection']): Promise<NetworkServiceEndpoint[]> {
  const [ns] = await registry.lookupServices(nsTemplate({ name: conn.network_service }));
  if (!ns) {
    throw notFound(`network service "${conn.network_service}" is not found: register it first (nsmctl apply -f <service.yaml>)`);
  }
  if (!conn.payload) conn.payload = ns.payload;
  const nses = await registry.lookupEndpoints(nseTemplate({ network_service_names: [ns.name] }));
  const { candidates, matchLabels } = selectEndpoints(conn.labels, ns, nses);
  if (candidates.length === 0) throw noCandidate(ns.name, conn.labels, nses);
  // The service may demand encryption for the clients a match covers; it then holds as if the client had
  // asked, and shows in the connection's labels (which the client sends back on every refresh).
  if (matchLabels[ENCRYPTION_LABEL] === 'required') conn.labels[ENCRYPTION_LABEL] = 'required';
  return candidates;
}

function noCandidate(service: string, labels: Record<string, string>, nses: NetworkServiceEndpoint[]): Error {
  if (nses.length === 0) return notFound(`network service "${service}" has no registered endpoints: start an endpoint that serves it`);
  const shown = Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(', ') || 'none';
  return notFound(
    `no endpoint of network service "${service}" matches this request (labels: ${shown}; ${nses.length} endpoint(s) registered): check the service's matches`,
  );
}
