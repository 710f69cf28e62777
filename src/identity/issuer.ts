/**
 * The embedded issuer: a one-machine stand-in for a SPIRE server + agent. It holds a CA for one trust
 * domain and serves the SPIFFE Workload API, one unix socket per workload.
 *
 * Attestation is by socket: whoever can connect to a socket gets that socket's identity, so each
 * workload must get its own socket, reachable by it alone (as a per-pod CSI mount or a bind mount of
 * one file into the workload's mount namespace gives it). The issuer does not look at the caller's
 * pid/uid; a socket shared between workloads shares the identity.
 *
 * The CA private key stays in this process (and in stateDir's 0600 key file); workloads only ever
 * receive their own SVID's key.
 */
import fs from 'node:fs';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { startServer, type RunningServer } from '../api/grpc.js';
import { serviceDefinition, type DeepPartial } from '../api/codec.js';
import type { X509BundlesResponse, X509SVIDResponse } from '../api/types.js';
import { silentLogger, type Logger } from '../util/log.js';
import { status } from '../util/errors.js';
import { loadOrCreateCa } from './ca-store.js';
import { concatDer, toDerList } from './der.js';
import { StaticX509Source, Svid, type X509Source } from './source.js';
import { parseSpiffeId, parseTrustDomain, trustDomainId } from './spiffe-id.js';
import { createCa, issueSvid, type Ca, type IssuedSvid } from './x509.js';
import {
  BundleEndpointFollower,
  startBundleEndpoint,
  type BundleEndpointServerOptions,
  type BundleFollowerOptions,
  type RunningBundleEndpoint,
} from './bundle-endpoint.js';

export interface EmbeddedIssuerOptions {
  /** Default nsmesh.local. */
  trustDomain?: string;
  /** Lifetime of each X.509-SVID; default 1 h (SPIRE's default in upstream NSM's examples). */
  svidTtlMs?: number;
  /** When a workload's SVID is replaced; default half of svidTtlMs, as SPIRE agents do. */
  rotateAfterMs?: number;
  /** Lifetime of a newly created CA; default one year. */
  caTtlMs?: number;
  /** Where the CA is kept across restarts; without it the CA (and so the bundle) is new on every start. */
  stateDir?: string;
  log?: Logger;
}

type SvidCall = grpc.ServerWritableStream<unknown, DeepPartial<X509SVIDResponse>>;
type BundlesCall = grpc.ServerWritableStream<unknown, DeepPartial<X509BundlesResponse>>;

interface Workload {
  spiffeId: string;
  socketPath?: string;
  server?: RunningServer;
  svid: IssuedSvid;
  timer?: NodeJS.Timeout;
  svidCalls: Set<SvidCall>;
  bundleCalls: Set<BundlesCall>;
  local?: StaticX509Source;
}

const HEADER = 'workload.spiffe.io';

/** The Workload API's guard against being called by accident through a proxy: every call carries the header. */
function headerProblem(md: grpc.Metadata): string | undefined {
  const v = md.get(HEADER);
  return v.length === 1 && String(v[0]) === 'true' ? undefined : `security header missing from request: metadata "${HEADER}: true" is required`;
}

export class EmbeddedIssuer {
  private readonly workloads = new Map<string, Workload>();
  private readonly federated = new Map<string, Buffer[]>();
  private readonly followers = new Map<string, BundleEndpointFollower>();
  private readonly endpoints = new Set<RunningBundleEndpoint>();
  private closed = false;
  private localCount = 0;

  private constructor(
    private readonly ca: Ca,
    private readonly svidTtlMs: number,
    private readonly rotateAfterMs: number,
    private readonly log: Logger,
  ) {}

