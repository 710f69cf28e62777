import type { Watch } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { NetworkService, NetworkServiceEndpoint } from '../../api/types.js';
import { invalidArgument } from '../../util/errors.js';
import { RegistryRequestError } from '../embedded/index.js';
import { KeyedLock } from '../etcd/keyed-lock.js';
import { RegistryMirror } from '../etcd/mirror.js';
import {
  capExpiration,
  encodeEndpoint,
  encodeService,
  endpointExpiryMs,
  normalizeEndpoint,
  normalizeService,
} from '../etcd/records.js';
import { matchNetworkService, matchNetworkServiceEndpoint } from '../match.js';
import { msToTimestamp } from '../timestamp.js';
import type { NseEvent, NsEvent, Registry, Unsubscribe } from '../types.js';
import { K8sRegistryError, type CrdClient } from './api.js';
import { fromEndpointObject, toEndpointObject } from './endpoint-object.js';
import { ExpiredEndpointCleanup, type CleanupPolicy } from './expired-cleanup.js';
import { ObjectIndex, type IndexEntry } from './object-index.js';
import { ResourceSync, type SyncTiming } from './resource-sync.js';
import { asApiObject, ENDPOINTS, objectNameFor, SERVICES, type ApiObject, type ResourceKind } from './resources.js';
import { fromServiceObject, toServiceObject } from './service-object.js';
import type { Checked } from './spec-fields.js';

export interface K8sRegistryConfig {
  maxExpirationMs: number;
  sync: SyncTiming;
  cleanup: CleanupPolicy;
  logger: Logger;
}

/** Create/replace rounds lost to concurrent writers before a registration gives up with ABORTED. */
const WRITE_ATTEMPTS = 5;

/**
 * A Registry kept in NetworkService and NetworkServiceEndpoint custom resources of one namespace, shared by every
 * nsmd pointed at it (and editable with kubectl).
 *
 * - Writes go to the API server (create, or replace conditional on the resourceVersion last seen; conflicts are
 *   retried); find* lists or gets from the API server, so they see everything written before they were called.
 * - One list+watch per kind (ResourceSync) feeds ObjectIndex, which feeds the same RegistryMirror the etcd backend
 *   uses: watchers get the current matches, then changes, with deleted=true on delete and at expiration_time;
 *   lookup* (the Request path) read the mirror while both watches are up.
 * - expiration_time is capped at now + maxExpirationMs; lapsed endpoints are never returned and their objects are
 *   deleted (ExpiredEndpointCleanup).
 */
export class K8sRegistry implements Registry {
  private readonly mirror: RegistryMirror;
  private readonly services: ObjectIndex<NetworkService>;
  private readonly endpoints: ObjectIndex<NetworkServiceEndpoint>;
  private readonly serviceSync: ResourceSync;
  private readonly endpointSync: ResourceSync;
  private readonly cleanup: ExpiredEndpointCleanup;
  /** Endpoint objects this instance registered and has not unregistered: it cleans them up first. */
  private readonly ownEndpoints = new Set<string>();
  private readonly locks = new KeyedLock();
  private readonly logger: Logger;
  private closed = false;

  constructor(
    private readonly client: CrdClient,
    watch: Watch,
    private readonly cfg: K8sRegistryConfig,
  ) {
    this.logger = cfg.logger;
    this.mirror = new RegistryMirror(cfg.logger);
    this.cleanup = new ExpiredEndpointCleanup(
      (name, rv) => this.client.delete(ENDPOINTS, name, rv),
      cfg.cleanup,
      cfg.logger,
    );
    this.services = new ObjectIndex(
      SERVICES,
      {
        convert: fromServiceObject,
        present: (name, ns) => this.mirror.setService(name, encodeService(ns)),
        absent: (name) => this.mirror.deleteService(name),
      },
      cfg.logger,
    );
    this.endpoints = new ObjectIndex(
      ENDPOINTS,
      {
        convert: fromEndpointObject,
        present: (name, nse, entry) => {
          this.mirror.setEndpoint(name, encodeEndpoint(nse));
          this.cleanup.track(name, entry.resourceVersion, endpointExpiryMs(nse), this.ownEndpoints.has(name));
        },
        absent: (name) => {
          this.mirror.deleteEndpoint(name);
          this.cleanup.forget(name);
          // Whoever registers the name next owns it; if that is us, registerEndpoint says so again.
          this.ownEndpoints.delete(name);
        },
      },
      cfg.logger,
    );
    const log = (kind: ResourceKind) => cfg.logger.child({ resource: kind.plural });
    this.serviceSync = new ResourceSync(SERVICES, client, watch, this.services, cfg.sync, log(SERVICES));
    this.endpointSync = new ResourceSync(ENDPOINTS, client, watch, this.endpoints, cfg.sync, log(ENDPOINTS));
  }

