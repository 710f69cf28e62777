/**
 * X.509-SVID mutual TLS, following rotation. The server side is tls-server.ts (for the API's own server,
 * src/api/lean-server.ts); this module holds the client side for @grpc/grpc-js and the peer verification
 * both share.
 *
 * How rotation reaches grpc-js's client (1.14.7): createCertificateProviderChannelCredentials, on grpc-js's
 * experimental CertificateProvider, builds a new SecureContext from the latest update for every new
 * connection; existing connections are untouched. The provider below turns an X509Source's 'update' events
 * into those provider updates.
 *
 * SPIFFE verification beyond what TLS does: trust anchors given to OpenSSL are the union of all bundles, so
 * OpenSSL alone would accept trust domain A's ID signed by B's CA. The client re-verifies the server's chain
 * in checkServerIdentity (which also replaces Node's DNS hostname check: SVIDs carry no DNS names); the
 * server re-verifies the client's chain once per TLS session, before any handler runs.
 */
import type { X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type { X509Source } from './source.js';
import { verifySvid, SvidError } from './x509.js';
import { toPem } from './der.js';

type CaListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;

/** Feeds an X509Source to grpc-js: PEM roots (all bundles) and the current SVID with its key. */
class SourceCertificateProvider implements grpc.experimental.CertificateProvider {
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  private ca?: Buffer;
  private identity?: { certificate: Buffer; privateKey: Buffer };
  private readonly onUpdate = () => this.refresh(true);

  constructor(private readonly source: X509Source) {}

  private refresh(notify: boolean): void {
    const caPem = Buffer.from(toPem([...this.source.bundles().values()].flat()));
    const svid = this.source.svid();
    const certificate = Buffer.from(svid.chainPem);
    const caChanged = !this.ca || !this.ca.equals(caPem);
    const idChanged = !this.identity || !this.identity.certificate.equals(certificate);
    if (caChanged) this.ca = caPem;
    if (idChanged) this.identity = { certificate, privateKey: Buffer.from(svid.keyPem) };
    if (!notify) return;
    if (caChanged) for (const l of this.caListeners) l({ caCertificate: this.ca! });
    if (idChanged) for (const l of this.identityListeners) l(this.identity!);
  }

  private listening(): void {
    if (this.caListeners.size + this.identityListeners.size === 1) {
      this.refresh(false);
      this.source.on('update', this.onUpdate);
    }
  }

  private maybeStop(): void {
    if (this.caListeners.size + this.identityListeners.size === 0) this.source.off('update', this.onUpdate);
  }

  // The current value goes to a new listener on the next microtask, not synchronously: grpc-js registers
  // provider listeners before its own watcher, so a synchronous first value would be lost and every
  // connection refused as "credentials not loaded".
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    this.listening();
    queueMicrotask(() => {
      if (this.caListeners.has(listener)) listener({ caCertificate: this.ca! });
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
    this.maybeStop();
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    this.listening();
    queueMicrotask(() => {
      if (this.identityListeners.has(listener)) listener(this.identity!);
    });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
    this.maybeStop();
  }
}

export interface SpiffePeer {
  spiffeId: string;
  trustDomain: string;
  leaf: X509Certificate;
  notAfter: number;
}

/** Calls whose TLS session was verified by the server, by their metadata object (unforgeable, and gone with the call). */
const verifiedPeers = new WeakMap<grpc.Metadata, SpiffePeer>();

/** Ties a call to the verified identity of its TLS session (tls-server.ts). */
export function bindVerifiedPeer(metadata: grpc.Metadata, peer: SpiffePeer): void {
  verifiedPeers.set(metadata, peer);
}

type AuthContextCall = { getAuthContext(): { sslPeerCertificate?: PeerCertificate } };

/**
 * Verified peers by leaf fingerprint, per source, so that a call costs a map lookup rather than a chain
 * verification (≈2 ms); emptied whenever the source changes, since a bundle change can revoke trust.
 */
const peerCaches = new WeakMap<X509Source, Map<string, SpiffePeer>>();
const PEER_CACHE_MAX = 4096;

function peerCache(source: X509Source): Map<string, SpiffePeer> {
  let cache = peerCaches.get(source);
  if (!cache) {
    const c = new Map<string, SpiffePeer>();
    source.on('update', () => c.clear());
    peerCaches.set(source, (cache = c));
  }
  return cache;
}

/** The SPIFFE identity of a TLS peer's certificate (with its chain when detailed), verified against the source's bundles. */
export function verifyPeerCertificate(cert: PeerCertificate | DetailedPeerCertificate | undefined, source: X509Source): SpiffePeer {
  if (!cert?.raw) throw new SvidError('the caller presented no client certificate');
  const cache = peerCache(source);
  const hit = cache.get(cert.fingerprint256);
  if (hit) return hit;
  // TLS checked the certificate's validity period at the handshake. Checking it again later would break
  // every long-lived connection once its client certificate expires — after a rotation, that is normal —
  // so this re-verification (which exists for the trust-domain check) is done as of a moment inside the
  // validity period.
  const validTo = Date.parse(cert.valid_to);
  const peer = verifySvid(chainOf(cert as DetailedPeerCertificate), source.bundles(), Math.min(Date.now(), Number.isFinite(validTo) ? validTo - 1000 : Date.now()));
  if (cache.size >= PEER_CACHE_MAX) cache.clear();
  cache.set(cert.fingerprint256, peer);
  return peer;
}

function peerFromAuthContext(call: AuthContextCall, source: X509Source): SpiffePeer {
  return verifyPeerCertificate(call.getAuthContext().sslPeerCertificate, source);
}

export { serverCredentials, type ServerCredentialsOptions } from './tls-server.js';

/** The peer's chain as TLS presented and completed it: leaf, then issuers up to the root. */
export function chainOf(cert: DetailedPeerCertificate): Buffer[] {
  const out: Buffer[] = [];
  let c: DetailedPeerCertificate | undefined = cert;
  while (c?.raw && out.length < 10) {
    out.push(c.raw);
    // Node marks the root by making it its own issuer.
    if (!c.issuerCertificate || c.issuerCertificate === c || c.issuerCertificate.raw?.equals(c.raw)) break;
    c = c.issuerCertificate;
  }
  return out;
}

export interface ChannelCredentialsOptions {
  /** Accepts the server by SPIFFE ID; default: any ID that verifies. */
  expectServer?: (spiffeId: string) => boolean;
}

/**
 * mTLS channel credentials presenting the source's SVID. The server is accepted by SPIFFE rules (its chain
 * verified against the bundle of its own trust domain, then expectServer), never by DNS name, so unix://
 * and IP targets work.
 *
 * grpc-js shares connections between clients whose target, options and credentials are equal: reuse one
 * credentials object per source to share, or make new ones (or set 'grpc.use_local_subchannel_pool') to
 * get a connection (and handshake) of one's own.
 */
export function channelCredentials(source: X509Source, opts: ChannelCredentialsOptions = {}): grpc.ChannelCredentials {
  const provider = new SourceCertificateProvider(source);
  return grpc.experimental.createCertificateProviderChannelCredentials(provider, provider, {
    checkServerIdentity: (_host, cert) => {
      try {
        const peer = verifySvid(chainOf(cert as DetailedPeerCertificate), source.bundles());
        if (opts.expectServer && !opts.expectServer(peer.spiffeId)) {
          return new SvidError(`server ${peer.spiffeId} is not the server this client expects`);
        }
        return undefined;
      } catch (e) {
        return e instanceof Error ? e : new Error(String(e));
      }
    },
  });
}

/**
 * The verified SPIFFE identity of the caller of a call served with serverCredentials(); undefined if the call
 * did not come through them. With `source`, the peer's certificate (and chain) is verified again here;
 * undefined if it does not verify.
 */
export function peerOf(
  call: { metadata: grpc.Metadata; getAuthContext(): { sslPeerCertificate?: PeerCertificate } },
  source?: X509Source,
): SpiffePeer | undefined {
  if (source) {
    try {
      return peerFromAuthContext(call, source);
    } catch {
      return undefined;
    }
  }
  // The session's identity was proven at the handshake and holds for the session, as in TLS itself: a peer
  // that has rotated since keeps its connection, and its path tokens (signed with the new key and carrying
  // the new certificate) are what prove it still holds a valid SVID.
  return verifiedPeers.get(call.metadata);
}
