/**
 * UDP listen ports for WireGuard ends. Every connection gets its own wireguard-go and therefore its own
 * socket, so a node needs one port per connection; upstream numbers them from 51820. One allocator per
 * node (per underlay namespace): the same port may be in use on two nodes at once.
 */
import { DataplaneError } from '../veth/protocol.js';
import { WG_PORT } from './mtu.js';

export interface PortAllocatorOptions {
  first?: number; // default 51820
  last?: number; // default 65535
}

export class PortAllocator {
  readonly first: number;
  readonly last: number;
  private readonly used = new Set<number>();
  /** Next port to try. Next-fit rather than lowest-free: a port just freed is not handed out again at once,
   * which leaves a late packet of the old peer, or a socket still closing, time to go away. */
  private cursor: number;

  constructor(opts: PortAllocatorOptions = {}) {
    this.first = opts.first ?? WG_PORT;
    this.last = opts.last ?? 65535;
    if (!Number.isInteger(this.first) || !Number.isInteger(this.last) || this.first < 1 || this.last > 65535 || this.first > this.last) {
      throw new DataplaneError(`port range ${this.first}..${this.last} is not within 1..65535`, 'EINVAL');
    }
    this.cursor = this.first;
  }

  /** A port not in use; throws EADDRNOTAVAIL when all are taken. */
  allocate(): number {
    const span = this.last - this.first + 1;
    if (this.used.size >= span) throw new DataplaneError(`all ${span} WireGuard ports ${this.first}..${this.last} are in use`, 'EADDRNOTAVAIL');
    for (let i = 0; i < span; i++) {
      const p = this.cursor;
      this.cursor = p === this.last ? this.first : p + 1;
      if (!this.used.has(p)) {
        this.used.add(p);
        return p;
      }
    }
    throw new DataplaneError('port allocator is inconsistent', 'EIO');
  }

  /** Marks a given port used, e.g. one a restarted nsmd reads back from its state; EADDRINUSE if it already is. */
  reserve(port: number): void {
    if (!Number.isInteger(port) || port < this.first || port > this.last) {
      throw new DataplaneError(`port ${port} is outside ${this.first}..${this.last}`, 'EINVAL');
    }
    if (this.used.has(port)) throw new DataplaneError(`port ${port} is already allocated`, 'EADDRINUSE');
    this.used.add(port);
  }

  /** Returns a port to the pool; false if it was not allocated. Free only after the end using it is deleted. */
  free(port: number): boolean {
    return this.used.delete(port);
  }

  isInUse(port: number): boolean {
    return this.used.has(port);
  }

  get inUse(): number {
    return this.used.size;
  }
}