  /** The first list and watch of both kinds; rejects with the API error when the API server cannot serve them. */
  async start(): Promise<void> {
    await Promise.all([this.serviceSync.start(), this.endpointSync.start()]);
  }

  /**
   * While both watches are up, the mirror is at most a watch event behind the API server and the Request path's
   * lookups read it (a map lookup) instead of paying an API round trip, as upstream's nsmgr caches its registry.
   */
  private get mirrorLive(): boolean {
    return this.serviceSync.live && this.endpointSync.live;
  }

  async registerService(input: NetworkService): Promise<NetworkService> {
    this.assertOpen();
    const ns = normalizeService(input);
    if (ns.name === '') throw new RegistryRequestError('network service name is required');
    const objectName = objectNameFor(ns.name);
    const body = toServiceObject(ns, objectName, this.client.namespace);
    checkStorable(SERVICES, ns.name, fromServiceObject(body));
    return this.locks.run(SERVICES.plural + objectName, async () =>
      this.services.written(await this.upsert(this.services, objectName, body)),
    );
  }

  async unregisterService(name: string): Promise<void> {
    this.assertOpen();
    const objectName = objectNameFor(name);
    await this.locks.run(SERVICES.plural + objectName, async () => {
      await this.client.delete(SERVICES, objectName);
      this.services.deleted(objectName);
    });
  }

  async findServices(template: NetworkService): Promise<NetworkService[]> {
    this.assertOpen();
    const t = normalizeService(template);
    const found = await this.read(SERVICES, t.name, fromServiceObject);
    return found.filter((ns) => matchNetworkService(t, ns));
  }

  watchServices(template: NetworkService, onEvent: (e: NsEvent) => void): Unsubscribe {
    this.assertOpen();
    return this.mirror.watchServices(normalizeService(template), onEvent);
  }

  lookupServices(template: NetworkService): Promise<NetworkService[]> {
    this.assertOpen();
    return this.mirrorLive ? Promise.resolve(this.mirror.listServices(normalizeService(template))) : this.findServices(template);
  }

