/**
 * The registry as this domain's callers see it: names without a domain are this domain's registry; names
 * with `@domain` are asked of that domain. The domain is resolved through DNS SRV (or taken as a literal
 * ip:port), its entry nsmds are tried in RFC 2782 order, the query goes out with `@domain` stripped and
 * the answer comes back with it appended. Registering in another domain is refused: an endpoint registers
 * with the nsmd of its own domain.
 */
import * as grpc from '@grpc/grpc-js';
import { ApiClient } from '../api/grpc.js';
import { messageCodec } from '../api/codec.js';
import type { NetworkService, NetworkServiceEndpoint } from '../api/types.js';
import { DomainNotFoundError, type SrvResolver, type Target } from '../dns/index.js';
import type { Transport } from '../identity/transport.js';
import type { NseEvent, NsEvent, Registry, Unsubscribe } from '../registry/types.js';
import { deadlineExceeded, invalidArgument, MeshError, messageOf, notFound, permissionDenied, status, statusOf, unavailable } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { diagnoseHandshake } from './handshake.js';
import {
  domainOf,
  endpointFromDomain,
  endpointQueryDomain,
  serviceFromDomain,
  serviceQueryDomain,
  stripEndpoint,
  stripService,
} from './names.js';

const nseDefaults = messageCodec('registry.NetworkServiceEndpoint').normalize;

export interface InterdomainRegistryOptions {
  resolver: SrvResolver;
  transport: Transport;
  /** How long one of a domain's nsmds may take to accept a connection before the next is tried. */
  dialTimeoutMs: number;
  /** Deadline of one query to one nsmd once connected. */
  queryTimeoutMs: number;
  /**
   * How long the Request path (lookups) may reuse another domain's answer; 0 asks every time. Find always
   * asks. An answer is reused only while the connection to the nsmd that gave it stays up.
   */
  lookupTtlMs: number;
  log: Logger;
  now?: () => number;
}

/** Enough for every service a node's clients use; beyond it the oldest answers go first. */
const MAX_CACHED_LOOKUPS = 1024;

/** The two registry services of one remote nsmd, over one mutual-TLS connection. */
interface Peer {
  ns: ApiClient<'registry.NetworkServiceRegistry'>;
  nse: ApiClient<'registry.NetworkServiceEndpointRegistry'>;
}

/** What one of a domain's nsmds answered, and which one. */
interface Answer<T> {
  items: T;
  url: string;
}

/** A domain's nsmd went away or does not answer: the next one of the domain is worth a try. */
const RETRYABLE = new Set([status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.CANCELLED]);

export class InterdomainRegistry implements Registry {
  private readonly peers = new Map<string, Peer>();
  /** Answers for the Request path, and queries in flight (so that a burst of Requests asks once). */
  private readonly lookups = new Map<string, { at: number; answer: Promise<Answer<unknown[]>>; url?: string }>();
  /** Endpoint queries sent along with their service's query: the Request path asks for both, one after the other. */
  private readonly prefetched = new Map<string, { at: number; answer: Promise<Answer<NetworkServiceEndpoint[]>> }>();
  private readonly log: Logger;
  private readonly now: () => number;

  constructor(
    private readonly local: Registry,
    private readonly o: InterdomainRegistryOptions,
  ) {
    this.log = o.log.child({ component: 'interdomain' });
    this.now = o.now ?? Date.now;
  }

  async registerService(ns: NetworkService): Promise<NetworkService> {
    this.refuseRemote('network service', ns.name, serviceQueryDomain(ns));
    return this.local.registerService(ns);
  }

  async unregisterService(name: string): Promise<void> {
    this.refuseRemote('network service', name, domainOf(name));
    return this.local.unregisterService(name);
  }

