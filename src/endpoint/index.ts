export {
  startEndpoint,
  defaultEndpointSocket,
  type EndpointOptions,
  type RunningEndpoint,
  type EndpointElement,
  type EndpointControl,
} from './endpoint.js';
export { PointToPointIpam } from './ipam.js';
export { Passthrough, type PassthroughOptions, type OnwardLink } from './passthrough.js';
export { handRoutes } from './routes.js';
export { acceptOnlyVia } from './accept-via.js';
export { overlaps, routesOutside, hostPrefix } from './prefixes.js';
export { setForwarding } from './forwarding.js';
export { replaceNftTable, readNftCounters, type NftCounter } from './nft.js';
export type { EndpointRequestState, EndpointCloseState, EndpointRecord } from './state.js';
