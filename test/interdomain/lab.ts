/**
 * Several domains on one machine: each domain's nsmd(s) in node namespaces of one underlay (test/helpers/nodes),
 * each domain with its own trust domain — an in-process embedded issuer, or an nsm-issuer process on a plain host
 * — and DNS servers (Debian dnsmasq, and faulty-dns.mjs) inside the underlay namespace, where every node reaches
 * them. Every process started here is stopped by stopAll(), which tests call in afterAll before the underlay goes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { ApiClient } from '../../src/api/grpc.js';
import { EmbeddedIssuer } from '../../src/identity/issuer.js';
import { sourceTransport, type Transport } from '../../src/identity/transport.js';
import { connectX509Source } from '../../src/identity/workload-client.js';
import { FatalError, waitFor } from '../../src/util/wait-for.js';
import { BIN } from '../helpers/mesh.js';
import type { Netns } from '../helpers/netns.js';
import { tag } from '../helpers/netns.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
export const ISSUER_BIN = path.join(ROOT, 'dist/src/cli/nsm-issuer.js');
export const FAULTY_DNS = path.join(import.meta.dirname, 'faulty-dns.mjs');

export const dir = fs.mkdtempSync(path.join(os.tmpdir(), `nsmid-${tag}-`));

interface Proc {
  label: string;
  proc: ResultPromise;
  tail(): string;
  exited(): boolean;
  stop(): Promise<void>;
}

const procs = new Set<Proc>();

/** A process inside `ns` (ip netns exec execs, so the pid is the process itself); stderr kept for messages. */
export function startIn(ns: Netns, cmd: string[], env: Record<string, string>, label: string): Proc {
  const proc = execa('ip', ['netns', 'exec', ns.name, ...cmd], { env, reject: false, stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' });
  let output = '';
  let done = false;
  const keep = (d: Buffer) => {
    output = (output + d.toString()).slice(-8000);
  };
  proc.stderr?.on('data', keep);
  proc.stdout?.on('data', keep);
  void proc.finally(() => (done = true));
  const p: Proc = {
    label,
    proc,
    tail: () => output,
    exited: () => done,
    async stop() {
      if (done) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await proc;
      clearTimeout(timer);
      procs.delete(p);
    },
  };
  procs.add(p);
  return p;
}

export async function stopAll(): Promise<void> {
  await Promise.allSettled([...procs].map((p) => p.stop()));
}

process.once('exit', () => {
  for (const p of procs) p.proc.kill('SIGKILL');
});

/** Waits for `text` in a process's output, failing at once if it exits. */
export async function outputShows(p: Proc, text: string | RegExp, timeoutMs = 15_000): Promise<void> {
  await waitFor(`${p.label}: "${text}"`, () => {
    const out = p.tail();
    if (typeof text === 'string' ? out.includes(text) : text.test(out)) return true;
    if (p.exited()) throw new FatalError(`${p.label} exited:\n${out}`);
    return false;
  }, timeoutMs);
}

// ----------------------------------------------------------------------------------------------- DNS

export interface Dnsmasq {
  server: string;
  /** Restarts dnsmasq with new records on the same address (SIGHUP does not reload srv-host lines). */
  reload(records: string[]): Promise<void>;
  stop(): Promise<void>;
}

/** dnsmasq inside `ns` on ip:53, authoritative for .test (unknown names are NXDOMAIN), TTL `ttl` seconds. */
export async function startDnsmasq(ns: Netns, ip: string, records: string[], ttl: number): Promise<Dnsmasq> {
  const conf = path.join(dir, 'dnsmasq.conf');
  let current: Proc | undefined;
  const start = async (lines: string[]) => {
    fs.writeFileSync(conf, ['port=53', `listen-address=${ip}`, 'bind-interfaces', 'no-resolv', 'no-hosts', 'local=/test/', `local-ttl=${ttl}`, ...lines, ''].join('\n'));
    current = startIn(ns, ['dnsmasq', '--keep-in-foreground', `--conf-file=${conf}`, `--pid-file=${path.join(dir, 'dnsmasq.pid')}`, '--user=root', '--log-facility=-'], {}, 'dnsmasq');
    // dnsmasq binds its sockets before it says it started.
    await outputShows(current, 'started');
  };
  await start(records);
  return {
    server: `${ip}:53`,
    async reload(lines) {
      await current?.stop();
      await start(lines);
    },
    stop: async () => current?.stop(),
  };
}

export async function startFaultyDns(ns: Netns, ip: string, port: number, targetIp: string): Promise<string> {
  const p = startIn(ns, ['node', FAULTY_DNS, ip, String(port), targetIp], {}, 'faulty-dns');
  await outputShows(p, 'ready');
  return `${ip}:${port}`;
}

// ------------------------------------------------------------------------------------------ identity

export interface Domain {
  trustDomain: string;
  /** SPIFFE_ENDPOINT_SOCKET for an identity of this domain. */
  socket(spiffeId: string): Promise<string>;
  /** mTLS for the test process itself, as an identity of this domain. */
  transport(spiffeId: string): Promise<Transport>;
  bundlePem(): string;
  admin: string;
  nsmdId(name: string): string;
  podId(name: string): string;
  close(): Promise<void>;
}

const ids = (td: string) => ({
  admin: `spiffe://${td}/nsmesh/admin/test`,
  nsmdId: (name: string) => `spiffe://${td}/nsmesh/nsmd/${name}`,
  podId: (name: string) => `spiffe://${td}/ns/default/pod/${name}`,
});

const sockFile = (td: string, id: string) => path.join(dir, `${td}-${id.split('/').slice(3).join('-')}.sock`);

/** A trust domain served by an embedded issuer in this process; `federate` adds other domains' bundles. */
export async function inProcessDomain(trustDomain: string): Promise<Domain & { issuer: EmbeddedIssuer }> {
  const issuer = await EmbeddedIssuer.start({ trustDomain, stateDir: path.join(dir, `${trustDomain}-ca`) });
  const sockets = new Map<string, string>();
  return {
    trustDomain,
    issuer,
    ...ids(trustDomain),
    async socket(spiffeId) {
      let s = sockets.get(spiffeId);
      if (!s) sockets.set(spiffeId, (s = await issuer.addWorkload(spiffeId, sockFile(trustDomain, spiffeId))));
      return s;
    },
    async transport(spiffeId) {
      return sourceTransport(issuer.x509Source(spiffeId));
    },
    bundlePem: () => issuer.bundle().map((c) => c.toString()).join(''),
    close: () => issuer.close(),
  };
}

/**
 * A trust domain served by an nsm-issuer process inside `ns` — a plain host's SPIFFE issuer — with every
 * identity declared up front, its bundle published on a bundle endpoint (https_web, certificate given),
 * and the other trust domains' bundles it federates with (`TD=/path/bundle.pem` or `TD=https://…`).
 */
export async function issuerProcessDomain(
  ns: Netns,
  trustDomain: string,
  o: { identities: string[]; bundleEndpoint: string; certFile: string; keyFile: string; federatesWith: string[]; env?: Record<string, string> },
): Promise<Domain & { stop(): Promise<void> }> {
  const names = ids(trustDomain);
  const all = [...new Set([names.admin, ...o.identities])];
  const bundleOut = path.join(dir, `${trustDomain}-bundle.pem`);
  const p = startIn(
    ns,
    ['node', ISSUER_BIN],
    {
      NSM_TRUST_DOMAIN: trustDomain,
      NSM_ISSUER_STATE_DIR: path.join(dir, `${trustDomain}-issuer`),
      NSM_WORKLOADS: all.map((id) => `${id}=${sockFile(trustDomain, id)}`).join(','),
      NSM_BUNDLE_OUT: bundleOut,
      NSM_BUNDLE_ENDPOINT: o.bundleEndpoint,
      NSM_BUNDLE_ENDPOINT_CERT: o.certFile,
      NSM_BUNDLE_ENDPOINT_KEY: o.keyFile,
      NSM_FEDERATES_WITH: o.federatesWith.join(','),
      NSM_LOG_LEVEL: 'INFO',
      ...o.env,
    },
    `nsm-issuer ${trustDomain}`,
  );
  await outputShows(p, 'serving the trust bundle for federation');
  const transports: Transport[] = [];
  const socket = async (spiffeId: string) => {
    if (!all.includes(spiffeId)) throw new Error(`${spiffeId} was not declared to the ${trustDomain} issuer`);
    return `unix://${sockFile(trustDomain, spiffeId)}`;
  };
  return {
    trustDomain,
    ...names,
    socket,
    async transport(spiffeId) {
      const t = sourceTransport(await connectX509Source(await socket(spiffeId), { timeoutMs: 5000 }));
      transports.push(t);
      return t;
    },
    bundlePem: () => fs.readFileSync(bundleOut, 'utf8'),
    stop: () => p.stop(),
    async close() {
      for (const t of transports) t.close();
      await p.stop();
    },
  };
}

// ------------------------------------------------------------------------------------ nsmd, endpoints

export interface NsmdHandle {
  name: string;
  url: string;
  dir: string;
  remoteUrl: string;
  proc: Proc;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** nsmd from dist/ in a node namespace, as `name` of `domain`; resolves once it serves its local socket. */
export async function startNsmd(
  node: Netns & { ip: string; index: number },
  domain: Domain,
  name: string,
  probe: Transport,
  env: Record<string, string> = {},
): Promise<NsmdHandle> {
  const d = fs.mkdtempSync(path.join(dir, `${name}-`));
  const url = `unix://${d}/nsm.io.sock`;
  const remoteUrl = `tcp://${node.ip}:5001`;
  const fullEnv = {
    SPIFFE_ENDPOINT_SOCKET: await domain.socket(domain.nsmdId(name)),
    NSM_NAME: name,
    NSM_LISTEN_ON: url,
    NSM_STATE_DIR: path.join(d, 'state'),
    NODE_NAME: name,
    NSM_REMOTE_LISTEN_ON: remoteUrl,
    NSM_LOG_LEVEL: 'WARN',
    ...env,
  };
  const h: NsmdHandle = {
    name,
    url,
    dir: d,
    remoteUrl,
    proc: undefined as unknown as Proc,
    async restart() {
      h.proc = startIn(node, ['node', BIN.nsmd], fullEnv, `nsmd ${name}`);
      const c = new ApiClient('networkservice.NetworkService', url, probe);
      try {
        await waitFor(`nsmd ${name} to serve its socket`, async () => {
          if (h.proc.exited()) throw new FatalError(`nsmd ${name} exited:\n${h.proc.tail()}`);
          if (!fs.existsSync(`${d}/nsm.io.sock`)) return false;
          await c.waitForReady(300);
          return true;
        }, 20_000);
      } finally {
        c.close();
      }
    },
    stop: () => h.proc.stop(),
  };
  await h.restart();
  return h;
}

/** nse-icmp-responder in `ns`, registered through `nsmd`; resolves once nsmd's registry lists it. */
export async function startEndpoint(
  ns: Netns,
  domain: Domain,
  nsmd: NsmdHandle,
  o: { name: string; services: string[]; cidr: string; probe: Transport; labels?: string },
): Promise<Proc> {
  const p = startIn(
    ns,
    ['node', BIN.icmpResponder],
    {
      SPIFFE_ENDPOINT_SOCKET: await domain.socket(domain.podId(o.name)),
      NSM_NAME: o.name,
      NSM_CONNECT_TO: nsmd.url,
      NSM_SERVICE_NAMES: o.services.join(','),
      NSM_CIDR_PREFIX: o.cidr,
      NSM_LABELS: o.labels ?? '',
      NSM_LOG_LEVEL: 'WARN',
    },
    `endpoint ${o.name}`,
  );
  const reg = new ApiClient('registry.NetworkServiceEndpointRegistry', nsmd.url, o.probe);
  try {
    await waitFor(`endpoint ${o.name} to register`, async () => {
      if (p.exited()) throw new FatalError(`${o.name} exited:\n${p.tail()}`);
      return (await reg.collect('Find', { network_service_endpoint: { name: o.name } }, { timeoutMs: 1000 })).length > 0;
    }, 20_000);
  } finally {
    reg.close();
  }
  return p;
}
