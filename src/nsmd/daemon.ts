import path from 'node:path';
import { addService, startServer, type RunningServer } from '../api/grpc.js';
import { messageCodec } from '../api/codec.js';
import { compose, type Chain } from '../chain/types.js';
import { updatePath } from '../chain/elements/update-path.js';
import { Expiry } from '../chain/elements/expire.js';
import type { Dataplane } from '../dataplane/types.js';
import { createNetlinkDataplane } from '../dataplane/veth/index.js';
import { createEmbeddedRegistry } from '../registry/embedded/index.js';
import type { Registry } from '../registry/types.js';
import { RoundRobin } from '../select/index.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import type { Logger } from '../util/log.js';
import { messageOf } from '../util/errors.js';
import { begin } from './chain/begin.js';
import { clientInfo } from './chain/client-info.js';
import { clientMechanism } from './chain/client-mechanism.js';
import { connect, EndpointClients } from './chain/connect.js';
import { discover } from './chain/discover.js';
import { plumb } from './chain/plumb.js';
import { select } from './chain/select.js';
import type { NsmdCloseState, NsmdRequestState } from './chain/state.js';
import { track } from './chain/track.js';
import type { NsmdConfig } from './config.js';
import { authorize } from '../chain/elements/authorize.js';
import { Policy } from '../identity/policy.js';
import { openTransport, type Transport } from '../identity/transport.js';
import { createEtcdRegistry, parseEtcdRegistryUrl } from '../registry/etcd/index.js';
import { globMatcher } from '../util/glob.js';
import { parseList } from '../util/labels.js';
import { parseSocketUrl } from '../api/grpc.js';
import { LocalEndpoints } from './local-endpoints.js';
import { PeerMonitor } from './peer-monitor.js';
import type { RemoteMechanism, Routing } from './chain/routing.js';
import { WireguardTunnels } from './chain/wireguard-tunnels.js';
import { ConnectionStore, type ConnectionRecord } from './connection-store.js';
import { monitorHandlers } from './monitor-server.js';
import { networkServiceHandlers } from './network-service-server.js';
import { startStatsReporter } from './stats.js';
import { endpointRegistryHandlers, networkServiceRegistryHandlers } from './registry-server.js';
import { SrvResolver } from '../dns/resolver.js';
import { AddressMap, InterdomainRegistry, otherDomainCaller, remoteEndpointRegistryHandlers, remoteServiceRegistryHandlers } from '../interdomain/index.js';

export interface Nsmd {
  readonly url: string;
  readonly store: ConnectionStore;
  readonly registry: Registry;
  readonly dataplane: Dataplane;
  readonly transport: Transport;
  /** Closes one connection through the whole chain, as an expiry would. */
  closeConnection(id: string, reason: string): Promise<void>;
  stop(): Promise<void>;
}

async function openRegistry(cfg: NsmdConfig, log: Logger): Promise<Registry> {
  if (cfg.registryUrl.startsWith('etcd://')) {
    return createEtcdRegistry({
      ...parseEtcdRegistryUrl(cfg.registryUrl),
      maxExpirationMs: cfg.registryExpiration,
      logger: log.child({ component: 'registry' }),
    });
  }
  if (cfg.registryUrl.startsWith('k8s://')) {
    // Imported on demand: the Kubernetes client takes about a second to load and only this backend needs it.
    const { createK8sRegistry, parseK8sRegistryUrl } = await import('../registry/k8s/index.js');
    return createK8sRegistry({
      ...parseK8sRegistryUrl(cfg.registryUrl, process.env),
      maxExpirationMs: cfg.registryExpiration,
      logger: log.child({ component: 'registry' }),
    });
  }
  if (cfg.registryUrl !== 'embedded') {
    throw new Error(`NSM_REGISTRY_URL "${cfg.registryUrl}" is not supported: use "embedded", etcd://host:port[,host:port...] or k8s://[namespace]`);
  }
  return createEmbeddedRegistry({
    stateFile: path.join(cfg.stateDir, 'registry.json'),
    maxExpirationMs: cfg.registryExpiration,
    logger: log.child({ component: 'registry' }),
  });
}

