import type * as grpc from '@grpc/grpc-js';
import { unary, parseSocketUrl } from '../api/grpc.js';
import type { DeepPartial } from '../api/codec.js';
import type {
  Empty,
  NetworkService,
  NetworkServiceEndpoint,
  NetworkServiceEndpointQuery,
  NetworkServiceEndpointResponse,
  NetworkServiceQuery,
  NetworkServiceResponse,
} from '../api/types.js';
import { messageCodec } from '../api/codec.js';
import { validateLabels } from '../api/validate.js';
import type { Registry } from '../registry/types.js';
import { invalidArgument, toServiceError } from '../util/errors.js';

const NAME = /^[a-z0-9]([-a-z0-9._]*[a-z0-9])?(@[a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$/i;
const nsDefaults = messageCodec('registry.NetworkService').normalize;
const nseDefaults = messageCodec('registry.NetworkServiceEndpoint').normalize;

function checkName(kind: string, name: string): void {
  if (!name) throw invalidArgument(`${kind} name is empty`);
  if (name.length > 253 || !NAME.test(name)) {
    throw invalidArgument(`${kind} name "${name}" is not valid: use letters, digits, "-", "." and "_" (at most 253), optionally followed by @domain`);
  }
}

function checkService(ns: NetworkService): void {
  checkName('network service', ns.name);
  if (ns.payload && ns.payload !== 'IP' && ns.payload !== 'ETHERNET') throw invalidArgument(`payload "${ns.payload}" is not IP or ETHERNET`);
  ns.matches.forEach((m, i) => {
    validateLabels(m.source_selector, `matches[${i}].source_selector`);
    m.routes.forEach((r, j) => validateLabels(r.destination_selector, `matches[${i}].routes[${j}].destination_selector`));
  });
}

function checkEndpoint(nse: NetworkServiceEndpoint): void {
  checkName('network service endpoint', nse.name);
  if (nse.network_service_names.length === 0) throw invalidArgument(`endpoint "${nse.name}" serves no network service: set network_service_names`);
  nse.network_service_names.forEach((n) => checkName('network service', n));
  try {
    parseSocketUrl(nse.url);
  } catch (e) {
    throw invalidArgument(`endpoint "${nse.name}" url: ${(e as Error).message}`);
  }
  for (const [svc, l] of Object.entries(nse.network_service_labels)) validateLabels(l.labels, `network_service_labels[${svc}]`);
}

/**
 * Without watch: the current matches, then the stream ends. With watch: the registry's watch, which
 * itself starts with the current matches, then every change until the caller cancels.
 */
function find<Q extends { watch: boolean }, T, R>(
  templateOf: (query: Q) => T,
  current: (template: T) => Promise<T[]>,
  watch: (template: T, on: (item: T, deleted: boolean) => void) => () => void,
  wrap: (item: T, deleted: boolean) => R,
): grpc.handleServerStreamingCall<Q, R> {
  return (call) => {
    const template = templateOf(call.request);
    if (call.request.watch) {
      const unsubscribe = watch(template, (item, deleted) => call.write(wrap(item, deleted)));
      call.on('cancelled', unsubscribe);
      call.on('close', unsubscribe);
      call.on('error', unsubscribe);
      return;
    }
    current(template).then(
      (items) => {
        for (const item of items) call.write(wrap(item, false));
        call.end();
      },
      (e: unknown) => call.destroy(toServiceError(e) as Error),
    );
  };
}

export function networkServiceRegistryHandlers(registry: Registry): grpc.UntypedServiceImplementation {
  return {
    Register: unary<NetworkService, NetworkService>(async (ns) => {
      checkService(ns);
      return registry.registerService(ns);
    }),
    Unregister: unary<NetworkService, Empty>(async (ns) => {
      checkName('network service', ns.name);
      await registry.unregisterService(ns.name);
      return {};
    }),
    Find: find<NetworkServiceQuery, NetworkService, DeepPartial<NetworkServiceResponse>>(
      (q) => q.network_service ?? nsDefaults({}),
      (t) => registry.findServices(t),
      (t, on) => registry.watchServices(t, (e) => on(e.ns, e.deleted)),
      (ns, deleted) => ({ network_service: ns, deleted }),
    ),
  };
}

export function endpointRegistryHandlers(registry: Registry): grpc.UntypedServiceImplementation {
  return {
    Register: unary<NetworkServiceEndpoint, NetworkServiceEndpoint>(async (nse) => {
      checkEndpoint(nse);
      return registry.registerEndpoint(nse);
    }),
    Unregister: unary<NetworkServiceEndpoint, Empty>(async (nse) => {
      checkName('network service endpoint', nse.name);
      await registry.unregisterEndpoint(nse.name);
      return {};
    }),
    Find: find<NetworkServiceEndpointQuery, NetworkServiceEndpoint, DeepPartial<NetworkServiceEndpointResponse>>(
      (q) => q.network_service_endpoint ?? nseDefaults({}),
      (t) => registry.findEndpoints(t),
      (t, on) => registry.watchEndpoints(t, (e) => on(e.nse, e.deleted)),
      (nse, deleted) => ({ network_service_endpoint: nse, deleted }),
    ),
  };
}
