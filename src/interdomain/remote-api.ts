/**
 * What nsmd's remote API tells other nodes and other domains about this domain's registry: Find only (an
 * endpoint registers with the nsmd of its own node, on the local API). For a caller of another trust
 * domain the endpoints' URLs are given as that caller can reach them — through the NAT address map — and
 * endpoints reachable only on this node's unix sockets are left out.
 */
import type * as grpc from '@grpc/grpc-js';
import type { DeepPartial } from '../api/codec.js';
import { messageCodec } from '../api/codec.js';
import { unary } from '../api/grpc.js';
import type {
  Empty,
  NetworkService,
  NetworkServiceEndpoint,
  NetworkServiceEndpointQuery,
  NetworkServiceEndpointResponse,
  NetworkServiceQuery,
  NetworkServiceResponse,
} from '../api/types.js';
import { trustDomainOf } from '../identity/spiffe-id.js';
import type { Transport } from '../identity/transport.js';
import { find } from '../nsmd/registry-server.js';
import type { Registry } from '../registry/types.js';
import { permissionDenied } from '../util/errors.js';
import type { AddressMap } from './address-map.js';

const nsDefaults = messageCodec('registry.NetworkService').normalize;
const nseDefaults = messageCodec('registry.NetworkServiceEndpoint').normalize;

/** True when the caller of a server call holds an SVID of another trust domain than this nsmd's. */
export function fromOtherDomain(transport: Transport, peerTrustDomain: string | undefined): boolean {
  const own = transport.svid();
  return own !== undefined && peerTrustDomain !== undefined && trustDomainOf(own.spiffeId) !== peerTrustDomain;
}

const readOnly = unary<unknown, Empty>(async () => {
  throw permissionDenied('registrations are accepted on the local API of the endpoint\'s own nsmd only, not on the remote API');
});

export function remoteServiceRegistryHandlers(registry: Registry): grpc.UntypedServiceImplementation {
  return {
    Register: readOnly,
    Unregister: readOnly,
    Find: find<NetworkServiceQuery, NetworkService, DeepPartial<NetworkServiceResponse>>(
      (q) => q.network_service ?? nsDefaults({}),
      (t) => registry.findServices(t),
      (t, on) => registry.watchServices(t, (e) => on(e.ns, e.deleted)),
      (ns, deleted) => ({ network_service: ns, deleted }),
    ),
  };
}

export function remoteEndpointRegistryHandlers(registry: Registry, transport: Transport, addressMap: AddressMap): grpc.UntypedServiceImplementation {
  return {
    Register: readOnly,
    Unregister: readOnly,
    Find: (call: grpc.ServerWritableStream<NetworkServiceEndpointQuery, DeepPartial<NetworkServiceEndpointResponse>>) => {
      const foreign = fromOtherDomain(transport, transport.peer(call)?.trustDomain);
      const reachable = (nse: NetworkServiceEndpoint) => !foreign || !(nse.url.startsWith('unix:') || nse.url.startsWith('/'));
      const outside = (nse: NetworkServiceEndpoint) => (foreign ? { ...nse, url: addressMap.externalUrl(nse.url) } : nse);
      return find<NetworkServiceEndpointQuery, NetworkServiceEndpoint, DeepPartial<NetworkServiceEndpointResponse>>(
        (q) => q.network_service_endpoint ?? nseDefaults({}),
        async (t) => (await registry.findEndpoints(t)).filter(reachable).map(outside),
        (t, on) =>
          registry.watchEndpoints(t, (e) => {
            if (reachable(e.nse)) on(outside(e.nse), e.deleted);
          }),
        (nse, deleted) => ({ network_service_endpoint: nse, deleted }),
      )(call);
    },
  };
}
