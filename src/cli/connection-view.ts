import type { Connection } from '../api/types.js';
import { formatTable } from './table.js';

/** The columns a person wants to see of a connection, shared by nsc and nsmctl. */
export function connectionsTable(conns: Connection[]): string {
  return formatTable(
    ['ID', 'SERVICE', 'ENDPOINT', 'INTERFACE', 'CLIENT ADDRS', 'ENDPOINT ADDRS', 'MTU', 'STATE'],
    conns.map((c) => [
      c.id,
      c.network_service,
      c.network_service_endpoint_name,
      c.mechanism?.parameters.name ?? '',
      (c.context?.ip_context?.src_ip_addrs ?? []).join(','),
      (c.context?.ip_context?.dst_ip_addrs ?? []).join(','),
      String(c.context?.MTU ?? ''),
      c.state,
    ]),
  );
}
