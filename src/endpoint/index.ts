export { startEndpoint, defaultEndpointSocket, type EndpointOptions, type RunningEndpoint, type EndpointElement } from './endpoint.js';
export { PointToPointIpam } from './ipam.js';
export type { EndpointRequestState, EndpointCloseState, EndpointRecord } from './state.js';