  static async start(opts: EmbeddedIssuerOptions = {}): Promise<EmbeddedIssuer> {
    const trustDomain = parseTrustDomain(opts.trustDomain ?? 'nsmesh.local');
    const svidTtlMs = opts.svidTtlMs ?? 3600_000;
    const rotateAfterMs = opts.rotateAfterMs ?? Math.floor(svidTtlMs / 2);
    if (!(svidTtlMs > 0)) throw new Error(`svidTtlMs must be positive, got ${svidTtlMs}`);
    if (!(rotateAfterMs > 0 && rotateAfterMs < svidTtlMs)) {
      throw new Error(`rotateAfterMs (${rotateAfterMs}) must be positive and shorter than svidTtlMs (${svidTtlMs}), or SVIDs would expire before rotation`);
    }
    const log = (opts.log ?? silentLogger).child({ component: 'spiffe-issuer', trustDomain });
    let ca: Ca;
    if (opts.stateDir) {
      const loaded = loadOrCreateCa({ stateDir: opts.stateDir, trustDomain, caTtlMs: opts.caTtlMs, minRemainingMs: svidTtlMs, log });
      ca = loaded.ca;
      log.info({ stateDir: opts.stateDir, created: loaded.created, caNotAfter: new Date(ca.notAfter).toISOString() }, 'CA ready');
    } else {
      ca = createCa(trustDomain, { ttlMs: opts.caTtlMs });
      log.info({ caNotAfter: new Date(ca.notAfter).toISOString() }, 'CA ready (in memory only)');
    }
    return new EmbeddedIssuer(ca, svidTtlMs, rotateAfterMs, log);
  }

  get trustDomain(): string {
    return this.ca.trustDomain;
  }

  /** This trust domain's CA certificates (DER), to hand to federated peers. */
  bundleDer(): Buffer[] {
    return [Buffer.from(this.ca.certDer)];
  }

  bundle(): X509Certificate[] {
    return [this.ca.cert];
  }

  /**
   * Serves the Workload API for `spiffeId` on `socketPath` and returns its unix:// URL. Whoever can open
   * the socket is that workload: give each workload its own socket. The socket keeps the mode the umask
   * gives it (connecting needs write permission: by default only its owner) unless `mode` says otherwise,
   * e.g. 0o666 when the workload runs as another user and the directory alone limits who reaches it.
   */
  async addWorkload(spiffeId: string, socketPath: string, opts: { mode?: number } = {}): Promise<string> {
    this.assertOpen();
    this.checkOwnId(spiffeId);
    if (!socketPath.startsWith('/')) throw new Error(`socket path "${socketPath}" must be absolute`);
    if (this.workloads.has(socketPath)) throw new Error(`${socketPath} already serves ${this.workloads.get(socketPath)!.spiffeId}`);
    const w = this.newWorkload(spiffeId);
    w.socketPath = socketPath;
    this.workloads.set(socketPath, w);
    try {
      w.server = await startServer(`unix://${socketPath}`, (server) => server.addService(serviceDefinition('SpiffeWorkloadAPI'), this.handlers(w)));
      if (opts.mode !== undefined) fs.chmodSync(socketPath, opts.mode);
    } catch (e) {
      await w.server?.close();
      this.dropWorkload(w);
      this.workloads.delete(socketPath);
      throw e;
    }
    this.log.info({ spiffeId, socket: socketPath }, 'serving Workload API');
    return `unix://${socketPath}`;
  }

  async removeWorkload(socketPath: string): Promise<void> {
    const w = this.workloads.get(socketPath);
    if (!w) return;
    this.workloads.delete(socketPath);
    this.dropWorkload(w);
    await w.server?.close();
  }

  /**
   * An in-process source for this issuer's own daemon (which needs no socket to reach itself); it rotates
   * like a workload's and trusts the same bundles.
   */
  x509Source(spiffeId: string): X509Source {
    this.assertOpen();
    this.checkOwnId(spiffeId);
    const w = this.newWorkload(spiffeId);
    w.local = new StaticX509Source(this.svidOf(w), this.bundleMap());
    this.workloads.set(`local:${++this.localCount}`, w);
    return w.local;
  }

