import path from 'node:path';
import { addService, startServer, unary } from '../api/grpc.js';
import type { Connection, Empty, NetworkServiceRequest } from '../api/types.js';
import { validateRequest } from '../api/validate.js';
import { Expiry } from '../chain/elements/expire.js';
import { authorize } from '../chain/elements/authorize.js';
import { insecureTransport, type Transport } from '../identity/transport.js';
import { callerOf } from '../identity/caller.js';
import type * as grpc from '@grpc/grpc-js';
import { updatePath } from '../chain/elements/update-path.js';
import { compose, type Element } from '../chain/types.js';
import { notFound, messageOf } from '../util/errors.js';
import { silentLogger, type Logger } from '../util/log.js';
import { waitFor } from '../util/wait-for.js';
import { endpointBegin, kernelServer, pointToPoint } from './elements.js';
import { EndpointEvents } from './events.js';
import { PointToPointIpam } from './ipam.js';
import { endpointMonitorHandlers } from './monitor.js';
import { Registration } from './registration.js';
import type { EndpointCloseState, EndpointRecord, EndpointRequestState } from './state.js';

export type EndpointElement = Element<EndpointRequestState, EndpointCloseState>;

/** What an endpoint's own elements may do to the connections it serves, outside a Request or Close. */
export interface EndpointControl {
  /**
   * Ends a connection from the endpoint's side: its chain's Close runs here, and nsmd, which watches the
   * endpoint's monitor stream, closes its side and the client's.
   */
  close(id: string, reason: string): Promise<void>;
  /** Reports a connection DOWN (or UP again) on the monitor stream; nsmd passes it on to the client. */
  setState(id: string, state: 'UP' | 'DOWN'): void;
}

export interface EndpointOptions {
  /** Endpoint name: its path segment and registry name. */
  name: string;
  serviceNames: string[];
  /** Labels the service's destination selectors see, the same for each served service. */
  labels?: Record<string, string>;
  /** nsmd's local API. */
  connectTo: string;
  /** Where this endpoint serves; defaults to a socket beside nsmd's. */
  listenOn?: string;
  /** Prefixes point-to-point addresses come from (NSM_CIDR_PREFIX). */
  cidrPrefixes?: string[];
  /** Start of this endpoint's interface names (1–6 characters [a-z0-9], default "nsm"). */
  interfacePrefix?: string;
  /**
   * Your own elements, run after addressing and before the connection is confirmed. Given as a function,
   * they get the endpoint's control (to close a connection or report it DOWN on their own).
   */
  elements?: EndpointElement[] | ((control: EndpointControl) => EndpointElement[]);
  maxLifetimeMs?: number;
  requestTimeoutMs?: number;
  /** Register each served network service that does not exist yet, with this payload. */
  registerServices?: { payload: string } | false;
  /** Mutual TLS and path tokens (openTransport); without one the endpoint runs in insecure development mode. */
  transport?: Transport;
  log?: Logger;
}

export interface RunningEndpoint {
  url: string;
  connections(): Connection[];
  /** Ends every connection from the endpoint's side, and waits a moment for nsmd to close its sides too. */
  closeAll(reason: string): Promise<void>;
  stop(): Promise<void>;
}

export function defaultEndpointSocket(connectTo: string, name: string): string {
  const dir = connectTo.startsWith('unix://') ? path.dirname(connectTo.slice('unix://'.length)) : '/var/lib/networkservicemesh';
  return `unix://${path.join(dir, 'nse', `${name}.sock`)}`;
}

/** How long an id closed by the endpoint itself is remembered, so that nsmd's Close that follows succeeds. */
const CLOSED_MEMORY_MS = 60_000;
/** How long closeAll waits for nsmd to follow; an nsmd that does not watch endpoints leaves its side to expire. */
const PEER_FOLLOW_MS = 3000;
const INTERFACE_PREFIX = /^[a-z][a-z0-9]{0,5}$/;

/**
 * Starts a network service endpoint: serves NetworkService and MonitorConnection on its own socket, hands
 * out point-to-point addresses, names its side of each KERNEL interface, and keeps itself registered with nsmd.
 */