/** Assembles nsmd: registry, data plane, the Request chain, and the local gRPC API. */
export async function startNsmd(cfg: NsmdConfig, log: Logger): Promise<Nsmd> {
  const policy = cfg.authzPolicy ? Policy.load(cfg.authzPolicy) : undefined;
  const isAdmin = globMatcher(parseList(cfg.adminIds));
  const transport = await openTransport({ insecure: cfg.insecure, workloadApi: cfg.workloadApi, component: 'nsmd', log, federatesWith: cfg.federatesWith });
  // Names with @domain are asked of that domain; everything else is this domain's registry. Other nodes and
  // domains (the remote API) are answered from this domain's registry only: nsmd relays nobody's queries.
  const ownRegistry = await openRegistry(cfg, log);
  const registry = new InterdomainRegistry(ownRegistry, {
    resolver: new SrvResolver({ ...(cfg.dnsServers ? { servers: parseList(cfg.dnsServers) } : {}), log: log.child({ component: 'dns' }) }),
    transport,
    dialTimeoutMs: cfg.dialTimeout,
    queryTimeoutMs: Math.min(cfg.requestTimeout, 5000),
    lookupTtlMs: cfg.interdomainLookupTtl,
    log,
  });
  const dataplane = await createNetlinkDataplane({ logger: log.child({ component: 'dataplane' }) });
  const store = new ConnectionStore(path.join(cfg.stateDir, 'connections'), log);
  const clients = new EndpointClients(transport);
  const mutex = new KeyedMutex();
  const routing = await routingOf(cfg, log);

  let chain: Chain<NsmdRequestState, NsmdCloseState>;
  const closeRecord = (rec: ConnectionRecord, reason: string) => {
    const clog = log.child({ conn: rec.id, reason });
    clog.info('closing connection');
    return chain.close({ connection: rec.connection, record: rec, deadline: Date.now() + cfg.requestTimeout, log: clog });
  };
  const closeConnection = async (id: string, reason: string) => {
    const rec = store.get(id);
    if (rec) await closeRecord(rec, reason);
  };
  const expiry = new Expiry(cfg.maxTokenLifetime, (id) => {
    closeConnection(id, 'not refreshed before expiry').catch((e: unknown) => log.error({ conn: id, err: messageOf(e) }, 'expiry close failed'));
  });

  const roundRobin = new RoundRobin();
  // wireguard-go is supervised only once a WireGuard connection needs it.
  let wireguard: WireguardTunnels | undefined;
  const tunnels = () => {
    if (!wireguard) throw new Error('WireGuard is not ready');
    return wireguard;
  };
  if ([...routing.mechanisms, ...routing.interdomainMechanisms].includes('WIREGUARD')) wireguard = await WireguardTunnels.start(log, (connId) => store.setState(connId, 'DOWN'));
  // The same chain serves local clients (KERNEL) and other nodes' nsmd (VXLAN, remote API only).
  const chainFor = (remote: boolean) => compose<NsmdRequestState, NsmdCloseState>([
    updatePath(cfg.name, (callerId) => store.idForClient(callerId)),
    begin(store, mutex),
    authorize<NsmdRequestState, NsmdCloseState>({
      transport,
      ...(policy ? { policy } : {}),
      isAdmin,
      ownerOfExisting: (st) => st.existing?.owner,
      ownerOfClosing: (st) => st.record.owner,
      signOwnSegment: false,
    }),
    ...(remote ? [otherDomainCaller(transport)] : []),
    expiry.element<NsmdRequestState, NsmdCloseState>((st) => st.record.id),
    track(store),
    clientInfo({ nodeName: cfg.nodeName, clusterName: cfg.clusterName }),
    clientMechanism(dataplane, remote ? routing.mechanisms : []),
    discover(remote ? ownRegistry : registry),
    select(roundRobin),
    plumb(dataplane, store, routing, cfg.mtu, tunnels),
    connect(clients, Math.min(cfg.requestTimeout, 5000), transport, cfg.maxTokenLifetime, cfg.dialTimeout, routing, tunnels),
  ]);
  chain = chainFor(false);
  const remoteChain = chainFor(true);
  const peers = new PeerMonitor(store, transport, closeRecord, log);

  // An endpoint that leaves the registry (unregistered or expired) takes its connections down with it.
  const unwatch = registry.watchEndpoints(messageCodec('registry.NetworkServiceEndpoint').normalize({}), (e) => {
    if (!e.deleted) return;
    // Only an endpoint's own socket; a peer nsmd's channel (a published URL) still serves its other endpoints.
    if (e.nse.url.startsWith('unix:')) clients.forget(e.nse.url);
    for (const rec of store.all()) if (rec.endpoint.name === e.nse.name) store.setState(rec.id, 'DOWN');
  });

  await adoptPersisted(store, expiry, closeRecord, log);

  let server: RunningServer | undefined;
  let remote: RunningServer | undefined;
  try {
    const access = { transport, isAdmin, ...(policy ? { policy } : {}) };
    server = await startServer(
      cfg.listenOn,
      (s) => {
        addService(s, 'networkservice.NetworkService', networkServiceHandlers({ chain, store, requestTimeoutMs: cfg.requestTimeout, transport, log }));
        addService(s, 'connection.MonitorConnection', monitorHandlers(store, access));
        addService(s, 'registry.NetworkServiceRegistry', networkServiceRegistryHandlers(registry, access));
        addService(s, 'registry.NetworkServiceEndpointRegistry', endpointRegistryHandlers(registry, access, routing));
      },
      transport.serverCredentials(),
      // Without identity the socket is the only guard left: root only.
      transport.secure ? 0o666 : 0o600,
    );
    if (cfg.remoteListenOn) {
      remote = await startServer(cfg.remoteListenOn, (s) => {
        addService(s, 'networkservice.NetworkService', networkServiceHandlers({ chain: remoteChain, store, requestTimeoutMs: cfg.requestTimeout, transport, log }));
        addService(s, 'connection.MonitorConnection', monitorHandlers(store, access));
        // Other domains find this domain's services and endpoints here (Find only).
        addService(s, 'registry.NetworkServiceRegistry', remoteServiceRegistryHandlers(ownRegistry));
        addService(s, 'registry.NetworkServiceEndpointRegistry', remoteEndpointRegistryHandlers(ownRegistry, transport, routing.addressMap));
      }, transport.serverCredentials());
    }
  } catch (e) {
    await server?.close();
    peers.stop();
    unwatch();
    expiry.stop();
    await Promise.allSettled([registry.close(), dataplane.close(), store.flush()]);
    transport.close();
    throw e;
  }
  log.info(
    { listenOn: server.url, remoteListenOn: remote?.url, publishedAs: routing.ownUrl, tunnelIp: routing.tunnelIp, nsmName: cfg.name, node: cfg.nodeName, connections: store.size },
    'nsmd ready',
  );
  const stats = startStatsReporter(cfg.statsInterval, log, () => store.size);

  return {
    url: server.url,
    store,
    registry,
    dataplane,
    transport,
    closeConnection,
    async stop() {
      stats.stop();
      await server.close();
      await remote?.close();
      peers.stop();
      unwatch();
      expiry.stop();
      if (cfg.cleanupOnExit) await Promise.allSettled(store.all().map((r) => closeRecord(r, 'nsmd stopping')));
      await store.flush();
      await routing.localEndpoints.flush();
      clients.close();
      await registry.close();
      await wireguard?.close();
      await dataplane.close();
      transport.close();
    },
  };
}

