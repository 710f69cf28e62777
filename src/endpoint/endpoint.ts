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
import { endpointBegin, kernelServer, pointToPoint } from './elements.js';
import { PointToPointIpam } from './ipam.js';
import { Registration } from './registration.js';
import type { EndpointCloseState, EndpointRecord, EndpointRequestState } from './state.js';

export type EndpointElement = Element<EndpointRequestState, EndpointCloseState>;

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
  /** Your own elements, run after addressing and before the connection is confirmed. */
  elements?: EndpointElement[];
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
  stop(): Promise<void>;
}

export function defaultEndpointSocket(connectTo: string, name: string): string {
  const dir = connectTo.startsWith('unix://') ? path.dirname(connectTo.slice('unix://'.length)) : '/var/lib/networkservicemesh';
  return `unix://${path.join(dir, 'nse', `${name}.sock`)}`;
}

/**
 * Starts a network service endpoint: serves NetworkService on its own socket, hands out point-to-point
 * addresses, names its side of each KERNEL interface, and keeps itself registered with nsmd.
 */
export async function startEndpoint(o: EndpointOptions): Promise<RunningEndpoint> {
  const log = o.log ?? silentLogger;
  const transport = o.transport ?? insecureTransport(log, o.name);
  const table = new Map<string, EndpointRecord>();
  const ipam = new PointToPointIpam(o.cidrPrefixes ?? ['169.254.0.0/16']);
  let chain: ReturnType<typeof compose<EndpointRequestState, EndpointCloseState>>;
  const expiry = new Expiry(o.maxLifetimeMs ?? 10 * 60_000, (id) => {
    const record = table.get(id);
    if (!record) return;
    chain
      .close({ connection: record.connection, record, deadline: Date.now() + 5000, log })
      .catch((e: unknown) => log.warn({ conn: id, err: messageOf(e) }, 'expiry close failed'));
  });
  chain = compose<EndpointRequestState, EndpointCloseState>(
    [
      updatePath(o.name),
      endpointBegin(table),
      authorize<EndpointRequestState, EndpointCloseState>({
        transport,
        ownerOfExisting: (st) => st.existing?.owner,
        ownerOfClosing: (st) => st.record.owner,
      signOwnSegment: true,
      }),
      expiry.element<EndpointRequestState, EndpointCloseState>((st) => st.record.id),
      kernelServer(),
      pointToPoint(ipam),
      ...(o.elements ?? []),
    ],
    {
      request: async (st) => {
        st.request.connection.state = 'UP';
        return structuredClone(st.request.connection);
      },
      close: async () => {},
    },
  );

  const lookup = (conn: Connection) => {
    for (const id of [conn.id, ...(conn.path?.path_segments.map((s) => s.id) ?? [])]) {
      const rec = table.get(id);
      if (rec) return rec;
    }
    return undefined;
  };
  const timeout = o.requestTimeoutMs ?? 15_000;
  const server = await startServer(o.listenOn ?? defaultEndpointSocket(o.connectTo, o.name), (s) =>
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
        if (!record) throw notFound(`endpoint ${o.name} has no connection "${conn.id}"`);
        const caller = callerOf(transport, call as grpc.ServerUnaryCall<unknown, unknown>);
        await chain.close({ connection: conn, record, deadline: Date.now() + timeout, log, ...(caller ? { caller } : {}) });
        return {};
      }),
    }),
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
    async stop() {
      await registration.stop();
      expiry.stop();
      await server.close();
    },
  };
}
