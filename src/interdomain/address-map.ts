/**
 * The NAT address map (upstream's map-ip file, NSM_MAP_IP_FILE): a node whose address inside its domain is
 * not the one other domains reach it at (NAT, a load balancer, a cloud's public IP) publishes the outside
 * address instead. The file is YAML, `internal: external` per line:
 *
 *   198.18.10.1: 198.18.0.11
 *   fd00:10::1: fd00::11
 */
import fs from 'node:fs';
import { isIP } from 'node:net';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

const ip = z.string().refine((s) => isIP(s) !== 0, { message: 'not an IP address' });
const schema = z.record(ip, ip).nullable();

export class AddressMap {
  private constructor(private readonly toOutside: ReadonlyMap<string, string>) {}

  static readonly EMPTY = new AddressMap(new Map());

  static parse(text: string, where = 'address map'): AddressMap {
    let raw: unknown;
    try {
      raw = parseYaml(text);
    } catch (e) {
      throw new Error(`${where}: not YAML: ${(e as Error).message}`);
    }
    const r = schema.safeParse(raw);
    if (!r.success) {
      const problems = r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ');
      throw new Error(`${where}: expected "internal-ip: external-ip" lines: ${problems}`);
    }
    return new AddressMap(new Map(Object.entries(r.data ?? {}).map(([k, v]) => [normalize(k), v])));
  }

  /** Reads the file; an empty path means no map. */
  static load(file: string): AddressMap {
    if (!file) return AddressMap.EMPTY;
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new Error(`address map ${file}: ${(e as Error).message}`);
    }
    return AddressMap.parse(text, `address map ${file}`);
  }

  get size(): number {
    return this.toOutside.size;
  }

  /** The address other domains reach `address` at (itself when it is not mapped). */
  external(address: string): string {
    return this.toOutside.get(normalize(address)) ?? address;
  }

  /** A tcp://host:port URL with its host mapped, so that a published nsmd URL works from outside. */
  externalUrl(url: string): string {
    const m = /^(tcp:\/\/)(\[([^\]]+)\]|[^:/]+)(:\d+.*)$/.exec(url);
    if (!m) return url;
    const host = m[3] ?? m[2]!;
    const mapped = this.external(host);
    if (mapped === host) return url;
    return `${m[1]}${isIP(mapped) === 6 ? `[${mapped}]` : mapped}${m[4]}`;
  }
}

/** One spelling per IPv6 address, so that `fd00::1` and `fd00:0::1` map alike. */
function normalize(address: string): string {
  if (isIP(address) !== 6) return address;
  try {
    return new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return address;
  }
}