  /** Trusts another trust domain's CAs (DER, one blob or several) and tells every open stream. */
  addFederatedBundle(trustDomain: string, certsDer: Buffer | Uint8Array | readonly (Buffer | Uint8Array)[]): void {
    const td = parseTrustDomain(trustDomain);
    if (td === this.trustDomain) throw new Error(`${td} is this issuer's own trust domain; its bundle is the CA`);
    const certs = toDerList(certsDer);
    if (certs.length === 0) throw new Error(`the bundle for ${td} has no certificate`);
    for (const c of certs) new X509Certificate(c);
    this.federated.set(td, certs);
    this.log.info({ federated: td, certs: certs.length }, 'federated bundle set');
    this.pushAll();
  }

  removeFederatedBundle(trustDomain: string): void {
    const td = parseTrustDomain(trustDomain);
    this.followers.get(td)?.close();
    this.followers.delete(td);
    if (this.federated.delete(td)) this.pushAll();
  }

  /**
   * Federates with a trust domain through its bundle endpoint, as a SPIRE server does: its bundle is
   * fetched now and at every refresh hint, and each change reaches the workloads as a federated bundle.
   * Resolves after the first attempt; true when it brought a bundle (a failure is retried in the background).
   */
  async followFederatedBundle(trustDomain: string, url: string, opts: BundleFollowerOptions = {}): Promise<boolean> {
    this.assertOpen();
    const td = parseTrustDomain(trustDomain);
    if (td === this.trustDomain) throw new Error(`${td} is this issuer's own trust domain`);
    this.followers.get(td)?.close();
    const f = new BundleEndpointFollower(td, url, { log: this.log, ...opts });
    this.followers.set(td, f);
    f.on('update', () => {
      if (this.followers.get(td) === f) this.addFederatedBundle(td, f.certs()!.map((c) => c.raw));
    });
    return f.start();
  }

  /** Publishes this trust domain's bundle for federated peers (SPIFFE bundle endpoint, https_web profile). */
  async serveBundleEndpoint(o: Omit<BundleEndpointServerOptions, 'bundle' | 'log'>): Promise<RunningBundleEndpoint> {
    this.assertOpen();
    const ep = await startBundleEndpoint({ ...o, bundle: () => this.bundle(), log: this.log });
    this.endpoints.add(ep);
    return { url: ep.url, close: async () => {
      this.endpoints.delete(ep);
      await ep.close();
    } };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const all = [...this.workloads.values()];
    this.workloads.clear();
    for (const w of all) this.dropWorkload(w);
    for (const f of this.followers.values()) f.close();
    this.followers.clear();
    await Promise.all([...all.map((w) => w.server?.close()), ...[...this.endpoints].map((e) => e.close())]);
    this.endpoints.clear();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('the SPIFFE issuer is closed');
  }

  private checkOwnId(spiffeId: string): void {
    const id = parseSpiffeId(spiffeId);
    if (id.trustDomain !== this.trustDomain) throw new Error(`${spiffeId} is not in this issuer's trust domain ${this.trustDomain}`);
  }

  private newWorkload(spiffeId: string): Workload {
    const w: Workload = { spiffeId, svid: issueSvid(this.ca, spiffeId, this.svidTtlMs), svidCalls: new Set(), bundleCalls: new Set() };
    this.scheduleRotation(w);
    return w;
  }

  private scheduleRotation(w: Workload): void {
    w.timer = setTimeout(() => {
      if (this.closed) return;
      w.svid = issueSvid(this.ca, w.spiffeId, this.svidTtlMs);
      this.log.debug({ spiffeId: w.spiffeId, notAfter: new Date(w.svid.notAfter).toISOString() }, 'SVID rotated');
      this.push(w);
      this.scheduleRotation(w);
    }, this.rotateAfterMs);
    // Timers alone must not keep a process alive; the sockets do that while they are served.
    w.timer.unref();
  }