/** This node's published URL and tunnel address, from the remote API settings. */
async function routingOf(cfg: NsmdConfig, log: Logger): Promise<Routing> {
  let ownUrl = cfg.remoteUrl || undefined;
  if (!ownUrl && cfg.remoteListenOn) {
    const host = parseSocketUrl(cfg.remoteListenOn).target.replace(/:\d+$/, '');
    if (host === '0.0.0.0' || host === '[::]' || host === '') {
      throw new Error(`NSM_REMOTE_LISTEN_ON ${cfg.remoteListenOn} names no address other nodes can use: set NSM_REMOTE_URL`);
    }
    ownUrl = cfg.remoteListenOn;
  }
  const tunnelIp = cfg.tunnelIp || (ownUrl ? parseSocketUrl(ownUrl).target.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1') : undefined);
  const mechanismList = (setting: string, text: string): RemoteMechanism[] => {
    const list = parseList(text).map((m) => m.toUpperCase());
    const unknown = list.filter((m) => m !== 'VXLAN' && m !== 'WIREGUARD');
    if (unknown.length || list.length === 0) throw new Error(`${setting} "${text}": expected a comma list of VXLAN and WIREGUARD`);
    return list as RemoteMechanism[];
  };
  return {
    ownUrl,
    tunnelIp,
    vxlanPort: cfg.vxlanPort,
    mechanisms: mechanismList('NSM_MECHANISM_PRIORITY', cfg.mechanismPriority),
    interdomainMechanisms: mechanismList('NSM_INTERDOMAIN_MECHANISM_PRIORITY', cfg.interdomainMechanismPriority),
    addressMap: AddressMap.load(cfg.mapIpFile),
    wireguardKeyMaxAgeMs: cfg.wireguardKeyMaxAge,
    localEndpoints: await LocalEndpoints.open(cfg.stateDir, log),
  };
}

/**
 * Connections outlive an nsmd restart: live ones are taken back (their devices are still in place and a
 * refresh finds them), lapsed ones are closed so their devices do not leak. WireGuard ends cannot be taken
 * back — their wireguard-go died with the previous nsmd and their keys were never written anywhere — so
 * those connections are closed too (the peer node removes its end) and their clients request anew.
 */
async function adoptPersisted(
  store: ConnectionStore,
  expiry: Expiry,
  closeRecord: (rec: ConnectionRecord, reason: string) => Promise<void>,
  log: Logger,
): Promise<void> {
  const persisted = await store.loadPersisted();
  const closing: [ConnectionRecord, string][] = [];
  for (const rec of persisted) {
    store.put(rec);
    if (rec.expiresAt <= Date.now()) closing.push([rec, 'lapsed while nsmd was down']);
    else if (rec.dataplane.tunnel?.type === 'WIREGUARD') closing.push([rec, 'WireGuard end did not survive the restart']);
    else expiry.arm(rec.id, rec.expiresAt);
  }
  if (persisted.length) log.info({ adopted: persisted.length - closing.length, closed: closing.length }, 'connections from the previous run');
  await Promise.allSettled(closing.map(([rec, reason]) => closeRecord(rec, reason)));
}
