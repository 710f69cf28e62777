import type * as grpc from '@grpc/grpc-js';
import type { DeepPartial } from '../api/codec.js';
import type { ConnectionEvent, MonitorScopeSelector } from '../api/types.js';
import type { Transport } from '../identity/transport.js';
import { selectorMatches } from '../nsmd/monitor-selector.js';
import type { EndpointEvents } from './events.js';
import type { EndpointRecord } from './state.js';

type MonitorCall = grpc.ServerWritableStream<MonitorScopeSelector, DeepPartial<ConnectionEvent>>;

/**
 * connection.MonitorConnection on the endpoint's socket, as upstream endpoints serve it: the current
 * connections first, then every change. nsmd watches it so that a connection the endpoint ends by itself
 * (expiry, shutdown, a passthrough whose onward side died) is closed on nsmd's side and the client's too.
 * With identity a caller sees only the connections it made.
 */
export function endpointMonitorHandlers(
  table: Map<string, EndpointRecord>,
  events: EndpointEvents,
  transport: Transport,
): { handlers: grpc.UntypedServiceImplementation; endAll(): void } {
  const calls = new Set<MonitorCall>();
  return {
    handlers: {
      MonitorConnections: (call: MonitorCall) => {
        const sel = call.request;
        const who = transport.peer(call)?.spiffeId;
        const visible = (rec: EndpointRecord) => !transport.secure || (who !== undefined && rec.owner === who);
        const initial: ConnectionEvent = { type: 'INITIAL_STATE_TRANSFER', connections: {} };
        for (const rec of table.values()) {
          if (visible(rec) && selectorMatches(sel, rec.connection)) initial.connections[rec.connection.id] = rec.connection;
        }
        call.write(initial);
        const unsubscribe = events.subscribe((e) => {
          if (visible(e.record) && selectorMatches(sel, e.connection)) call.write({ type: e.type, connections: { [e.connection.id]: e.connection } });
        });
        calls.add(call);
        const done = () => {
          unsubscribe();
          calls.delete(call);
        };
        call.on('cancelled', done);
        call.on('close', done);
        call.on('error', done);
      },
    },
    endAll() {
      for (const call of calls) call.end();
      calls.clear();
    },
  };
}
