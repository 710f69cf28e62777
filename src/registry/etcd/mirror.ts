import type { Logger } from 'pino';
import type { NetworkService, NetworkServiceEndpoint } from '../../api/types.js';
import { ExpiryTimer } from '../embedded/expiry-timer.js';
import { WatcherSet } from '../embedded/watchers.js';
import { matchNetworkService, matchNetworkServiceEndpoint } from '../match.js';
import type { NseEvent, NsEvent, Unsubscribe } from '../types.js';
import { decodeEndpoint, decodeService, endpointExpiryMs } from './records.js';

interface MirroredService {
  ns: NetworkService;
  value: Buffer;
}
interface MirroredEndpoint {
  nse: NetworkServiceEndpoint;
  value: Buffer;
  expiresAtMs: number;
}

/**
 * This process's copy of the registry contents in etcd, kept current by the registry's watch, and the fan-out
 * to local watchers. Changes are detected by comparing the stored bytes, so replaying a full read after a
 * reconnect only emits what really changed while the watch was down: nothing is duplicated and a deletion that
 * happened meanwhile still reaches watchers.
 *
 * Endpoints leave the mirror at their expiration_time, with a deleted event, even if etcd has not yet dropped
 * the key: etcd only deletes when the lease runs out, which can be later (lease TTLs are whole seconds and a
 * new etcd leader extends every lease by its full TTL). A later delete of a key no longer mirrored is silent.
 */
export class RegistryMirror {
  private readonly services = new Map<string, MirroredService>();
  private readonly endpoints = new Map<string, MirroredEndpoint>();
  private readonly nsWatchers: WatcherSet<NsEvent>;
  private readonly nseWatchers: WatcherSet<NseEvent>;
  private readonly expiry: ExpiryTimer;
  private closed = false;

  constructor(
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.nsWatchers = new WatcherSet(logger);
    this.nseWatchers = new WatcherSet(logger);
    this.expiry = new ExpiryTimer(now, () => this.sweep());
  }

  watchServices(template: NetworkService, onEvent: (e: NsEvent) => void): Unsubscribe {
    const initial = [...this.services.values()]
      .filter((s) => matchNetworkService(template, s.ns))
      .map((s) => ({ ns: s.ns, deleted: false }));
    return this.nsWatchers.subscribe((e) => matchNetworkService(template, e.ns), onEvent, initial);
  }

  watchEndpoints(template: NetworkServiceEndpoint, onEvent: (e: NseEvent) => void): Unsubscribe {
    this.sweep();
    const initial = [...this.endpoints.values()]
      .filter((s) => matchNetworkServiceEndpoint(template, s.nse))
      .map((s) => ({ nse: s.nse, deleted: false }));
    return this.nseWatchers.subscribe((e) => matchNetworkServiceEndpoint(template, e.nse), onEvent, initial);
  }

  /** The mirrored services matching `template`, as copies. */
  listServices(template: NetworkService): NetworkService[] {
    return [...this.services.values()].filter((s) => matchNetworkService(template, s.ns)).map((s) => structuredClone(s.ns));
  }

  /** The mirrored, unexpired endpoints matching `template`, as copies. */
  listEndpoints(template: NetworkServiceEndpoint): NetworkServiceEndpoint[] {
    this.sweep();
    return [...this.endpoints.values()].filter((s) => matchNetworkServiceEndpoint(template, s.nse)).map((s) => structuredClone(s.nse));
  }

  setService(name: string, value: Buffer): void {
    if (this.closed) return;
    const current = this.services.get(name);
    if (current?.value.equals(value)) return;
    const ns = decodeService(value, name, this.logger);
    if (!ns) {
      this.deleteService(name);
      return;
    }
    this.services.set(name, { ns, value });
    this.nsWatchers.publish({ ns, deleted: false });
  }

  deleteService(name: string): void {
    if (this.closed) return;
    const current = this.services.get(name);
    if (!current) return;
    this.services.delete(name);
    this.nsWatchers.publish({ ns: current.ns, deleted: true });
  }

  setEndpoint(name: string, value: Buffer): void {
    if (this.closed) return;
    const current = this.endpoints.get(name);
    if (current?.value.equals(value)) return;
    const nse = decodeEndpoint(value, name, this.logger);
    const expiresAtMs = nse ? endpointExpiryMs(nse) : -Infinity;
    if (!nse || expiresAtMs <= this.now()) {
      // An already expired record counts as absent (Discover's rule), so it can only end a mirrored one.
      this.deleteEndpoint(name);
      return;
    }
    this.endpoints.set(name, { nse, value, expiresAtMs });
    this.expiry.armBy(expiresAtMs);
    this.nseWatchers.publish({ nse, deleted: false });
  }

  deleteEndpoint(name: string): void {
    if (this.closed) return;
    const current = this.endpoints.get(name);
    if (!current) return;
    this.endpoints.delete(name);
    this.nseWatchers.publish({ nse: current.nse, deleted: true });
  }

  /** Makes the mirror equal to a full read of etcd, publishing only the differences. */
  replaceAll(services: ReadonlyMap<string, Buffer>, endpoints: ReadonlyMap<string, Buffer>): void {
    if (this.closed) return;
    for (const name of [...this.services.keys()]) if (!services.has(name)) this.deleteService(name);
    for (const name of [...this.endpoints.keys()]) if (!endpoints.has(name)) this.deleteEndpoint(name);
    for (const [name, value] of services) this.setService(name, value);
    for (const [name, value] of endpoints) this.setEndpoint(name, value);
  }

  close(): void {
    this.closed = true;
    this.expiry.stop();
    this.nsWatchers.closeAll();
    this.nseWatchers.closeAll();
  }

  private sweep(): void {
    if (this.closed) return;
    const now = this.now();
    let next: number | undefined;
    for (const [name, stored] of this.endpoints) {
      if (stored.expiresAtMs <= now) {
        this.endpoints.delete(name);
        this.logger.debug({ nse: name }, 'endpoint registration expired');
        this.nseWatchers.publish({ nse: stored.nse, deleted: true });
      } else if (next === undefined || stored.expiresAtMs < next) {
        next = stored.expiresAtMs;
      }
    }
    this.expiry.rearm(next);
  }
}
