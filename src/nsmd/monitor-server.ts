import type * as grpc from '@grpc/grpc-js';
import type { ConnectionEvent, MonitorScopeSelector } from '../api/types.js';
import type { DeepPartial } from '../api/codec.js';
import type { ConnectionStore } from './connection-store.js';
import { selectorMatches } from './monitor-selector.js';

/** connection.MonitorConnection: the current state first, then every change, filtered by the selector. */
export function monitorHandlers(store: ConnectionStore): grpc.UntypedServiceImplementation {
  return {
    MonitorConnections: (call: grpc.ServerWritableStream<MonitorScopeSelector, DeepPartial<ConnectionEvent>>) => {
      const sel = call.request;
      const initial: ConnectionEvent = { type: 'INITIAL_STATE_TRANSFER', connections: {} };
      for (const rec of store.all()) if (selectorMatches(sel, rec.connection)) initial.connections[rec.connection.id] = rec.connection;
      call.write(initial);
      const unsubscribe = store.subscribe((e) => {
        if (selectorMatches(sel, e.connection)) call.write({ type: e.type, connections: { [e.connection.id]: e.connection } });
      });
      const end = () => unsubscribe();
      call.on('cancelled', end);
      call.on('close', end);
      call.on('error', end);
    },
  };
}
