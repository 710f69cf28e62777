/**
 * X.509-SVID mutual TLS for the API's own gRPC server (src/api/lean-server.ts).
 *
 * - Handshakes: the source's current SVID is presented and a client certificate chaining to one of the
 *   bundles is required (OpenSSL checks chain and validity). Each source 'update' reaches the handshakes
 *   from then on; established sessions keep what they were made with.
 * - OpenSSL's trust anchors are the union of all bundles, so it would accept trust domain A's ID signed by
 *   B's CA: the client's chain is verified again by SPIFFE rules, once per TLS session (not per call), and
 *   a session that fails gets UNAUTHENTICATED (or PERMISSION_DENIED from `authorize`) on every call before
 *   any handler runs. The whole chain as TLS built it is checked, so SVIDs signed by an intermediate work.
 */
import type { TLSSocket } from 'node:tls';
import { status } from '@grpc/grpc-js';
import type { Admission, SessionGate } from '../api/lean-server.js';
import type { X509Source } from './source.js';
import { toPem } from './der.js';
import { bindVerifiedPeer, verifyPeerCertificate } from './tls.js';

export interface ServerCredentialsOptions {
  /** Authorises callers by SPIFFE ID (PERMISSION_DENIED otherwise); default: any ID that verifies. */
  authorize?: (spiffeId: string) => boolean;
}

class MtlsServerCredentials implements SessionGate {
  constructor(
    private readonly source: X509Source,
    private readonly opts: ServerCredentialsOptions,
  ) {}

  secureContext() {
    const svid = this.source.svid();
    return { cert: svid.chainPem, key: svid.keyPem, ca: toPem([...this.source.bundles().values()].flat()) };
  }

  watch(changed: () => void): () => void {
    this.source.on('update', changed);
    return () => this.source.off('update', changed);
  }

  admit(socket: TLSSocket): Admission {
    let peer;
    try {
      peer = verifyPeerCertificate(socket.getPeerCertificate(true), this.source);
    } catch (e) {
      return { refuse: { code: status.UNAUTHENTICATED, details: (e as Error).message } };
    }
    if (this.opts.authorize && !this.opts.authorize(peer.spiffeId)) {
      return { refuse: { code: status.PERMISSION_DENIED, details: `${peer.spiffeId} is not authorised here` } };
    }
    return { bind: (metadata) => bindVerifiedPeer(metadata, peer) };
  }
}

/** Server security for startServer(): mutual TLS with the source's SVID, callers verified by SPIFFE ID. */
export function serverCredentials(source: X509Source, opts: ServerCredentialsOptions = {}): SessionGate {
  return new MtlsServerCredentials(source, opts);
}
