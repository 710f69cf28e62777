import type * as grpc from '@grpc/grpc-js';
import type { ConnectionEvent, MonitorScopeSelector } from '../api/types.js';
import type { DeepPartial } from '../api/codec.js';
import type { ConnectionRecord, ConnectionStore } from './connection-store.js';
import type { Transport } from '../identity/transport.js';
import type { Policy } from '../identity/policy.js';
import { selectorMatches } from './monitor-selector.js';

export interface MonitorAccess {
  transport: Transport;
  policy?: Policy;
  isAdmin: (spiffeId: string) => boolean;
}

/**
 * connection.MonitorConnection: the current state first, then every change, filtered by the selector and
 * by what the caller may see: its own connections, everything for admins, or the services a policy
 * `monitor` rule grants it.
 */
export function monitorHandlers(store: ConnectionStore, access: MonitorAccess): grpc.UntypedServiceImplementation {
  return {
    MonitorConnections: (call: grpc.ServerWritableStream<MonitorScopeSelector, DeepPartial<ConnectionEvent>>) => {
      const sel = call.request;
      const who = access.transport.peer(call)?.spiffeId;
      const visible = (rec: ConnectionRecord | undefined, service: string) =>
        !access.transport.secure ||
        (who !== undefined && (rec?.owner === who || access.isAdmin(who) || access.policy?.decide('monitor', who, service)?.allowed === true));
      const initial: ConnectionEvent = { type: 'INITIAL_STATE_TRANSFER', connections: {} };
      for (const rec of store.all()) {
        if (selectorMatches(sel, rec.connection) && visible(rec, rec.connection.network_service)) initial.connections[rec.connection.id] = rec.connection;
      }
      call.write(initial);
      const unsubscribe = store.subscribe((e) => {
        if (selectorMatches(sel, e.connection) && visible(e.record, e.connection.network_service)) {
          call.write({ type: e.type, connections: { [e.connection.id]: e.connection } });
        }
      });
      const end = () => unsubscribe();
      call.on('cancelled', end);
      call.on('close', end);
      call.on('error', end);
    },
  };
}
