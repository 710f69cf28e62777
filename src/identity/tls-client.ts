/**
 * X.509-SVID mutual TLS for a client socket of our own (the lean gRPC client), with the same acceptance rules
 * as channelCredentials() in tls.ts: OpenSSL checks the chain against the union of all bundles, then the
 * server's chain is verified again against the bundle of its own trust domain. DNS names are never checked:
 * SVIDs carry none, and unix:// and IP targets must work.
 */
import tls from 'node:tls';
import type { DetailedPeerCertificate } from 'node:tls';
import { toPem } from './der.js';
import type { Svid, X509Source } from './source.js';
import { verifySvid, type Bundles } from './x509.js';
import { chainOf, type SpiffePeer } from './tls.js';

/**
 * The last secure context built for a source, with what it was built from. A rotation (a new Svid object or
 * a new bundles map) makes the next handshake build a new one; sessions already open keep theirs.
 */
interface BuiltContext {
  svid: Svid;
  bundles: Bundles;
  context: tls.SecureContext;
}
const contexts = new WeakMap<X509Source, BuiltContext>();

function secureContextOf(source: X509Source): tls.SecureContext {
  const svid = source.svid();
  const bundles = source.bundles();
  const built = contexts.get(source);
  if (built && built.svid === svid && built.bundles === bundles) return built.context;
  const context = tls.createSecureContext({
    ca: toPem([...bundles.values()].flat()),
    cert: svid.chainPem,
    key: svid.keyPem,
  });
  contexts.set(source, { svid, bundles, context });
  return context;
}

/**
 * Options for tls.connect(): the source's current SVID, ALPN h2, and the server accepted by SPIFFE rules;
 * `onServer` learns the verified server at the handshake. Built per connection attempt, so each handshake
 * presents the SVID current at that moment.
 */
export function svidClientOptions(source: X509Source, onServer: (peer: SpiffePeer) => void): tls.ConnectionOptions {
  return {
    secureContext: secureContextOf(source),
    ALPNProtocols: ['h2'],
    // Called only once OpenSSL has verified the chain; an Error returned here fails the handshake with it.
    checkServerIdentity: (_host, cert) => {
      try {
        const peer = verifySvid(chainOf(cert as DetailedPeerCertificate), source.bundles());
        onServer(peer);
        return undefined;
      } catch (e) {
        return e instanceof Error ? e : new Error(String(e));
      }
    },
  };
}
