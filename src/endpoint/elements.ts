import { createHash } from 'node:crypto';
import { KernelParam, MechanismCls, MechanismType } from '../api/types.js';
import type { Element } from '../chain/types.js';
import { inodeUrlOf } from '../dataplane/netns.js';
import { KeyedMutex } from '../util/keyed-mutex.js';
import { invalidArgument } from '../util/errors.js';
import type { EndpointEvents } from './events.js';
import type { PointToPointIpam } from './ipam.js';
import type { EndpointCloseState, EndpointRecord, EndpointRequestState } from './state.js';

type EndpointElement = Element<EndpointRequestState, EndpointCloseState>;

/** Serialises events per connection and keeps the endpoint's table of live connections, announcing each change. */
export function endpointBegin(table: Map<string, EndpointRecord>, events: EndpointEvents, mutex = new KeyedMutex()): EndpointElement {
  return {
    name: 'begin',
    request: (st, next) =>
      mutex.run(st.request.connection.id, async () => {
        st.existing = table.get(st.request.connection.id);
        st.refresh = st.existing !== undefined;
        const conn = await next.request(st);
        const record: EndpointRecord = {
          id: conn.id,
          connection: structuredClone(conn),
          expiresAt: st.expiresAt ?? Infinity,
          ...(st.owner ? { owner: st.owner } : {}),
        };
        table.set(conn.id, record);
        events.emit({ type: 'UPDATE', connection: record.connection, record });
        return conn;
      }),
    close: (st, next) =>
      mutex.run(st.record.id, async () => {
        if (table.get(st.record.id) !== st.record) return;
        try {
          await next.close(st);
        } finally {
          table.delete(st.record.id);
          events.emit({ type: 'DELETE', connection: { ...st.record.connection, state: 'DOWN' }, record: st.record });
        }
      }),
  };
}

/**
 * The endpoint side of KERNEL: names the interface nsmd will create here and says which namespace "here"
 * is. The name is derived from the connection id so that refreshes and restarts agree on it; its prefix
 * (1–6 characters, leaving 8 or more hex digits) lets an endpoint tell its client-facing interfaces from others, e.g. in firewall rules.
 */
export function kernelServer(netnsFile = '/proc/self/ns/net', prefix = 'nsm'): EndpointElement {
  const inodeUrl = inodeUrlOf(netnsFile);
  return {
    name: 'kernel-mechanism',
    request(st, next) {
      const conn = st.request.connection;
      const offered = st.request.mechanism_preferences.some((m) => m.type === MechanismType.KERNEL) || conn.mechanism?.type === MechanismType.KERNEL;
      if (!offered) throw invalidArgument('this endpoint serves only the KERNEL mechanism, and none was offered');
      const name = conn.mechanism?.parameters[KernelParam.NAME] || prefix + createHash('sha256').update(conn.id).digest('hex').slice(0, 14 - prefix.length);
      conn.mechanism = { cls: MechanismCls.LOCAL, type: MechanismType.KERNEL, parameters: { [KernelParam.NAME]: name, [KernelParam.INODE_URL]: inodeUrl } };
      return next.request(st);
    },
    close: (st, next) => next.close(st),
  };
}

/** Point-to-point addressing: a /32 (or /128) pair per connection, routes to each other's address. */
export function pointToPoint(ipam: PointToPointIpam): EndpointElement {
  return {
    name: 'point-to-point-ipam',
    async request(st, next) {
      const conn = st.request.connection;
      conn.context ??= { ip_context: null, dns_context: null, ethernet_context: null, extra_context: {}, MTU: 0 };
      const ip = (conn.context.ip_context ??= {
        src_ip_addrs: [], dst_ip_addrs: [], src_ip_required: false, dst_ip_required: false, src_routes: [], dst_routes: [],
        excluded_prefixes: [], ip_neighbors: [], extra_prefix_request: [], extra_prefixes: [], policies: [],
      });
      let a;
      try {
        a = ipam.allocate(conn.id, ip.excluded_prefixes);
      } catch (e) {
        throw invalidArgument(`address allocation failed: ${(e as Error).message}`);
      }
      ip.src_ip_addrs = a.src;
      ip.dst_ip_addrs = a.dst;
      const keep = (routes: { prefix: string; nextHop: string }[], own: string[]) =>
        routes.filter((r) => !own.includes(r.prefix));
      ip.src_routes = [...keep(ip.src_routes, a.dst), ...a.dst.map((prefix) => ({ prefix, nextHop: '' }))];
      ip.dst_routes = [...keep(ip.dst_routes, a.src), ...a.src.map((prefix) => ({ prefix, nextHop: '' }))];
      try {
        return await next.request(st);
      } catch (e) {
        if (!st.existing) ipam.release(conn.id);
        throw e;
      }
    },
    async close(st, next) {
      try {
        await next.close(st);
      } finally {
        ipam.release(st.record.id);
      }
    },
  };
}