  async registerEndpoint(nse: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint> {
    for (const name of [nse.name, ...nse.network_service_names]) this.refuseRemote(name === nse.name ? 'network service endpoint' : 'network service', name, domainOf(name));
    return this.local.registerEndpoint(nse);
  }

  async unregisterEndpoint(name: string): Promise<void> {
    this.refuseRemote('network service endpoint', name, domainOf(name));
    return this.local.unregisterEndpoint(name);
  }

  async findServices(t: NetworkService): Promise<NetworkService[]> {
    const domain = serviceQueryDomain(t);
    return domain ? this.findRemoteServices(domain, t).then((a) => a.items) : this.local.findServices(t);
  }

  async lookupServices(t: NetworkService): Promise<NetworkService[]> {
    const domain = serviceQueryDomain(t);
    if (!domain) return this.local.lookupServices(t);
    if (t.name) this.prefetchEndpointsOf(domain, t.name);
    return this.reuse(`ns ${JSON.stringify(t)}`, () => this.findRemoteServices(domain, t));
  }

  async findEndpoints(t: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint[]> {
    const domain = endpointQueryDomain(t);
    return domain ? this.findRemoteEndpoints(domain, t).then((a) => a.items) : this.local.findEndpoints(t);
  }

  async lookupEndpoints(t: NetworkServiceEndpoint): Promise<NetworkServiceEndpoint[]> {
    const domain = endpointQueryDomain(t);
    if (!domain) return this.local.lookupEndpoints(t);
    const key = `nse ${JSON.stringify(t)}`;
    return this.reuse(key, () => this.takePrefetched(key) ?? this.findRemoteEndpoints(domain, t));
  }

  watchServices(t: NetworkService, onEvent: (e: NsEvent) => void): Unsubscribe {
    const domain = serviceQueryDomain(t);
    if (!domain) return this.local.watchServices(t, onEvent);
    return this.watchRemote(domain, (p) => p.ns.stream('Find', { network_service: stripService(t), watch: true }), (r) => {
      if (r.network_service) onEvent({ ns: serviceFromDomain(r.network_service, domain), deleted: r.deleted });
    });
  }

  watchEndpoints(t: NetworkServiceEndpoint, onEvent: (e: NseEvent) => void): Unsubscribe {
    // A watch cannot fail; a query spanning domains watches this domain, where no such name exists.
    let domain: string | undefined;
    try {
      domain = endpointQueryDomain(t);
    } catch {
      domain = undefined;
    }
    if (!domain) return this.local.watchEndpoints(t, onEvent);
    return this.watchRemote(domain, (p) => p.nse.stream('Find', { network_service_endpoint: stripEndpoint(t), watch: true }), (r) => {
      if (r.network_service_endpoint) onEvent({ nse: endpointFromDomain(r.network_service_endpoint, domain), deleted: r.deleted });
    });
  }

  async close(): Promise<void> {
    for (const p of this.peers.values()) {
      p.ns.close();
      p.nse.close();
    }
    this.peers.clear();
    await this.local.close();
  }

  /**
   * A recent (or in-flight) answer to the same query, or a new one. Failures are never reused, nor is an
   * answer whose nsmd's connection has gone (that nsmd stopped or moved: its domain may have others).
   */
  private async reuse<T>(key: string, ask: () => Promise<Answer<T[]>>): Promise<T[]> {
    if (this.o.lookupTtlMs <= 0) return (await ask()).items;
    const now = this.now();
    let entry = this.reusable(key);
    if (!entry) {
      if (this.lookups.size >= MAX_CACHED_LOOKUPS) this.lookups.delete(this.lookups.keys().next().value!);
      const e: { at: number; answer: Promise<Answer<unknown[]>>; url?: string } = { at: now, answer: ask() };
      this.lookups.set(key, e);
      e.answer.then(
        (a) => (e.url = a.url),
        () => {
          if (this.lookups.get(key) === e) this.lookups.delete(key);
        },
      );
      entry = e;
    }
    // Each caller gets its own copy: the chain may change what it is given.
    return structuredClone((await entry.answer).items) as T[];
  }

  /** An answer still in flight (joined), or a settled one while it is fresh and its nsmd's connection is up. */
  private reusable(key: string) {
    const entry = this.lookups.get(key);
    if (!entry || this.o.lookupTtlMs <= 0 || this.now() - entry.at >= this.o.lookupTtlMs) return undefined;
    return entry.url === undefined || this.connectedTo(entry.url) ? entry : undefined;
  }

  /** Asks for a service's endpoints while its own query is under way, unless a reusable answer exists. */
  private prefetchEndpointsOf(domain: string, service: string): void {
    const t = nseDefaults({ network_service_names: [service] });
    const key = `nse ${JSON.stringify(t)}`;
    if (this.reusable(key) || this.prefetched.has(key)) return;
    const now = this.now();
    // Not taken (the service was not found, or the Request failed first): dropped once too old to be useful.
    for (const [k, p] of this.prefetched) if (now - p.at > this.o.queryTimeoutMs) this.prefetched.delete(k);
    const answer = this.findRemoteEndpoints(domain, t);
    // Its failure is reported to whoever takes it; one nobody takes must not count as unhandled.
    answer.catch(() => undefined);
    this.prefetched.set(key, { at: now, answer });
  }

  private takePrefetched(key: string): Promise<Answer<NetworkServiceEndpoint[]>> | undefined {
    const p = this.prefetched.get(key);
    if (!p) return undefined;
    this.prefetched.delete(key);
    return this.now() - p.at <= this.o.queryTimeoutMs ? p.answer : undefined;
  }

  private connectedTo(url: string): boolean {
    return this.peers.get(url)?.ns.channel().getConnectivityState(false) === grpc.connectivityState.READY;
  }

  private refuseRemote(kind: string, name: string, domain: string | undefined): void {
    if (domain) {
      throw invalidArgument(`${kind} "${name}" belongs to domain "${domain}": register it with an nsmd of that domain, not here`);
    }
  }

  private async findRemoteServices(domain: string, t: NetworkService): Promise<Answer<NetworkService[]>> {
    const { items, url } = await this.ask(domain, (p, timeoutMs) => p.ns.collect('Find', { network_service: stripService(t) }, { timeoutMs }));
    return { url, items: items.flatMap((r) => (r.network_service ? [serviceFromDomain(r.network_service, domain)] : [])) };
  }

  private async findRemoteEndpoints(domain: string, t: NetworkServiceEndpoint): Promise<Answer<NetworkServiceEndpoint[]>> {
    const { items, url } = await this.ask(domain, (p, timeoutMs) => p.nse.collect('Find', { network_service_endpoint: stripEndpoint(t) }, { timeoutMs }));
    return { url, items: items.flatMap((r) => (r.network_service_endpoint ? [endpointFromDomain(r.network_service_endpoint, domain)] : [])) };
  }

  /** The domain's entry nsmds in the order to try them, with DNS failures turned into statuses naming the domain. */
  private async targets(domain: string): Promise<Target[]> {
    try {
      return await this.o.resolver.resolveDomain(domain);
    } catch (e) {
      if (e instanceof DomainNotFoundError) throw notFound(e.message);
      throw unavailable(messageOf(e));
    }
  }

  /**
   * Asks the domain's nsmds in order until one answers. One that cannot be reached (refused, silent, gone)
   * costs at most the dial timeout and the next is tried; one whose identity is not accepted — or that does
   * not accept ours — ends the search with PERMISSION_DENIED, since the domain's others share its trust domain.
   */
  private async ask<T>(domain: string, query: (p: Peer, timeoutMs: number) => Promise<T>): Promise<Answer<T>> {
    const targets = await this.targets(domain);
    const failures: string[] = [];
    for (const t of targets) {
      let peer = this.peer(t.url);
      try {
        await connected(peer.ns, this.o.dialTimeoutMs);
      } catch (e) {
        // A failed connection is a refused identity (ends the search), an nsmd that is not there, or one
        // that is back while its channel still waits out the backoff of an earlier failure.
        const back = e instanceof ConnectFailed && (await this.explainRefusal(domain, t.url)) === 'accepted';
        if (back) {
          peer = this.peer(t.url, true);
          await connected(peer.ns, this.o.dialTimeoutMs).catch(() => undefined);
        }
        if (!back || peer.ns.channel().getConnectivityState(false) !== grpc.connectivityState.READY) {
          failures.push(`${t.url}: ${messageOf(e)}`);
          this.log.warn({ domain, target: t.url, err: messageOf(e) }, "a domain's nsmd cannot be reached; trying the next");
          continue;
        }
      }
      try {
        return { items: await query(peer, this.o.queryTimeoutMs), url: t.url };
      } catch (e) {
        const code = statusOf(e);
        if (!RETRYABLE.has(code)) throw new MeshError(code, `domain "${domain}" (nsmd at ${t.url}): ${messageOf(e)}`);
        failures.push(`${t.url}: ${messageOf(e)}`);
        this.log.warn({ domain, target: t.url, err: messageOf(e) }, "a domain's nsmd did not answer; trying the next");
      }
    }
    throw unavailable(`domain "${domain}": none of its ${targets.length} nsmd(s) answered: ${failures.join('; ')}`);
  }

  /**
   * Throws PERMISSION_DENIED when the handshake with the domain's nsmd fails on identity, either way round;
   * otherwise tells whether a handshake completes now ('accepted') or gives no verdict ('unknown').
   */
  private async explainRefusal(domain: string, url: string): Promise<'accepted' | 'unknown'> {
    const refusal = await diagnoseHandshake(url, this.o.transport, this.o.dialTimeoutMs);
    if (refusal.kind !== 'refused') return refusal.kind;
    if (refusal.by === 'us') {
      throw permissionDenied(`domain "${domain}": its nsmd at ${url} presents ${refusal.peerId ?? 'no SPIFFE ID'}, which this nsmd does not accept: ${refusal.reason}`);
    }
    throw permissionDenied(
      `domain "${domain}": its nsmd at ${url}${refusal.peerId ? ` (${refusal.peerId})` : ''} refused this nsmd's identity ${this.o.transport.svid()?.spiffeId ?? ''} in the TLS handshake (${refusal.reason}); that domain must federate with this one's trust domain`,
    );
  }

  /** A watch follows the first of the domain's nsmds that the DNS order names; it ends if that one goes away. */
  private watchRemote<R>(domain: string, open: (p: Peer) => grpc.ClientReadableStream<R>, onData: (r: R) => void): Unsubscribe {
    let stream: grpc.ClientReadableStream<R> | undefined;
    let cancelled = false;
    this.targets(domain).then(
      (targets) => {
        if (cancelled) return;
        const s = open(this.peer(targets[0]!.url));
        stream = s;
        s.on('data', onData);
        s.on('error', (e: unknown) => {
          if (!cancelled) this.log.warn({ domain, err: messageOf(e) }, 'watch of another domain ended');
        });
      },
      (e: unknown) => this.log.warn({ domain, err: messageOf(e) }, 'cannot watch another domain'),
    );
    return () => {
      cancelled = true;
      stream?.cancel();
    };
  }

  /** The clients of one nsmd; `fresh` replaces them (a new channel connects at once, without inherited backoff). */
  private peer(url: string, fresh = false): Peer {
    let p = this.peers.get(url);
    if (p && fresh) {
      p.ns.close();
      p.nse.close();
      p = undefined;
    }
    if (!p) {
      // One credentials object for both clients: grpc-js then shares one connection (one handshake) between them.
      const creds = this.o.transport.channelCredentials();
      // A domain's nsmd that was down is tried again soon rather than after grpc-js's default 2-minute backoff.
      const opts = { 'grpc.initial_reconnect_backoff_ms': 250, 'grpc.max_reconnect_backoff_ms': 2000 };
      p = {
        ns: new ApiClient('registry.NetworkServiceRegistry', url, creds, opts),
        nse: new ApiClient('registry.NetworkServiceEndpointRegistry', url, creds, opts),
      };
      this.peers.set(url, p);
    }
    return p;
  }
}

/** The channel failed to connect (as opposed to not connecting in time). */
class ConnectFailed extends MeshError {
  constructor() {
    super(status.UNAVAILABLE, 'connection failed');
  }
}

/**
 * Resolves once the channel is connected. Unlike waitForReady it gives up as soon as the channel fails
 * (refused, reset, handshake refused, or still backing off from an earlier failure) instead of waiting out
 * the whole timeout, so that the next of a domain's nsmds is tried at once.
 */
async function connected(client: ApiClient<'registry.NetworkServiceRegistry'>, timeoutMs: number): Promise<void> {
  const ch = client.channel();
  const deadline = Date.now() + timeoutMs;
  let state = ch.getConnectivityState(true);
  while (state !== grpc.connectivityState.READY) {
    if (state === grpc.connectivityState.TRANSIENT_FAILURE || state === grpc.connectivityState.SHUTDOWN) throw new ConnectFailed();
    const from = state;
    await new Promise<void>((resolve, reject) =>
      ch.watchConnectivityState(from, deadline, (err) => (err ? reject(deadlineExceeded(`not connected within ${timeoutMs} ms`)) : resolve())),
    );
    state = ch.getConnectivityState(true);
  }
}
