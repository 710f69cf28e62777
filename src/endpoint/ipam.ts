import { formatIp, parseCidr, type Family } from '../dataplane/ip.js';

interface Pool {
  family: Family;
  bits: number;
  base: bigint;
  size: bigint;
  cidr: string;
}

const toBig = (b: Uint8Array) => b.reduce((acc, x) => (acc << 8n) | BigInt(x), 0n);
function fromBig(v: bigint, bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let i = bytes - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

export interface Allocation {
  /** Client side (NSC), /32 or /128 per pool. */
  src: string[];
  /** Endpoint side (NSE). */
  dst: string[];
}

/**
 * Point-to-point IPAM: each connection gets one address pair per prefix, client address in src_ip_addrs
 * and endpoint address in dst_ip_addrs (upstream's direction). Addresses in use are never handed out again;
 * Close frees them. Addresses inside the client's excluded prefixes are skipped.
 */
export class PointToPointIpam {
  private readonly pools: Pool[];
  private readonly used = new Set<string>();
  private readonly byConn = new Map<string, Allocation>();
  private readonly cursor = new Map<Pool, bigint>();

  constructor(prefixes: string[]) {
    if (prefixes.length === 0) throw new Error('IPAM needs at least one prefix, e.g. 169.254.0.0/16');
    this.pools = prefixes.map((p) => {
      const c = parseCidr(p);
      const bits = c.family === 4 ? 32 : 128;
      if (bits - c.prefixLen < 2) throw new Error(`prefix ${p} is too small for point-to-point pairs`);
      const pool = { family: c.family, bits, base: toBig(c.bytes), size: 1n << BigInt(bits - c.prefixLen), cidr: p };
      this.cursor.set(pool, 1n);
      return pool;
    });
  }

  get(connId: string): Allocation | undefined {
    return this.byConn.get(connId);
  }

  /** Idempotent per connection: a refresh gets the pair it already has. */
  allocate(connId: string, excluded: string[] = []): Allocation {
    const have = this.byConn.get(connId);
    if (have) return have;
    const ex = excluded.map(parseCidr);
    const alloc: Allocation = { src: [], dst: [] };
    const taken: string[] = [];
    try {
      for (const pool of this.pools) {
        const dst = this.next(pool, ex);
        taken.push(dst);
        const src = this.next(pool, ex);
        taken.push(src);
        const host = pool.family === 4 ? 32 : 128;
        alloc.dst.push(`${dst}/${host}`);
        alloc.src.push(`${src}/${host}`);
      }
    } catch (e) {
      for (const a of taken) this.used.delete(a);
      throw e;
    }
    this.byConn.set(connId, alloc);
    return alloc;
  }

  release(connId: string): void {
    const a = this.byConn.get(connId);
    if (!a) return;
    for (const cidr of [...a.src, ...a.dst]) this.used.delete(cidr.split('/')[0]!);
    this.byConn.delete(connId);
  }

  get inUse(): number {
    return this.byConn.size;
  }

  /** The next free address, skipping the prefix's first and last (network and broadcast in IPv4). */
  private next(pool: Pool, excluded: ReturnType<typeof parseCidr>[]): string {
    const bytes = pool.bits / 8;
    let off = this.cursor.get(pool)!;
    let skippedExcluded = false;
    for (let tried = 0n; tried < pool.size; tried++, off++) {
      if (off >= pool.size - 1n) off = 1n;
      const addr = formatIp(fromBig(pool.base + off, bytes));
      if (this.used.has(addr)) continue;
      if (excluded.some((e) => e.family === pool.family && within(pool.base + off, e, pool.bits))) {
        skippedExcluded = true;
        continue;
      }
      this.used.add(addr);
      this.cursor.set(pool, off + 1n);
      return addr;
    }
    throw new Error(
      skippedExcluded
        ? `prefix ${pool.cidr} has no free address outside the excluded prefixes: give the endpoint a prefix the client does not use (NSM_CIDR_PREFIX)`
        : `prefix ${pool.cidr} has no free addresses left`,
    );
  }
}

function within(addr: bigint, net: ReturnType<typeof parseCidr>, bits: number): boolean {
  const shift = BigInt(bits - net.prefixLen);
  return addr >> shift === toBig(net.bytes) >> shift;
}
