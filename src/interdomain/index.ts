export { AddressMap } from './address-map.js';
export { InterdomainRegistry, type InterdomainRegistryOptions } from './registry.js';
export { remoteEndpointRegistryHandlers, remoteServiceRegistryHandlers, fromOtherDomain } from './remote-api.js';
export { otherDomainCaller } from './other-domain-caller.js';
export { diagnoseHandshake, type HandshakeOutcome, type HandshakeRefusal } from './handshake.js';
export * from './names.js';
