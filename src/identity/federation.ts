/**
 * Which other trust domains a component accepts SVIDs from. A Workload API may hand out every bundle its
 * server federates with; nsmd trusts only its own trust domain and the ones it is configured to federate
 * with, each bundle taken from the Workload API's federated bundles or fetched from the trust domain's
 * bundle endpoint. Everything else is refused, whatever the Workload API sends.
 */
import { EventEmitter } from 'node:events';
import type { X509Certificate } from 'node:crypto';
import { parseList } from '../util/labels.js';
import { silentLogger, type Logger } from '../util/log.js';
import { BundleEndpointFollower, type BundleFollowerOptions } from './bundle-endpoint.js';
import type { Svid, X509Source } from './source.js';
import { parseTrustDomain, trustDomainOf } from './spiffe-id.js';
import type { Bundles } from './x509.js';

export interface FederationEntry {
  trustDomain: string;
  /** https:// bundle endpoint to fetch the bundle from; absent: the Workload API supplies it. */
  bundleEndpoint?: string;
}

/** `td` or `td=https://host:port/path`, comma separated (NSM_FEDERATES_WITH). */
export function parseFederatesWith(text: string): FederationEntry[] {
  const seen = new Set<string>();
  return parseList(text).map((item) => {
    const eq = item.indexOf('=');
    const trustDomain = parseTrustDomain(eq < 0 ? item : item.slice(0, eq));
    if (seen.has(trustDomain)) throw new Error(`trust domain ${trustDomain} is listed twice`);
    seen.add(trustDomain);
    if (eq < 0) return { trustDomain };
    const bundleEndpoint = item.slice(eq + 1);
    if (!/^https:\/\/[^/\s]+/.test(bundleEndpoint)) throw new Error(`"${item}": a bundle endpoint must be an https:// URL`);
    return { trustDomain, bundleEndpoint };
  });
}

export function formatFederatesWith(entries: readonly FederationEntry[]): string {
  return entries.map((e) => (e.bundleEndpoint ? `${e.trustDomain}=${e.bundleEndpoint}` : e.trustDomain)).join(',');
}

/** What a refusal message needs to say about a trust domain. */
export interface FederationStatus {
  /** Trust domains configured for federation. */
  readonly trustDomains: readonly string[];
  /** Why SVIDs of `trustDomain` are not accepted now, or undefined when they are. */
  explain(trustDomain: string): string | undefined;
}

export interface FederatedSourceOptions extends BundleFollowerOptions {
  log?: Logger;
  /** The setting that configures federation, named in refusal messages. */
  settingName?: string;
  /** How long open() waits for the bundle endpoints' first answers; a slower one arrives in the background. */
  firstFetchWaitMs?: number;
}

/** An X509Source that passes on the inner source's SVID and only the bundles federation allows. */
export class FederatedSource extends EventEmitter implements X509Source, FederationStatus {
  private merged: Map<string, X509Certificate[]> = new Map();
  private readonly onInner = () => this.remerge();
  readonly trustDomains: readonly string[];

  private constructor(
    private readonly inner: X509Source & { close?: () => void },
    private readonly entries: readonly FederationEntry[],
    private readonly followers: ReadonlyMap<string, BundleEndpointFollower>,
    private readonly settingName: string,
  ) {
    super();
    this.setMaxListeners(0);
    this.trustDomains = entries.map((e) => e.trustDomain);
    inner.on('update', this.onInner);
    for (const f of followers.values()) f.on('update', this.onInner);
    this.remerge();
  }

  /**
   * Starts fetching from the bundle endpoints and waits (a little) for their first answers, so that a
   * component starting up can talk to federated peers at once; a domain that is down does not hold it up.
   */
  static async open(inner: X509Source & { close?: () => void }, entries: readonly FederationEntry[], opts: FederatedSourceOptions = {}): Promise<FederatedSource> {
    const log = opts.log ?? silentLogger;
    const followers = new Map<string, BundleEndpointFollower>();
    for (const e of entries) if (e.bundleEndpoint) followers.set(e.trustDomain, new BundleEndpointFollower(e.trustDomain, e.bundleEndpoint, { ...opts, log }));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([...followers.values()].map((f) => f.start())),
      new Promise((resolve) => (timer = setTimeout(resolve, opts.firstFetchWaitMs ?? 2000))),
    ]);
    clearTimeout(timer);
    const source = new FederatedSource(inner, entries, followers, opts.settingName ?? 'NSM_FEDERATES_WITH');
    for (const e of entries) {
      const why = source.explain(e.trustDomain);
      if (why) log.warn({ trustDomain: e.trustDomain }, `federation not ready: ${why}`);
    }
    return source;
  }

  svid(): Svid {
    return this.inner.svid();
  }

  bundles(): Bundles {
    return this.merged;
  }

  explain(trustDomain: string): string | undefined {
    if (trustDomain === this.ownTrustDomain()) return undefined;
    const entry = this.entries.find((e) => e.trustDomain === trustDomain);
    if (!entry) {
      return `trust domain ${trustDomain} is not federated with this one (${this.ownTrustDomain()}; ${this.settingName}: ${this.trustDomains.join(',') || 'empty'})`;
    }
    if (this.merged.has(trustDomain)) return undefined;
    const f = this.followers.get(trustDomain);
    if (f) return `trust domain ${trustDomain} is federated, but its bundle could not be fetched from ${f.url} yet${f.lastError ? `: ${f.lastError}` : ''}`;
    return `trust domain ${trustDomain} is federated, but the Workload API supplies no bundle for it (federate the SPIRE server or nsm-issuer with it, or give a bundle endpoint in ${this.settingName})`;
  }

  close(): void {
    this.inner.off('update', this.onInner);
    for (const f of this.followers.values()) f.close();
    this.inner.close?.();
  }

  private ownTrustDomain(): string {
    return trustDomainOf(this.inner.svid().spiffeId);
  }

  private remerge(): void {
    const own = this.ownTrustDomain();
    const from = this.inner.bundles();
    const next = new Map<string, X509Certificate[]>();
    const ownCerts = from.get(own);
    if (ownCerts) next.set(own, [...ownCerts]);
    for (const e of this.entries) {
      if (e.trustDomain === own) continue;
      const certs = this.followers.get(e.trustDomain)?.certs() ?? (e.bundleEndpoint ? undefined : from.get(e.trustDomain));
      if (certs?.length) next.set(e.trustDomain, [...certs]);
    }
    this.merged = next;
    this.emit('update');
  }
}
