import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Range, type Etcd3, type IEvent, type IKeyValue } from 'etcd3';
import type { Logger } from 'pino';
import type { NetworkService, NetworkServiceEndpoint } from '../../api/types.js';
import { RegistryRequestError } from '../embedded/index.js';
import { matchNetworkService, matchNetworkServiceEndpoint } from '../match.js';
import { msToTimestamp } from '../timestamp.js';
import type { NseEvent, NsEvent, Registry, Unsubscribe } from '../types.js';
import type { EtcdCaller } from './client.js';
import { KeyedLock } from './keyed-lock.js';
import { RegistryMirror } from './mirror.js';
import {
  capExpiration,
  decodeEndpoint,
  decodeService,
  encodeEndpoint,
  encodeService,
  endpointExpiryMs,
  ENDPOINTS,
  INCARNATION,
  leaseTtlSeconds,
  normalizeEndpoint,
  normalizeService,
  SERVICES,
} from './records.js';
import { openPrefixWatch, type PrefixWatch } from './watch-stream.js';

export interface EtcdRegistryConfig {
  prefix: string;
  maxExpirationMs: number;
  callTimeoutMs: number;
  logger: Logger;
}

/** What this instance wrote and still stands behind; `revision` orders it against reads and watch events. */
interface OwnService {
  value: Buffer;
  revision: bigint;
}
interface OwnEndpoint {
  value: Buffer;
  expiresAtMs: number;
  leaseId: string;
  revision: bigint;
}

interface Snapshot {
  revision: bigint;
  services: Map<string, IKeyValue>;
  endpoints: Map<string, IKeyValue>;
  incarnation: string | undefined;
}

/** Keys per range request while reading a whole prefix; keeps each response small whatever the registry size. */
const PAGE = 500;
/**
 * A deleted own endpoint this close to its expiration_time is taken as expired, not lost: the lease TTL is
 * rounded up to whole seconds, and a re-put this late would only resurrect it for a moment.
 */
const EXPIRY_SLACK_MS = 1_000;
const RESYNC_BACKOFF_MIN_MS = 50;
const RESYNC_BACKOFF_MAX_MS = 2_000;

/**
 * A Registry kept in etcd. Records are protobuf under `<prefix>ns/<name>` and `<prefix>nse/<name>`; every
 * endpoint registration carries its own lease whose TTL covers its expiration_time, so the endpoints of a
 * crashed nsmd disappear by themselves.
 *
 * One prefix watch feeds a local mirror (see RegistryMirror) that serves the watchers. Whenever that watch
 * breaks — etcd restarted, a member died, the network failed — the registry reads everything again, repairs
 * its own registrations (see reconcileOwn), replays the difference to watchers and watches again from the read's
 * revision, retrying with backoff until etcd answers.
 */
