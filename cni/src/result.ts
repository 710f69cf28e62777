/**
 * The CNI result: the previous plugin's result, passed on untouched, with this plugin's interfaces, addresses
 * and routes appended, so the runtime sees every interface of the pod in one place.
 */
import type { Connection } from '../../src/api/types.js';
import { KernelParam } from '../../src/api/types.js';
import { parseIp } from '../../src/dataplane/ip.js';
import type { PrevResult } from './config.js';
import type { ContainerLink } from './netns-links.js';
import { atLeast } from './version.js';

export interface CniInterface {
  name: string;
  mac?: string;
  sandbox?: string;
}

export interface CniIp {
  address: string;
  gateway?: string;
  interface?: number;
  /** Only before 1.0.0. */
  version?: '4' | '6';
}

export interface CniRoute {
  dst: string;
  gw?: string;
}

export interface CniResult {
  cniVersion: string;
  interfaces?: CniInterface[];
  ips?: CniIp[];
  routes?: CniRoute[];
  dns?: Record<string, unknown>;
  [other: string]: unknown;
}

/** The previous result as it came, in `version`; an empty one when this plugin runs first. */
export function baseResult(prev: PrevResult | undefined, version: string): CniResult {
  return prev ? { ...prev, cniVersion: version } : { cniVersion: version, interfaces: [], ips: [], dns: {} };
}

/** The interface a connection landed on in the container, as nsmd named it in the mechanism. */
export function ifnameOf(conn: Connection): string {
  return conn.mechanism?.parameters[KernelParam.NAME] ?? '';
}

/**
 * Appends one interface per connection (its MAC read back from the container), its client-side addresses
 * with the endpoint's address of the same family as gateway, and the routes the service pushes.
 */
export function appendConnections(base: CniResult, conns: Connection[], links: ContainerLink[], sandbox: string): CniResult {
  const legacy = !atLeast(base.cniVersion, '1.0.0');
  const result = { ...base, interfaces: [...(base.interfaces ?? [])], ips: [...(base.ips ?? [])], routes: [...(base.routes ?? [])] };
  for (const conn of conns) {
    const name = ifnameOf(conn);
    const link = links.find((l) => l.ifname === name);
    const index = result.interfaces.push({ name, ...(link?.mac ? { mac: link.mac } : {}), sandbox }) - 1;
    const ip = conn.context?.ip_context;
    for (const address of ip?.src_ip_addrs ?? []) {
      const family = parseIp(address.split('/')[0]!)?.family;
      const gateway = ip?.dst_ip_addrs.map((d) => d.split('/')[0]!).find((d) => parseIp(d)?.family === family);
      result.ips.push({ ...(legacy && family ? { version: String(family) as '4' | '6' } : {}), address, ...(gateway ? { gateway } : {}), interface: index });
    }
    for (const r of ip?.src_routes ?? []) result.routes.push({ dst: r.prefix, ...(r.nextHop ? { gw: r.nextHop } : {}) });
  }
  return result;
}
