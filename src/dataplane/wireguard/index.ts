/**
 * WireGuard for remote connections, on wireguard-go (userspace) because this kernel has no WireGuard module.
 * Separate from the Dataplane interface until nsmd integrates it.
 */
export * from './types.js';
export * from './keys.js';
export * from './mtu.js';
export * from './ports.js';
export {
  UAPI_DIR,
  UapiError,
  formatEndpoint,
  parseEndpoint,
  uapiGet,
  uapiSet,
  uapiSocketPath,
  type UapiDevice,
  type UapiDeviceConfig,
  type UapiPeer,
  type UapiPeerConfig,
} from './uapi.js';
export { cleanupStale, type CleanupOptions } from './cleanup.js';
export { DEFAULT_NAME_PREFIX, createWireguardBackend, wgIfname, type WireguardBackend, type WireguardBackendOptions } from './userspace.js';