export class EtcdRegistry implements Registry {
  private readonly ownServices = new Map<string, OwnService>();
  private readonly ownEndpoints = new Map<string, OwnEndpoint>();
  private readonly locks = new KeyedLock();
  private readonly mirror: RegistryMirror;
  private readonly logger: Logger;
  private readonly stopped = new AbortController();
  private readonly prefix: Buffer;
  private incarnation: string | undefined;
  private watch: PrefixWatch | undefined;
  /**
   * While the prefix watch is up, the mirror is at most a watch event behind etcd, and the Request path's
   * lookups read it (a map lookup) instead of paying an etcd round trip, as upstream's nsmgr caches its
   * registry. Find (the registry API) always reads etcd; so do lookups while the watch is down.
   */
  private mirrorLive = false;
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    private readonly etcd: EtcdCaller,
    private readonly cfg: EtcdRegistryConfig,
  ) {
    this.logger = cfg.logger;
    this.mirror = new RegistryMirror(cfg.logger);
    this.prefix = Buffer.from(cfg.prefix);
  }

  /** The first full read and watch; fails (with the etcd error) when etcd cannot be reached in time. */
  async start(): Promise<void> {
    const watch = await this.establish();
    void this.follow(watch);
  }

  async registerService(input: NetworkService): Promise<NetworkService> {
    this.assertOpen();
    const ns = normalizeService(input);
    if (ns.name === '') throw new RegistryRequestError('network service name is required');
    const value = encodeService(ns);
    await this.locks.run(SERVICES + ns.name, async () => {
      const res = await this.etcd.call(`store network service ${JSON.stringify(ns.name)}`, (o) =>
        this.client.kv.put({ key: this.key(SERVICES, ns.name), value }, o),
      );
      this.ownServices.set(ns.name, { value, revision: BigInt(res.header.revision) });
      // This instance reads its own writes at once, not when the watch event arrives.
      this.mirror.setService(ns.name, value);
    });
    return structuredClone(ns);
  }

  async unregisterService(name: string): Promise<void> {
    this.assertOpen();
    await this.locks.run(SERVICES + name, async () => {
      // Forgotten first: even if the delete fails, this instance must not put the service back later.
      this.ownServices.delete(name);
      await this.etcd.call(`delete network service ${JSON.stringify(name)}`, (o) =>
        this.client.kv.deleteRange({ key: this.key(SERVICES, name) }, o),
      );
      this.mirror.deleteService(name);
    });
  }

  async findServices(template: NetworkService): Promise<NetworkService[]> {
    this.assertOpen();
    const t = normalizeService(template);
    const kvs = await this.read(SERVICES, t.name, 'find network services');
    const out: NetworkService[] = [];
    for (const kv of kvs) {
      const ns = decodeService(kv.value, kv.key.toString(), this.logger);
      if (ns && matchNetworkService(t, ns)) out.push(ns);
    }
    return out;
  }

  watchServices(template: NetworkService, onEvent: (e: NsEvent) => void): Unsubscribe {
    this.assertOpen();
    return this.mirror.watchServices(normalizeService(template), onEvent);
  }

  async registerEndpoint(input: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint> {
    this.assertOpen();
    const requested = normalizeEndpoint(input);
    if (requested.name === '') throw new RegistryRequestError('network service endpoint name is required');
    const name = requested.name;
    return this.locks.run(ENDPOINTS + name, async () => {
      const key = this.key(ENDPOINTS, name);
      const what = `store network service endpoint ${JSON.stringify(name)}`;
      const current = await this.etcd.call(what, (o) => this.client.kv.range({ key }, o));
      const now = Date.now();
      const previousKv = current.kvs[0];
      const previous = previousKv ? decodeEndpoint(previousKv.value, key.toString(), this.logger) : undefined;
      const live = previous && endpointExpiryMs(previous) > now ? previous : undefined;
      // A refresh keeps the first registration time; a registration after expiry starts a new one.
      requested.initial_registration_time =
        live?.initial_registration_time ?? requested.initial_registration_time ?? msToTimestamp(now);
      const nse = capExpiration(requested, now, this.cfg.maxExpirationMs);
      const value = encodeEndpoint(nse);
      const expiresAtMs = endpointExpiryMs(nse);
      const { leaseId, revision } = await this.putWithLease(key, value, expiresAtMs, what);
      this.ownEndpoints.set(name, { value, expiresAtMs, leaseId, revision });
      this.mirror.setEndpoint(name, value);
      return structuredClone(nse);
    });
  }

  async unregisterEndpoint(name: string): Promise<void> {
    this.assertOpen();
    await this.locks.run(ENDPOINTS + name, async () => {
      this.ownEndpoints.delete(name);
      const res = await this.etcd.call(`delete network service endpoint ${JSON.stringify(name)}`, (o) =>
        this.client.kv.deleteRange({ key: this.key(ENDPOINTS, name), prev_kv: true }, o),
      );
      this.mirror.deleteEndpoint(name);
      const lease = res.prev_kvs?.[0]?.lease;
      if (lease && lease !== '0') await this.revokeQuietly(lease);
    });
  }

  lookupServices(template: NetworkService): Promise<NetworkService[]> {
    this.assertOpen();
    return this.mirrorLive ? Promise.resolve(this.mirror.listServices(normalizeService(template))) : this.findServices(template);
  }

  lookupEndpoints(template: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint[]> {
    this.assertOpen();
    return this.mirrorLive ? Promise.resolve(this.mirror.listEndpoints(normalizeEndpoint(template))) : this.findEndpoints(template);
  }

  async findEndpoints(template: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint[]> {
    this.assertOpen();
    const t = normalizeEndpoint(template);
    const kvs = await this.read(ENDPOINTS, t.name, 'find network service endpoints');
    const now = Date.now();
    const out: NetworkServiceEndpoint[] = [];
    for (const kv of kvs) {
      const nse = decodeEndpoint(kv.value, kv.key.toString(), this.logger);
      // etcd may keep a key past expiration_time until its lease runs out; it is gone for readers already.
      if (nse && endpointExpiryMs(nse) > now && matchNetworkServiceEndpoint(t, nse)) out.push(nse);
    }
    return out;
  }

  watchEndpoints(template: NetworkServiceEndpoint, onEvent: (e: NseEvent) => void): Unsubscribe {
    this.assertOpen();
    return this.mirror.watchEndpoints(normalizeEndpoint(template), onEvent);
  }

  /**
   * Stops watching and closes the client. Registrations are deliberately left in etcd and leases are not
   * revoked: an nsmd restart (upgrade, crash loop) must not make every endpoint on the node vanish for the
   * whole mesh. Endpoints whose owner does not come back expire with their leases; services stay until
   * unregistered, as in etcd-less upstream registries.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopped.abort();
    this.watch?.cancel();
    this.mirror.close();
    this.client.close();
  }

  private key(kind: string, name: string): Buffer {
    return Buffer.from(this.cfg.prefix + kind + name);
  }

  /** The record `name` of a kind, or all of them when name is empty. */
  private async read(kind: string, name: string, what: string): Promise<IKeyValue[]> {
    if (name !== '') {
      const res = await this.etcd.call(what, (o) => this.client.kv.range({ key: this.key(kind, name) }, o));
      return res.kvs;
    }
    return (await this.rangeAll(Buffer.from(this.cfg.prefix + kind), what)).kvs;
  }

  /** Every key under `prefix`, paged, all pages read at the first page's revision so they form one snapshot. */
  private async rangeAll(prefix: Buffer, what: string): Promise<{ kvs: IKeyValue[]; revision: bigint }> {
    const end = Range.prefix(prefix).end;
    const kvs: IKeyValue[] = [];
    let key = prefix;
    let revision: string | undefined;
    for (;;) {
      const res = await this.etcd.call(what, (o) =>
        this.client.kv.range({ key, range_end: end, limit: PAGE, revision: revision ?? 0 }, o),
      );
      revision ??= res.header.revision;
      kvs.push(...res.kvs);
      const last = res.kvs[res.kvs.length - 1];
      if (!res.more || !last) break;
      key = Buffer.concat([last.key, Buffer.from([0])]);
    }
    return { kvs, revision: BigInt(revision) };
  }

  /** A fresh lease for the record; the lease the key had before is revoked so refreshes do not pile leases up. */
  private async putWithLease(
    key: Buffer,
    value: Buffer,
    expiresAtMs: number,
    what: string,
  ): Promise<{ leaseId: string; revision: bigint }> {
    const ttl = leaseTtlSeconds(expiresAtMs, Date.now());
    const grant = await this.etcd.call(what, (o) => this.client.leaseClient.leaseGrant({ TTL: ttl }, o));
    let put;
    try {
      put = await this.etcd.call(what, (o) =>
        this.client.kv.put({ key, value, lease: grant.ID, prev_kv: true }, o),
      );
    } catch (err) {
      await this.revokeQuietly(grant.ID);
      throw err;
    }
    const old = put.prev_kv?.lease;
    if (old && old !== '0' && old !== grant.ID) await this.revokeQuietly(old);
    return { leaseId: grant.ID, revision: BigInt(put.header.revision) };
  }

  /** Best effort: a lease that cannot be revoked still ends by its TTL, at most maxExpirationMs later. */
  private async revokeQuietly(leaseId: string): Promise<void> {
    try {
      await this.client.leaseClient.leaseRevoke({ ID: leaseId }, this.etcd.options());
    } catch (err) {
      this.logger.debug({ err, leaseId }, 'could not revoke etcd lease; it will expire by itself');
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('registry is closed');
  }

  // ---- synchronisation with etcd ----

  /** Full read, own-registration repair, mirror update and a new watch from the read's revision. */
  private async establish(): Promise<PrefixWatch> {
    let snap = await this.snapshot();
    const wiped = await this.checkIncarnation(snap);
    if (wiped) this.logger.warn('etcd registry data was wiped or replaced; re-registering this instance\'s records');
    if (await this.reconcileOwn(snap, wiped)) snap = await this.snapshot();
    this.assertOpen();
    this.mirror.replaceAll(values(snap.services), values(snap.endpoints));
    const watch = await openPrefixWatch(
      this.client,
      { key: this.prefix, rangeEnd: Range.prefix(this.prefix).end },
      snap.revision + 1n,
      this.cfg.callTimeoutMs,
      (events) => this.onEvents(events),
    ).catch((err: unknown) => {
      throw this.etcd.wrap('watch registry', err);
    });
    if (this.closed) {
      watch.cancel();
      this.assertOpen();
    }
    this.watch = watch;
    this.mirrorLive = true;
    return watch;
  }

  /** Runs for the registry's lifetime: waits for the watch to break, then re-establishes it. */
  private async follow(watch: PrefixWatch): Promise<void> {
    let current = watch;
    while (!this.closed) {
      const reason = await current.broken;
      this.mirrorLive = false;
      if (this.closed) return;
      this.logger.warn({ err: reason }, 'etcd registry watch lost; resyncing once etcd answers');
      const next = await this.reestablish();
      if (!next) return;
      this.logger.info('etcd registry watch re-established');
      current = next;
    }
  }

  private async reestablish(): Promise<PrefixWatch | undefined> {
    let delay = RESYNC_BACKOFF_MIN_MS;
    let attempts = 0;
    while (!this.closed) {
      try {
        return await this.establish();
      } catch (err) {
        if (this.closed) return undefined;
        attempts++;
        // One warning per outage, not one per retry.
        if (attempts === 1) this.logger.warn({ err }, 'etcd registry resync failed; retrying');
        else this.logger.debug({ err, attempts }, 'etcd registry resync failed; retrying');
      }
      try {
        await sleep(delay, undefined, { signal: this.stopped.signal });
      } catch {
        return undefined;
      }
      delay = Math.min(delay * 2, RESYNC_BACKOFF_MAX_MS);
    }
    return undefined;
  }

  private async snapshot(): Promise<Snapshot> {
    const { kvs, revision } = await this.rangeAll(this.prefix, 'read registry');
    const snap: Snapshot = { revision, services: new Map(), endpoints: new Map(), incarnation: undefined };
    for (const kv of kvs) {
      const rel = kv.key.subarray(this.prefix.length).toString();
      if (rel.startsWith(SERVICES)) snap.services.set(rel.slice(SERVICES.length), kv);
      else if (rel.startsWith(ENDPOINTS)) snap.endpoints.set(rel.slice(ENDPOINTS.length), kv);
      else if (rel === INCARNATION) snap.incarnation = kv.value.toString();
    }
    return snap;
  }

  /**
   * True when the etcd data set is not the one this instance saw before. A wiped or re-created etcd cannot be
   * recognised otherwise: cluster and member ids derive from the configuration, and revisions restart at 1 but
   * may already have grown past the old ones by the time we reconnect.
   */
  private async checkIncarnation(snap: Snapshot): Promise<boolean> {
    let current = snap.incarnation;
    if (current === undefined) {
      const key = this.key('', INCARNATION);
      const mine = randomUUID();
      const res = await this.etcd.call('create registry incarnation', (o) =>
        this.client.kv.txn(
          {
            compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }],
            success: [{ request_put: { key, value: Buffer.from(mine) } }],
            failure: [{ request_range: { key } }],
          },
          o,
        ),
      );
      current = res.succeeded ? mine : res.responses[0]?.response_range?.kvs[0]?.value.toString();
      if (current === undefined) throw new Error('registry incarnation key vanished while being created');
    }
    const wiped = this.incarnation !== undefined && this.incarnation !== current;
    this.incarnation = current;
    return wiped;
  }

  /**
   * Brings this instance's registrations back where etcd lost them; returns whether anything was written.
   * - Data wiped: everything still owned is put again (endpoints with fresh leases).
   * - An own endpoint missing although not expired: its lease is checked; a lease etcd no longer has (it ran
   *   out while we could not reach etcd) means the record was lost and is put back, a live lease means someone
   *   deleted the record on purpose and it is given up.
   * - A record somebody else has overwritten, or a service deleted, is given up: the other writer owns it now.
   * Records written after the read (revision newer than the snapshot) are left alone.
   */
  private async reconcileOwn(snap: Snapshot, wiped: boolean): Promise<boolean> {
    const now = Date.now();
    const repairs: Promise<boolean>[] = [];
    for (const [name, own] of this.ownServices) {
      if (wiped) {
        repairs.push(this.repairService(name, own));
        continue;
      }
      if (own.revision > snap.revision) continue;
      const kv = snap.services.get(name);
      if (!kv || !kv.value.equals(own.value)) this.giveUpService(name, own, kv ? 'overwritten' : 'deleted');
    }
    for (const [name, own] of this.ownEndpoints) {
      if (own.expiresAtMs <= now) {
        this.ownEndpoints.delete(name);
        continue;
      }
      if (wiped) {
        repairs.push(this.repairEndpoint(name, own, 'etcd data wiped'));
        continue;
      }
      if (own.revision > snap.revision) continue;
      const kv = snap.endpoints.get(name);
      if (kv) {
        if (kv.lease !== own.leaseId) this.giveUpEndpoint(name, own, 'registered by another writer');
        continue;
      }
      repairs.push(this.checkLeaseAndRepair(name, own));
    }
    const results = await Promise.all(repairs);
    return results.some(Boolean);
  }

  private async checkLeaseAndRepair(name: string, own: OwnEndpoint): Promise<boolean> {
    if (own.expiresAtMs - EXPIRY_SLACK_MS <= Date.now()) {
      if (this.ownEndpoints.get(name) === own) this.ownEndpoints.delete(name);
      return false;
    }
    const res = await this.etcd.call(`check lease of network service endpoint ${JSON.stringify(name)}`, (o) =>
      this.client.leaseClient.leaseTimeToLive({ ID: own.leaseId }, o),
    );
    if (Number(res.TTL) > 0) {
      this.giveUpEndpoint(name, own, 'deleted by another writer');
      await this.revokeQuietly(own.leaseId);
      return false;
    }
    return this.repairEndpoint(name, own, 'lease lost');
  }

  private repairService(name: string, own: OwnService): Promise<boolean> {
    return this.locks.run(SERVICES + name, async () => {
      if (this.closed || this.ownServices.get(name) !== own) return false;
      const res = await this.etcd.call(`re-register network service ${JSON.stringify(name)}`, (o) =>
        this.client.kv.put({ key: this.key(SERVICES, name), value: own.value }, o),
      );
      this.ownServices.set(name, { value: own.value, revision: BigInt(res.header.revision) });
      this.logger.info({ ns: name }, 're-registered network service in etcd');
      return true;
    });
  }

  private repairEndpoint(name: string, own: OwnEndpoint, reason: string): Promise<boolean> {
    return this.locks.run(ENDPOINTS + name, async () => {
      // Unregistered, refreshed or given up while waiting for the lock: the newer state wins.
      if (this.closed || this.ownEndpoints.get(name) !== own) return false;
      if (own.expiresAtMs - EXPIRY_SLACK_MS <= Date.now()) {
        this.ownEndpoints.delete(name);
        return false;
      }
      const { leaseId, revision } = await this.putWithLease(
        this.key(ENDPOINTS, name),
        own.value,
        own.expiresAtMs,
        `re-register network service endpoint ${JSON.stringify(name)}`,
      );
      this.ownEndpoints.set(name, { ...own, leaseId, revision });
      this.logger.info({ nse: name, reason }, 're-registered network service endpoint in etcd');
      return true;
    });
  }

  private giveUpService(name: string, own: OwnService, why: string): void {
    if (this.ownServices.get(name) !== own) return;
    this.ownServices.delete(name);
    this.logger.info({ ns: name, why }, 'network service no longer registered by this instance');
  }

  private giveUpEndpoint(name: string, own: OwnEndpoint, why: string): void {
    if (this.ownEndpoints.get(name) !== own) return;
    this.ownEndpoints.delete(name);
    this.logger.info({ nse: name, why }, 'network service endpoint no longer registered by this instance');
  }

  private onEvents(events: IEvent[]): void {
    if (this.closed) return;
    for (const ev of events) {
      const rel = ev.kv.key.subarray(this.prefix.length).toString();
      if (rel.startsWith(SERVICES)) {
        const name = rel.slice(SERVICES.length);
        if (ev.type === 'Put') this.mirror.setService(name, ev.kv.value);
        else this.mirror.deleteService(name);
        this.checkServiceOwnership(name, ev);
      } else if (rel.startsWith(ENDPOINTS)) {
        const name = rel.slice(ENDPOINTS.length);
        if (ev.type === 'Put') this.mirror.setEndpoint(name, ev.kv.value);
        else this.mirror.deleteEndpoint(name);
        this.checkEndpointOwnership(name, ev);
      }
    }
  }

  /*
   * Ownership is only judged from events newer than our own last write, and not while one of our writes to the
   * same record is in flight: that write's echo can arrive before its response, and its outcome decides anyway.
   */

  private checkServiceOwnership(name: string, ev: IEvent): void {
    const own = this.ownServices.get(name);
    if (!own || BigInt(ev.kv.mod_revision) <= own.revision || this.locks.busy(SERVICES + name)) return;
    if (ev.type !== 'Put') this.giveUpService(name, own, 'deleted');
    else if (!ev.kv.value.equals(own.value)) this.giveUpService(name, own, 'overwritten');
  }

  private checkEndpointOwnership(name: string, ev: IEvent): void {
    const own = this.ownEndpoints.get(name);
    if (!own || BigInt(ev.kv.mod_revision) <= own.revision || this.locks.busy(ENDPOINTS + name)) return;
    if (ev.type === 'Put') {
      if (ev.kv.lease !== own.leaseId) this.giveUpEndpoint(name, own, 'registered by another writer');
      return;
    }
    this.checkLeaseAndRepair(name, own).catch((err: unknown) => {
      // The next resync checks again; a failure here means etcd is going away anyway.
      this.logger.debug({ err, nse: name }, "could not check a deleted endpoint's lease");
    });
  }
}

function values(m: Map<string, IKeyValue>): Map<string, Buffer> {
  return new Map([...m].map(([k, kv]) => [k, kv.value]));
}