  private dropWorkload(w: Workload): void {
    clearTimeout(w.timer);
    for (const c of [...w.svidCalls, ...w.bundleCalls]) c.end();
    w.svidCalls.clear();
    w.bundleCalls.clear();
  }

  private svidOf(w: Workload): Svid {
    return Svid.fromDer(w.spiffeId, w.svid.chainDer, w.svid.keyPkcs8Der);
  }

  private bundleMap(): Map<string, X509Certificate[]> {
    const m = new Map<string, X509Certificate[]>([[this.trustDomain, this.bundle()]]);
    for (const [td, certs] of this.federated) m.set(td, certs.map((c) => new X509Certificate(c)));
    return m;
  }

  private svidResponse(w: Workload): DeepPartial<X509SVIDResponse> {
    const federated: Record<string, Buffer> = {};
    for (const [td, certs] of this.federated) federated[trustDomainId(td)] = concatDer(certs);
    return {
      svids: [
        {
          spiffe_id: w.spiffeId,
          x509_svid: concatDer(w.svid.chainDer),
          x509_svid_key: w.svid.keyPkcs8Der,
          bundle: concatDer(this.bundleDer()),
        },
      ],
      federated_bundles: federated,
    };
  }

  private bundlesResponse(): DeepPartial<X509BundlesResponse> {
    const bundles: Record<string, Buffer> = { [trustDomainId(this.trustDomain)]: concatDer(this.bundleDer()) };
    for (const [td, certs] of this.federated) bundles[trustDomainId(td)] = concatDer(certs);
    return { bundles };
  }

  private push(w: Workload): void {
    for (const c of w.svidCalls) c.write(this.svidResponse(w));
    for (const c of w.bundleCalls) c.write(this.bundlesResponse());
    w.local?.set({ svid: this.svidOf(w), bundles: this.bundleMap() });
  }

  private pushAll(): void {
    for (const w of this.workloads.values()) this.push(w);
  }

  private handlers(w: Workload): grpc.UntypedServiceImplementation {
    const unimplemented = (what: string) => (_call: unknown, callback: grpc.sendUnaryData<unknown>) =>
      callback({ code: status.UNIMPLEMENTED, details: `the embedded SPIFFE issuer serves X.509-SVIDs only; ${what} is not implemented` });
    const refuse = (call: grpc.ServerWritableStream<unknown, unknown>): boolean => {
      const problem = headerProblem(call.metadata);
      if (problem) call.emit('error', { code: status.INVALID_ARGUMENT, details: problem });
      return problem !== undefined;
    };
    return {
      FetchX509SVID: (call: SvidCall) => {
        if (refuse(call)) return;
        w.svidCalls.add(call);
        call.on('cancelled', () => w.svidCalls.delete(call));
        call.on('close', () => w.svidCalls.delete(call));
        call.write(this.svidResponse(w));
      },
      FetchX509Bundles: (call: BundlesCall) => {
        if (refuse(call)) return;
        w.bundleCalls.add(call);
        call.on('cancelled', () => w.bundleCalls.delete(call));
        call.on('close', () => w.bundleCalls.delete(call));
        call.write(this.bundlesResponse());
      },
      FetchJWTSVID: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const problem = headerProblem(call.metadata);
        if (problem) return callback({ code: status.INVALID_ARGUMENT, details: problem });
        unimplemented('FetchJWTSVID (JWT-SVIDs)')(call, callback);
      },
      FetchJWTBundles: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        if (refuse(call)) return;
        call.emit('error', { code: status.UNIMPLEMENTED, details: 'the embedded SPIFFE issuer serves X.509-SVIDs only; FetchJWTBundles is not implemented' });
      },
      ValidateJWTSVID: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const problem = headerProblem(call.metadata);
        if (problem) return callback({ code: status.INVALID_ARGUMENT, details: problem });
        unimplemented('ValidateJWTSVID (JWT-SVIDs)')(call, callback);
      },
    };
  }
}
