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
import { nameProblem, validateLabels } from '../api/validate.js';
import type { Registry } from '../registry/types.js';
import { invalidArgument, permissionDenied, toServiceError } from '../util/errors.js';
import type { Transport } from '../identity/transport.js';
import type { Policy } from '../identity/policy.js';
import type { LocalEndpoints } from './local-endpoints.js';

export interface RegistryAccess {
  transport: Transport;
  policy?: Policy;
  isAdmin: (spiffeId: string) => boolean;
}

/**
 * Who may change a registration: with identity, a name belongs to its first registrant (recorded, as
 * upstream does, as path_ids[0]) for as long as it stays registered; admins may change any; a policy
 * `register` rule can further restrict which names an identity may register. Returns the owner to record.
 */
function checkOwner(access: RegistryAccess, call: grpc.ServerUnaryCall<unknown, unknown>, kind: string, name: string, currentOwner: string | undefined): string[] {
  if (!access.transport.secure) return [];
  const who = access.transport.peer(call)?.spiffeId;
  if (!who) throw permissionDenied('the caller presented no verified X.509-SVID');
  if (currentOwner && currentOwner !== who && !access.isAdmin(who)) {
    throw permissionDenied(`${kind} "${name}" is owned by ${currentOwner}, which registered it first; ${who} may not change it`);
  }
  const d = access.policy?.decide('register', who, name);
  if (d && !d.allowed) throw permissionDenied(`${who} may not register ${kind} "${name}": ${d.reason}`);
  return [currentOwner ?? who];
}

const nsDefaults = messageCodec('registry.NetworkService').normalize;
const nseDefaults = messageCodec('registry.NetworkServiceEndpoint').normalize;

function checkName(kind: string, name: string): void {
  if (!name) throw invalidArgument(`${kind} name is empty`);
  const problem = nameProblem(name);
  if (problem) throw invalidArgument(`${kind} name "${name}" is not valid: ${problem}`);
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
export function find<Q extends { watch: boolean }, T, R>(
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

const ownerOf = async <T extends { path_ids: string[] }>(find: Promise<T[]>) => (await find)[0]?.path_ids[0] || undefined;

export function networkServiceRegistryHandlers(registry: Registry, access: RegistryAccess): grpc.UntypedServiceImplementation {
  const current = (name: string) => ownerOf(registry.findServices(nsDefaults({ name })));
  return {
    Register: unary<NetworkService, NetworkService>(async (ns, call) => {
      checkService(ns);
      const owner = checkOwner(access, call, 'network service', ns.name, await current(ns.name));
      return registry.registerService(access.transport.secure ? { ...ns, path_ids: owner } : ns);
    }),
    Unregister: unary<NetworkService, Empty>(async (ns, call) => {
      checkName('network service', ns.name);
      checkOwner(access, call, 'network service', ns.name, await current(ns.name));
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

/**
 * With a remote API, endpoints registering here are published with this nsmd's remote URL — other nodes
 * reach them through it — while the socket they really serve on is remembered locally.
 */
export interface Publishing {
  ownUrl: string | undefined;
  localEndpoints: LocalEndpoints;
}

export function endpointRegistryHandlers(registry: Registry, access: RegistryAccess, publishing: Publishing): grpc.UntypedServiceImplementation {
  const current = (name: string) => ownerOf(registry.findEndpoints(nseDefaults({ name })));
  return {
    Register: unary<NetworkServiceEndpoint, NetworkServiceEndpoint>(async (nse, call) => {
      checkEndpoint(nse);
      const owner = checkOwner(access, call, 'network service endpoint', nse.name, await current(nse.name));
      let published = access.transport.secure ? { ...nse, path_ids: owner } : nse;
      if (publishing.ownUrl) {
        publishing.localEndpoints.set(nse.name, nse.url);
        published = { ...published, url: publishing.ownUrl };
      }
      const stored = await registry.registerEndpoint(published);
      // The endpoint keeps its own URL; only other nodes see this nsmd's.
      return { ...stored, url: nse.url };
    }),
    Unregister: unary<NetworkServiceEndpoint, Empty>(async (nse, call) => {
      checkName('network service endpoint', nse.name);
      checkOwner(access, call, 'network service endpoint', nse.name, await current(nse.name));
      await registry.unregisterEndpoint(nse.name);
      publishing.localEndpoints.delete(nse.name);
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