export async function startEndpoint(o: EndpointOptions): Promise<RunningEndpoint> {
  const log = o.log ?? silentLogger;
  const transport = o.transport ?? insecureTransport(log, o.name);
  if (o.interfacePrefix !== undefined && !INTERFACE_PREFIX.test(o.interfacePrefix)) {
    throw new Error(`interface prefix "${o.interfacePrefix}" must be 1 to 6 characters [a-z0-9], starting with a letter`);
  }
  const table = new Map<string, EndpointRecord>();
  const events = new EndpointEvents();
  const ipam = new PointToPointIpam(o.cidrPrefixes ?? ['169.254.0.0/16']);
  const timeout = o.requestTimeoutMs ?? 15_000;
  // Ids this endpoint closed by itself: nsmd follows with a Close of its own, which is then no error.
  const closedHere = new Map<string, NodeJS.Timeout>();
  const awaitingPeer = new Set<string>();
  let chain: ReturnType<typeof compose<EndpointRequestState, EndpointCloseState>>;

  const closeHere = async (id: string, reason: string): Promise<void> => {
    const record = table.get(id);
    if (!record) return;
    log.info({ conn: id, reason }, 'closing connection');
    clearTimeout(closedHere.get(id));
    closedHere.set(id, setTimeout(() => closedHere.delete(id), CLOSED_MEMORY_MS).unref());
    await chain.close({ connection: record.connection, record, deadline: Date.now() + timeout, log: log.child({ conn: id }) });
  };
  const control: EndpointControl = {
    close: closeHere,
    setState(id, state) {
      const record = table.get(id);
      if (!record || record.connection.state === state) return;
      record.connection.state = state;
      events.emit({ type: 'UPDATE', connection: record.connection, record });
    },
  };
  const expiry = new Expiry(o.maxLifetimeMs ?? 10 * 60_000, (id) => {
    closeHere(id, 'not refreshed before expiry').catch((e: unknown) => log.warn({ conn: id, err: messageOf(e) }, 'expiry close failed'));
  });
  const own = typeof o.elements === 'function' ? o.elements(control) : (o.elements ?? []);
  chain = compose<EndpointRequestState, EndpointCloseState>(
    [
      updatePath(o.name),
      endpointBegin(table, events),
      authorize<EndpointRequestState, EndpointCloseState>({
        transport,
        ownerOfExisting: (st) => st.existing?.owner,
        ownerOfClosing: (st) => st.record.owner,
        signOwnSegment: true,
      }),
      expiry.element<EndpointRequestState, EndpointCloseState>((st) => st.record.id),
      kernelServer('/proc/self/ns/net', o.interfacePrefix),
      pointToPoint(ipam),
      ...own,
    ],
    {
      request: async (st) => {
        st.request.connection.state = 'UP';
        return structuredClone(st.request.connection);
      },
      close: async () => {},
    },
  );

  const idsOf = (conn: Connection) => [conn.id, ...(conn.path?.path_segments.map((s) => s.id) ?? [])];
  const lookup = (conn: Connection) => {
    for (const id of idsOf(conn)) {
      const rec = table.get(id);
      if (rec) return rec;
    }
    return undefined;
  };
  const monitor = endpointMonitorHandlers(table, events, transport);
  const server = await startServer(
    o.listenOn ?? defaultEndpointSocket(o.connectTo, o.name),
    (s) => {
      addService(s, 'networkservice.NetworkService', {
        Request: unary<NetworkServiceRequest, Connection>(async (req, call) => {
          validateRequest(req);
          const caller = callerOf(transport, call as grpc.ServerUnaryCall<unknown, unknown>);
          return chain.request({
            request: req,
            deadline: Date.now() + timeout,
            log: log.child({ conn: req.connection.id }),
            refresh: false,
            ...(caller ? { caller } : {}),
          });
        }),
        Close: unary<Connection, Empty>(async (conn, call) => {
          const record = lookup(conn);
          if (!record) {
            const mine = idsOf(conn).find((id) => closedHere.has(id));
            if (mine === undefined) throw notFound(`endpoint ${o.name} has no connection "${conn.id}"`);
            awaitingPeer.delete(mine);
            return {};
          }
          const caller = callerOf(transport, call as grpc.ServerUnaryCall<unknown, unknown>);
          await chain.close({ connection: conn, record, deadline: Date.now() + timeout, log, ...(caller ? { caller } : {}) });
          return {};
        }),
      });
      addService(s, 'connection.MonitorConnection', monitor.handlers);
    },
    transport.serverCredentials(),
    transport.secure ? 0o666 : 0o600,
  );

  const labels = o.labels ?? {};
  const registration = new Registration(
    o.connectTo,
    {
      name: o.name,
      network_service_names: o.serviceNames,
      network_service_labels: Object.fromEntries(o.serviceNames.map((s) => [s, { labels }])),
      url: server.url,
    },
    o.registerServices === false ? undefined : (o.registerServices ?? { payload: 'IP' }),
    transport,
    log,
  );
  try {
    await registration.start();
  } catch (e) {
    await server.close();
    throw new Error(`could not register endpoint "${o.name}" with nsmd at ${o.connectTo}: ${messageOf(e)}`);
  }
  log.info({ name: o.name, services: o.serviceNames, url: server.url }, 'endpoint registered');

  return {
    url: server.url,
    connections: () => [...table.values()].map((r) => r.connection),
    async closeAll(reason) {
      const ids = [...table.keys()];
      if (events.subscribers > 0) for (const id of ids) awaitingPeer.add(id);
      const results = await Promise.allSettled(ids.map((id) => closeHere(id, reason)));
      for (const r of results) if (r.status === 'rejected') log.warn({ err: messageOf(r.reason) }, 'close failed');
      await waitFor('nsmd to close its side of the connections', () => awaitingPeer.size === 0, PEER_FOLLOW_MS).catch(() =>
        log.warn({ left: awaitingPeer.size }, 'nsmd did not follow every close; its side ends at expiry'),
      );
      awaitingPeer.clear();
    },
    async stop() {
      await registration.stop();
      expiry.stop();
      // Ending the monitor streams first lets the server shut down at once rather than wait for them.
      monitor.endAll();
      await server.close();
      for (const t of closedHere.values()) clearTimeout(t);
    },
  };
}