  async registerEndpoint(input: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint> {
    this.assertOpen();
    const requested = normalizeEndpoint(input);
    if (requested.name === '') throw new RegistryRequestError('network service endpoint name is required');
    const objectName = objectNameFor(requested.name);
    return this.locks.run(ENDPOINTS.plural + objectName, async () => {
      const now = Date.now();
      const previous = await this.currentEndpoint(objectName);
      const live = previous && endpointExpiryMs(previous) > now ? previous : undefined;
      // A refresh keeps the first registration time; a registration after expiry starts a new one.
      requested.initial_registration_time =
        live?.initial_registration_time ?? requested.initial_registration_time ?? msToTimestamp(now);
      const nse = capExpiration(requested, now, this.cfg.maxExpirationMs);
      const body = toEndpointObject(nse, objectName, this.client.namespace);
      checkStorable(ENDPOINTS, nse.name, fromEndpointObject(body));
      const written = await this.upsert(this.endpoints, objectName, body);
      this.ownEndpoints.add(objectName);
      return this.endpoints.written(written);
    });
  }

  async unregisterEndpoint(name: string): Promise<void> {
    this.assertOpen();
    const objectName = objectNameFor(name);
    await this.locks.run(ENDPOINTS.plural + objectName, async () => {
      this.ownEndpoints.delete(objectName);
      await this.client.delete(ENDPOINTS, objectName);
      this.endpoints.deleted(objectName);
    });
  }

  async findEndpoints(template: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint[]> {
    this.assertOpen();
    const t = normalizeEndpoint(template);
    const found = await this.read(ENDPOINTS, t.name, fromEndpointObject);
    const now = Date.now();
    // An object may outlive its expiration_time until someone deletes it; for readers it is gone already.
    return found.filter((nse) => endpointExpiryMs(nse) > now && matchNetworkServiceEndpoint(t, nse));
  }

  watchEndpoints(template: NetworkServiceEndpoint, onEvent: (e: NseEvent) => void): Unsubscribe {
    this.assertOpen();
    return this.mirror.watchEndpoints(normalizeEndpoint(template), onEvent);
  }

  lookupEndpoints(template: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint[]> {
    this.assertOpen();
    return this.mirrorLive ? Promise.resolve(this.mirror.listEndpoints(normalizeEndpoint(template))) : this.findEndpoints(template);
  }

  /**
   * Stops watching. Objects are deliberately left in place: an nsmd restart (upgrade, crash loop) must not make its
   * node's endpoints vanish from the mesh; endpoints whose nsmd does not come back lapse at their expiration_time
   * and are then deleted by the other nsmds.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.serviceSync.stop();
    this.endpointSync.stop();
    this.cleanup.stop();
    this.mirror.close();
  }

  /** The named object, or every object of the kind, read from the API server; unreadable ones are skipped. */
  private async read<T>(kind: ResourceKind, name: string, convert: (o: ApiObject) => Checked<T>): Promise<T[]> {
    const raws = name !== '' ? [await this.client.get(kind, objectNameFor(name))] : (await this.client.list(kind)).items;
    const out: T[] = [];
    for (const raw of raws) {
      const obj = raw === undefined ? undefined : asApiObject(raw);
      const converted = obj && convert(obj);
      if (converted && 'ok' in converted) out.push(converted.ok);
    }
    return out;
  }

  /** The endpoint registered under `objectName` now: from the index while it is kept current, else from the API. */
  private async currentEndpoint(objectName: string): Promise<NetworkServiceEndpoint | undefined> {
    const known = this.endpoints.get(objectName);
    if (known || this.mirrorLive) return known?.message;
    const raw = await this.client.get(ENDPOINTS, objectName);
    const obj = raw === undefined ? undefined : asApiObject(raw);
    const converted = obj && fromEndpointObject(obj);
    return converted && 'ok' in converted ? converted.ok : undefined;
  }

  /**
   * Creates the object, or replaces it conditionally on the resourceVersion last seen. A 409 (someone else wrote
   * it first) or a 404 on replace (it was deleted) re-reads the object and tries again.
   */
  private async upsert<T>(index: ObjectIndex<T>, objectName: string, body: ApiObject): Promise<unknown> {
    const kind = index.kind;
    let known: Pick<IndexEntry<T>, 'resourceVersion' | 'labels' | 'annotations'> | undefined = index.get(objectName);
    for (let attempt = 1; ; attempt++) {
      try {
        if (!known) return await this.client.create(kind, body);
        const metadata = {
          ...body.metadata,
          resourceVersion: known.resourceVersion,
          ...(known.labels ? { labels: known.labels } : {}),
          ...(known.annotations ? { annotations: known.annotations } : {}),
        };
        return await this.client.replace(kind, objectName, { ...body, metadata });
      } catch (err) {
        const retry =
          err instanceof K8sRegistryError &&
          (err.httpStatus === 409 || (known !== undefined && err.httpStatus === 404)) &&
          attempt < WRITE_ATTEMPTS;
        if (!retry) throw err;
        this.logger.debug({ kind: kind.plural, object: objectName, attempt }, 'object changed under a write; reading it again');
        const fresh = await this.client.get(kind, objectName);
        const obj = fresh === undefined ? undefined : asApiObject(fresh);
        known = obj
          ? { resourceVersion: obj.metadata.resourceVersion ?? '', labels: obj.metadata.labels, annotations: obj.metadata.annotations }
          : undefined;
      }
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('registry is closed');
  }
}

/** A registration the CRD form cannot hold (a selector key Kubernetes would refuse…) is refused before any write. */
function checkStorable(kind: ResourceKind, name: string, converted: Checked<unknown>): void {
  if ('problem' in converted) {
    throw invalidArgument(`${kind.what} ${JSON.stringify(name)} cannot be stored as a ${kind.kind} object: ${converted.problem}`);
  }
}
