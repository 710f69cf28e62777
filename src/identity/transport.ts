import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../util/log.js';
import type { ServerSecurity } from '../api/lean-server.js';
import { channelCredentials, peerOf, serverCredentials, type SpiffePeer } from './tls.js';
import type { Svid, X509Source } from './source.js';
import type { Bundles } from './x509.js';
import { connectX509Source, DEFAULT_WORKLOAD_API_SOCKET, type WorkloadX509Source } from './workload-client.js';
import { FederatedSource, type FederationEntry, type FederationStatus } from './federation.js';

/**
 * How a component talks gRPC: with its X.509-SVID over mutual TLS (the default), or — only when asked for
 * explicitly — in plaintext with no identity at all, a development mode that logs loudly.
 */
export interface Transport {
  readonly secure: boolean;
  /** What startServer() serves with: mutual TLS with this SVID, or plaintext in insecure mode. */
  serverCredentials(): ServerSecurity;
  /** `onServer` learns the server's SPIFFE ID at every handshake (path tokens are addressed to it). */
  channelCredentials(onServer?: (spiffeId: string) => void): grpc.ChannelCredentials;
  /** This component's current SVID; undefined in insecure mode. */
  svid(): Svid | undefined;
  /** Where SVID and bundles come from (rotations are its 'update' events); undefined in insecure mode. */
  readonly source?: X509Source;
  /** Trust bundles by trust domain (empty in insecure mode). */
  bundles(): Bundles;
  /** The verified peer of a server call; undefined in insecure mode. */
  peer(call: Parameters<typeof peerOf>[0]): SpiffePeer | undefined;
  /** Which other trust domains are accepted, when federation is configured (nsmd). */
  readonly federation?: FederationStatus;
  close(): void;
}

export function insecureTransport(log: Logger, component: string): Transport {
  log.warn(
    { component },
    'IDENTITY DISABLED (NSM_INSECURE=true): no mutual TLS, no path tokens, no authorization. Development only: never run this way in production.',
  );
  return {
    secure: false,
    serverCredentials: () => 'insecure',
    channelCredentials: () => grpc.credentials.createInsecure(),
    svid: () => undefined,
    bundles: () => new Map(),
    peer: () => undefined,
    close: () => {},
  };
}

export function sourceTransport(source: X509Source & { close?: () => void }, federation?: FederationStatus): Transport {
  return {
    secure: true,
    source,
    ...(federation ? { federation } : {}),
    serverCredentials: () => serverCredentials(source),
    channelCredentials: (onServer) =>
      channelCredentials(source, {
        expectServer: (id) => {
          onServer?.(id);
          return true;
        },
      }),
    svid: () => source.svid(),
    bundles: () => source.bundles(),
    peer: (call) => peerOf(call),
    close: () => source.close?.(),
  };
}

export interface TransportOptions {
  insecure: boolean;
  /** SPIFFE_ENDPOINT_SOCKET. */
  workloadApi?: string;
  timeoutMs?: number;
  component: string;
  log: Logger;
  /**
   * When given, the only other trust domains accepted (bundles from the Workload API or bundle endpoints);
   * when absent, every bundle the Workload API sends is trusted.
   */
  federatesWith?: readonly FederationEntry[];
}

/** Fetches this component's SVID from the Workload API (SPIRE's agent, or the embedded issuer). */
export async function openTransport(o: TransportOptions): Promise<Transport> {
  if (o.insecure) return insecureTransport(o.log, o.component);
  const url = o.workloadApi || DEFAULT_WORKLOAD_API_SOCKET;
  let source: WorkloadX509Source;
  try {
    source = await connectX509Source(url, { timeoutMs: o.timeoutMs ?? 10_000, log: o.log });
  } catch (e) {
    throw new Error(
      `no X.509-SVID from the SPIFFE Workload API at ${url}: ${(e as Error).message}. Point SPIFFE_ENDPOINT_SOCKET at a SPIRE agent or nsm-issuer socket, or set NSM_INSECURE=true for development`,
    );
  }
  o.log.info({ spiffeId: source.svid().spiffeId, workloadApi: url }, 'identity from the Workload API');
  if (!o.federatesWith) return sourceTransport(source);
  const federated = await FederatedSource.open(source, o.federatesWith, { log: o.log });
  if (o.federatesWith.length) o.log.info({ federatesWith: federated.trustDomains }, 'federated trust domains');
  return sourceTransport(federated, federated);
}
