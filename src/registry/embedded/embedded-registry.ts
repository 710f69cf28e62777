import type { Logger } from 'pino';
import { messageCodec } from '../../api/codec.js';
import type { NetworkService, NetworkServiceEndpoint, Timestamp } from '../../api/types.js';
import { matchNetworkService, matchNetworkServiceEndpoint } from '../match.js';
import { compareTimestamps, msToTimestamp, timestampToMs } from '../timestamp.js';
import type { NseEvent, NsEvent, Registry, Unsubscribe } from '../types.js';
import { ExpiryTimer } from './expiry-timer.js';
import type { RegistryState } from './state-file.js';
import { WatcherSet } from './watchers.js';

/** Thrown for requests the registry refuses (an empty name); a gRPC front end maps it to INVALID_ARGUMENT. */
export class RegistryRequestError extends Error {
  override name = 'RegistryRequestError';
}

export interface EmbeddedRegistryDeps {
  maxExpirationMs: number;
  logger: Logger;
  now: () => number;
  /** Told about every change; decides itself when to write. */
  persistence?: Persistence;
}

export interface Persistence {
  schedule(): void;
  flush(): Promise<void>;
}

interface StoredEndpoint {
  nse: NetworkServiceEndpoint;
  expiresAtMs: number;
}

const nsCodec = () => messageCodec('registry.NetworkService');
const nseCodec = () => messageCodec('registry.NetworkServiceEndpoint');

