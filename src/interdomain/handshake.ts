/**
 * Explains a failed mutual-TLS handshake with another domain's nsmd. grpc-js reports only "no connection
 * established" when either side refuses the other's certificate, which would hide the one thing an
 * operator needs to know: which trust domain is not federated with which. So, once a channel has failed,
 * one plain TLS handshake is made without verification, the peer's certificate is checked here by SPIFFE
 * rules, and the peer's own verdict on ours is awaited (TLS 1.3 sends it after the handshake).
 */
import tls, { type DetailedPeerCertificate } from 'node:tls';
import { parseSocketUrl } from '../api/grpc.js';
import { certFacts } from '../identity/cert-parse.js';
import { trustDomainOf } from '../identity/spiffe-id.js';
import { chainOf } from '../identity/tls.js';
import type { Transport } from '../identity/transport.js';
import { verifySvid } from '../identity/x509.js';

export interface HandshakeRefusal {
  kind: 'refused';
  /** 'us': this nsmd does not accept the peer; 'them': the peer does not accept this nsmd. */
  by: 'us' | 'them';
  /** The SPIFFE ID the peer's certificate claims (unverified when `by` is 'us'). */
  peerId?: string;
  reason: string;
}

/** 'accepted': both sides accept each other now; 'unknown': no TLS verdict (unreachable, silent, insecure). */
export type HandshakeOutcome = HandshakeRefusal | { kind: 'accepted' } | { kind: 'unknown' };

export function diagnoseHandshake(url: string, transport: Transport, timeoutMs: number): Promise<HandshakeOutcome> {
  const unknown = { kind: 'unknown' } as const;
  const svid = transport.svid();
  if (!svid) return Promise.resolve(unknown);
  const target = parseSocketUrl(url);
  if (target.kind !== 'tcp') return Promise.resolve(unknown);
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(target.target)!;
  return new Promise((resolve) => {
    let peerId: string | undefined;
    let settled = false;
    const done = (r: HandshakeOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done(unknown), timeoutMs);
    const sock = tls.connect({ host: m[1], port: Number(m[2]), cert: svid.chainPem, key: svid.keyPem, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
    sock.once('secureConnect', () => {
      const cert = sock.getPeerCertificate(true) as DetailedPeerCertificate;
      try {
        peerId = cert?.raw ? certFacts(cert.raw).uriSans[0] : undefined;
      } catch {
        peerId = undefined;
      }
      try {
        verifySvid(chainOf(cert), transport.bundles());
      } catch (e) {
        let td: string | undefined;
        try {
          td = peerId ? trustDomainOf(peerId) : undefined;
        } catch {
          td = undefined;
        }
        const why = (td && transport.federation?.explain(td)) || (e as Error).message;
        return done({ kind: 'refused', by: 'us', ...(peerId ? { peerId } : {}), reason: why });
      }
      // An HTTP/2 server speaks first (its SETTINGS frame): data means it accepted this nsmd's certificate.
      sock.once('data', () => done({ kind: 'accepted' }));
    });
    // Before the handshake, only a TLS alert is a verdict; a refused or unreachable port is not about identity.
    sock.on('error', (e: NodeJS.ErrnoException) => {
      const tlsVerdict = peerId !== undefined || /alert|ssl/i.test(`${e.code ?? ''} ${e.message}`);
      done(tlsVerdict ? { kind: 'refused', by: 'them', ...(peerId ? { peerId } : {}), reason: e.message } : unknown);
    });
    sock.once('close', () => done(peerId ? { kind: 'refused', by: 'them', peerId, reason: 'it closed the connection after the handshake' } : unknown));
  });
}
