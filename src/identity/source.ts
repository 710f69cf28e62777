/**
 * An X509Source is where a process gets its current X.509-SVID and the trust bundles it accepts peers
 * from. The Workload API client is one; a fixed source (tests, the embedded issuer's own daemon) is another.
 */
import { EventEmitter } from 'node:events';
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { certFacts } from './cert-parse.js';
import { toPem } from './der.js';
import { parseSpiffeId } from './spiffe-id.js';
import type { Bundles } from './x509.js';

/**
 * One X.509-SVID with its key. The key is held as a KeyObject; `keyPem` is computed on demand and is not
 * an own enumerable property, so logging or JSON-serialising an Svid never prints it.
 */
export class Svid {
  readonly leaf: X509Certificate;
  readonly chainPem: string;
  readonly notAfter: number;

  constructor(
    readonly spiffeId: string,
    /** Leaf first. */
    readonly chain: readonly X509Certificate[],
    readonly privateKey: KeyObject,
  ) {
    if (chain.length === 0) throw new Error('an SVID needs at least its leaf certificate');
    this.leaf = chain[0]!;
    parseSpiffeId(spiffeId);
    const facts = certFacts(this.leaf.raw);
    if (facts.uriSans.length !== 1 || facts.uriSans[0] !== spiffeId) {
      throw new Error(`the SVID for ${spiffeId} has URI SANs [${facts.uriSans.join(', ')}]`);
    }
    if (!this.leaf.checkPrivateKey(privateKey)) throw new Error(`the private key of ${spiffeId} does not match its certificate`);
    this.chainPem = toPem(chain);
    this.notAfter = facts.notAfter;
  }

  static fromDer(spiffeId: string, chainDer: readonly Buffer[], keyPkcs8Der: Buffer): Svid {
    const key = createPrivateKey({ key: keyPkcs8Der, format: 'der', type: 'pkcs8' });
    return new Svid(spiffeId, chainDer.map((d) => new X509Certificate(d)), key);
  }

  get keyPem(): string {
    return this.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  }

  /** Leaf serial number (hex), handy to tell rotated SVIDs apart. */
  get serial(): string {
    return this.leaf.serialNumber;
  }

  toJSON(): object {
    return { spiffeId: this.spiffeId, serial: this.serial, notAfter: new Date(this.notAfter).toISOString() };
  }
}

export interface X509Source {
  /** The current SVID; after an 'update' it may be a new one. */
  svid(): Svid;
  /** Trust domain name → CA certificates (own trust domain and federated ones). */
  bundles(): Bundles;
  on(event: 'update', listener: () => void): this;
  off(event: 'update', listener: () => void): this;
}

/** A source whose contents the owner sets; each set() is a rotation seen by TLS for new handshakes. */
export class StaticX509Source extends EventEmitter implements X509Source {
  private current: Svid;
  private trust: Map<string, X509Certificate[]>;

  constructor(svid: Svid, bundles: Bundles) {
    super();
    // Every TLS credentials object and connection built on a source listens to it: many listeners are normal.
    this.setMaxListeners(0);
    this.current = svid;
    this.trust = new Map([...bundles].map(([td, certs]) => [td, [...certs]]));
  }

  svid(): Svid {
    return this.current;
  }

  bundles(): Bundles {
    return this.trust;
  }

  set(update: { svid?: Svid; bundles?: Bundles }): void {
    if (update.svid) this.current = update.svid;
    if (update.bundles) this.trust = new Map([...update.bundles].map(([td, certs]) => [td, [...certs]]));
    this.emit('update');
  }

  /** Adds or replaces one trust domain's bundle (federation). */
  setBundle(trustDomain: string, certs: readonly X509Certificate[]): void {
    const next = new Map(this.trust);
    next.set(trustDomain, [...certs]);
    this.set({ bundles: next });
  }
}