export class EmbeddedRegistry implements Registry {
  private readonly services = new Map<string, NetworkService>();
  private readonly endpoints = new Map<string, StoredEndpoint>();
  private readonly nsWatchers: WatcherSet<NsEvent>;
  private readonly nseWatchers: WatcherSet<NseEvent>;
  private readonly expiry: ExpiryTimer;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly deps: EmbeddedRegistryDeps,
    initial: RegistryState,
  ) {
    this.nsWatchers = new WatcherSet(deps.logger);
    this.nseWatchers = new WatcherSet(deps.logger);
    this.expiry = new ExpiryTimer(deps.now, () => this.sweep());
    for (const ns of initial.services) this.services.set(ns.name, ns);
    const now = deps.now();
    let dropped = 0;
    for (const nse of initial.endpoints) {
      const stored = this.withExpiry(nse, now);
      if (stored.expiresAtMs <= now) {
        dropped++;
        continue;
      }
      this.endpoints.set(nse.name, stored);
      this.expiry.armBy(stored.expiresAtMs);
    }
    if (dropped > 0) deps.logger.info({ dropped }, 'dropped endpoints that expired while the registry was down');
  }

  /** The live contents, for persistence. */
  snapshot(): RegistryState {
    const now = this.deps.now();
    return {
      services: [...this.services.values()],
      endpoints: [...this.endpoints.values()].filter((s) => s.expiresAtMs > now).map((s) => s.nse),
    };
  }

  async registerService(input: NetworkService): Promise<NetworkService> {
    this.assertOpen();
    const ns = nsCodec().normalize(input);
    if (ns.name === '') throw new RegistryRequestError('network service name is required');
    this.services.set(ns.name, ns);
    this.nsWatchers.publish({ ns, deleted: false });
    this.deps.persistence?.schedule();
    return structuredClone(ns);
  }

  async unregisterService(name: string): Promise<void> {
    this.assertOpen();
    const ns = this.services.get(name);
    if (!ns) return;
    this.services.delete(name);
    this.nsWatchers.publish({ ns, deleted: true });
    this.deps.persistence?.schedule();
  }

  /** The embedded registry is local memory already: a lookup is a find. */
  lookupServices(template: NetworkService): Promise<NetworkService[]> {
    return this.findServices(template);
  }

  lookupEndpoints(template: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint[]> {
    return this.findEndpoints(template);
  }

  async findServices(template: NetworkService): Promise<NetworkService[]> {
    this.assertOpen();
    return this.matchingServices(nsCodec().normalize(template)).map((ns) => structuredClone(ns));
  }

  watchServices(template: NetworkService, onEvent: (e: NsEvent) => void): Unsubscribe {
    this.assertOpen();
    const t = nsCodec().normalize(template);
    const initial = this.matchingServices(t).map((ns) => ({ ns, deleted: false }));
    return this.nsWatchers.subscribe((e) => matchNetworkService(t, e.ns), onEvent, initial);
  }

  async registerEndpoint(input: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint> {
    this.assertOpen();
    const nse = nseCodec().normalize(input);
    if (nse.name === '') throw new RegistryRequestError('network service endpoint name is required');
    const now = this.deps.now();
    let previous = this.endpoints.get(nse.name);
    // An endpoint that expired but has not been swept yet counts as gone: watchers see it deleted, and its
    // registration time restarts.
    if (previous && previous.expiresAtMs <= now) {
      this.endpoints.delete(nse.name);
      this.nseWatchers.publish({ nse: previous.nse, deleted: true });
      previous = undefined;
    }
    nse.initial_registration_time =
      previous?.nse.initial_registration_time ?? nse.initial_registration_time ?? msToTimestamp(now);
    const stored = this.withExpiry(nse, now);
    this.endpoints.set(nse.name, stored);
    this.expiry.armBy(stored.expiresAtMs);
    this.nseWatchers.publish({ nse: stored.nse, deleted: false });
    this.deps.persistence?.schedule();
    return structuredClone(stored.nse);
  }

  async unregisterEndpoint(name: string): Promise<void> {
    this.assertOpen();
    const stored = this.endpoints.get(name);
    if (!stored) return;
    this.endpoints.delete(name);
    this.nseWatchers.publish({ nse: stored.nse, deleted: true });
    this.deps.persistence?.schedule();
  }

  async findEndpoints(template: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint[]> {
    this.assertOpen();
    this.sweep();
    return this.matchingEndpoints(nseCodec().normalize(template)).map((nse) => structuredClone(nse));
  }

  watchEndpoints(template: NetworkServiceEndpoint, onEvent: (e: NseEvent) => void): Unsubscribe {
    this.assertOpen();
    this.sweep();
    const t = nseCodec().normalize(template);
    const initial = this.matchingEndpoints(t).map((nse) => ({ nse, deleted: false }));
    return this.nseWatchers.subscribe((e) => matchNetworkServiceEndpoint(t, e.nse), onEvent, initial);
  }

  /** Stops the timer and watchers and writes the final state. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.closed = true;
    this.expiry.stop();
    this.nsWatchers.closeAll();
    this.nseWatchers.closeAll();
    await this.deps.persistence?.flush();
  }

  private matchingServices(t: NetworkService): NetworkService[] {
    return [...this.services.values()].filter((ns) => matchNetworkService(t, ns));
  }

  private matchingEndpoints(t: NetworkServiceEndpoint): NetworkServiceEndpoint[] {
    return [...this.endpoints.values()].map((s) => s.nse).filter((nse) => matchNetworkServiceEndpoint(t, nse));
  }

  /** expiration_time = min(requested, now + max), as upstream's `expire` chain element. */
  private withExpiry(nse: NetworkServiceEndpoint, now: number): StoredEndpoint {
    const cap: Timestamp = msToTimestamp(now + this.deps.maxExpirationMs);
    const requested = nse.expiration_time;
    const expiration = requested && compareTimestamps(requested, cap) < 0 ? requested : cap;
    const stored = { ...nse, expiration_time: expiration };
    return { nse: stored, expiresAtMs: timestampToMs(expiration) };
  }

  /**
   * Removes every endpoint whose expiration_time <= now (upstream Discover's rule) and re-arms the single timer
   * for the next deadline. Runs from the timer and before reads, so a late or throttled timer never lets a
   * reader see an expired endpoint.
   */
  private sweep(): void {
    if (this.closed) return;
    const now = this.deps.now();
    let next: number | undefined;
    let removed = false;
    for (const [name, stored] of this.endpoints) {
      if (stored.expiresAtMs <= now) {
        this.endpoints.delete(name);
        removed = true;
        this.deps.logger.debug({ nse: name }, 'endpoint registration expired');
        this.nseWatchers.publish({ nse: stored.nse, deleted: true });
      } else if (next === undefined || stored.expiresAtMs < next) {
        next = stored.expiresAtMs;
      }
    }
    this.expiry.rearm(next);
    if (removed) this.deps.persistence?.schedule();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('registry is closed');
  }
}
