import type { NetworkService, NetworkServiceEndpoint } from '../api/types.js';

export type Unsubscribe = () => void;

export interface NsEvent {
  ns: NetworkService;
  deleted: boolean;
}
export interface NseEvent {
  nse: NetworkServiceEndpoint;
  deleted: boolean;
}

/**
 * A registry of NetworkServices and NetworkServiceEndpoints. Embedded, etcd and Kubernetes backends
 * implement it; the gRPC registry servers and the request chain only see this.
 * Queries are upstream's template matches (empty fields are wildcards).
 */
export interface Registry {
  registerService(ns: NetworkService): Promise<NetworkService>;
  unregisterService(name: string): Promise<void>;
  findServices(template: NetworkService): Promise<NetworkService[]>;
  watchServices(template: NetworkService, onEvent: (e: NsEvent) => void): Unsubscribe;

  /** Stores the NSE; sets expiration_time (capped at now + the registry's maximum) and initial_registration_time. */
  registerEndpoint(nse: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint>;
  unregisterEndpoint(name: string): Promise<void>;
  /** Never returns expired endpoints. */
  findEndpoints(template: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint[]>;
  watchEndpoints(template: NetworkServiceEndpoint, onEvent: (e: NseEvent) => void): Unsubscribe;

  /**
   * Like findServices/findEndpoints, for the Request path: may answer from a local copy kept current by a
   * watch (a shared registry would otherwise cost a round trip per Request), so a change may show a moment late.
   */
  lookupServices(template: NetworkService): Promise<NetworkService[]>;
  lookupEndpoints(template: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint[]>;

  close(): Promise<void>;
}
