/**
 * A stand-in Kubernetes API server for the CRD registry tests.
 *
 * Why a fake: there is no Kubernetes API server on the test machines — no cluster, no container runtime to run
 * kind or k3s, and kube-apiserver alone needs etcd plus certificates and minutes of setup. So this serves, over
 * HTTPS with a bearer token exactly as a cluster's API does, the slice of the API that @kubernetes/client-node's
 * CustomObjectsApi and Watch use for namespaced custom objects, with the API server's own semantics:
 *  - one resourceVersion counter for all writes (etcd's revision), on every object and every list;
 *  - list with limit/continue pages taken from one snapshot;
 *  - create (409 AlreadyExists), replace (resourceVersion required, 409 Conflict when stale), delete (optional
 *    preconditions.resourceVersion, 409 when it does not match), 404 NotFound, 422 Invalid for bad names — each
 *    answered with a Status object like the real one;
 *  - `?watch=true&resourceVersion=N` streams of ADDED/MODIFIED/DELETED JSON lines: history after N is replayed,
 *    then live changes follow; a version older than the kept history gets an ERROR event with a 410 Status;
 *    `timeoutSeconds` ends the stream as the API server does.
 * It starts from recorded objects (fixtures/*.yaml, `kubectl get -o yaml` output), and lets a test act like kubectl
 * (apply, delete), drop watch connections, or compact history to force a 410.
 */
import { randomBytes, randomUUID, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { buildCertificate, ExtKeyUsage, generateKeyPair, KeyUsageFlags } from '../../src/identity/cert-build.js';

const GROUP_PATH = '/apis/networkservicemesh.io/v1/namespaces/';
const KINDS: Record<string, { kind: string; listKind: string }> = {
  networkservices: { kind: 'NetworkService', listKind: 'NetworkServiceList' },
  networkserviceendpoints: { kind: 'NetworkServiceEndpoint', listKind: 'NetworkServiceEndpointList' },
};
/** The name the fake's certificate is issued to; the kubeconfig asks for it with tls-server-name. */
export const SERVER_NAME = 'kubernetes.default.svc';
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export interface StoredObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace: string;
    resourceVersion: string;
    uid: string;
    creationTimestamp: string;
    generation: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  spec?: unknown;
  [k: string]: unknown;
}

interface HistoryEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  plural: string;
  namespace: string;
  object: StoredObject;
}

interface OpenWatch {
  plural: string;
  namespace: string;
  res: ServerResponse;
  socket: Socket;
}

export interface RequestRecord {
  method: string;
  path: string;
  query: Record<string, string>;
  body?: unknown;
}

/** CA and serving certificate, made once per test file (key generation is the slow part). */
let tlsMaterial: { caPem: string; certPem: string; keyPem: string } | undefined;
function tls() {
  if (tlsMaterial) return tlsMaterial;
  const now = Date.now();
  const ca = generateKeyPair();
  const caDer = buildCertificate({
    subject: { commonName: 'fake-kubernetes-ca' },
    subjectPublicKey: ca.publicKey,
    signingKey: ca.privateKey,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * 3600_000),
    isCa: true,
    keyUsage: KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign,
  });
  const caCert = new X509Certificate(caDer);
  const leaf = generateKeyPair();
  const leafDer = buildCertificate({
    subject: { commonName: SERVER_NAME },
    issuer: caCert,
    subjectPublicKey: leaf.publicKey,
    signingKey: ca.privateKey,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * 3600_000),
    isCa: false,
    keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.keyAgreement,
    extKeyUsage: [ExtKeyUsage.serverAuth],
  });
  tlsMaterial = {
    caPem: caCert.toString(),
    certPem: new X509Certificate(leafDer).toString(),
    keyPem: leaf.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
  return tlsMaterial;
}

/** Reads a `kubectl get -o yaml` List (or a single object) from test/registry-k8s/fixtures. */
export function loadFixture(file: string): StoredObject[] {
  const doc = parseYaml(fs.readFileSync(path.join(import.meta.dirname, 'fixtures', file), 'utf8')) as { kind?: string; items?: StoredObject[] };
  return doc.kind === 'List' ? (doc.items ?? []) : [doc as unknown as StoredObject];
}

export class FakeApiServer {
  readonly token = randomBytes(16).toString('hex');
  readonly requests: RequestRecord[] = [];
  /** Resource versions up to this one are compacted away: watching from them answers 410. */
  private compactedRv = 0;
  private rv = 0;
  private readonly store = new Map<string, StoredObject>();
  private history: HistoryEvent[] = [];
  private readonly watches = new Set<OpenWatch>();
  private readonly sockets = new Set<Socket>();
  private readonly snapshots = new Map<string, { items: StoredObject[]; rv: number }>();
  /** When set, requests are accepted and never answered (a hung API server). */
  hang = false;
  /** When set, watch requests are answered with this HTTP status instead. */
  refuseWatchesWith: number | undefined;
  /** When set, watches ignore timeoutSeconds and stay open, silent: a peer that vanished without closing. */
  silentWatches = false;
  /** Watches refused with 410 because their resourceVersion was compacted away. */
  goneAnswers = 0;
  private server!: https.Server;
  url = '';
  kubeconfigPath = '';
  private dir = '';

  static async start(fixtures: StoredObject[] = []): Promise<FakeApiServer> {
    const s = new FakeApiServer();
    for (const obj of fixtures) s.seed(obj);
    await s.listen();
    return s;
  }

  private seed(obj: StoredObject): void {
    const plural = pluralOf(obj.kind);
    this.store.set(key(plural, obj.metadata.namespace, obj.metadata.name), structuredClone(obj));
    this.rv = Math.max(this.rv, Number(obj.metadata.resourceVersion));
    // Recorded objects are older than any watch a test opens: their history is already compacted.
    this.compactedRv = this.rv;
  }

  private async listen(): Promise<void> {
    const { certPem, keyPem, caPem } = tls();
    this.server = https.createServer({ cert: certPem, key: keyPem }, (req, res) => this.handle(req, res));
    this.server.on('secureConnection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    const port = (this.server.address() as AddressInfo).port;
    this.url = `https://127.0.0.1:${port}`;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-kube-'));
    this.kubeconfigPath = path.join(this.dir, 'kubeconfig');
    fs.writeFileSync(this.kubeconfigPath, this.kubeconfig(caPem, this.token), { mode: 0o600 });
  }

  /** A kubeconfig as `kubectl config view --raw` prints one: CA data, tls-server-name, a bearer token. */
  kubeconfig(caPem: string, token: string): string {
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: fake',
      '  cluster:',
      `    server: ${this.url}`,
      `    certificate-authority-data: ${Buffer.from(caPem).toString('base64')}`,
      `    tls-server-name: ${SERVER_NAME}`,
      'users:',
      '- name: nsmd',
      '  user:',
      `    token: ${token}`,
      'contexts:',
      '- name: fake',
      '  context:',
      '    cluster: fake',
      '    user: nsmd',
      '    namespace: nsm-system',
      'current-context: fake',
      '',
    ].join('\n');
  }

  /** A kubeconfig with a token the server does not accept. */
  writeKubeconfigWithToken(token: string): string {
    const file = path.join(this.dir, `kubeconfig-${randomBytes(4).toString('hex')}`);
    fs.writeFileSync(file, this.kubeconfig(tls().caPem, token), { mode: 0o600 });
    return file;
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  objects(plural: string, namespace = 'nsm-system'): StoredObject[] {
    return [...this.store.values()]
      .filter((o) => pluralOf(o.kind) === plural && o.metadata.namespace === namespace)
      .map((o) => structuredClone(o));
  }

  object(plural: string, name: string, namespace = 'nsm-system'): StoredObject | undefined {
    const o = this.store.get(key(plural, namespace, name));
    return o && structuredClone(o);
  }

  /** `kubectl apply`: create, or update whatever is there (kubectl's apply does not send a stale version). */
  apply(obj: { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; [k: string]: unknown }; spec?: unknown }): StoredObject {
    const plural = pluralOf(obj.kind);
    const namespace = obj.metadata.namespace ?? 'nsm-system';
    const current = this.store.get(key(plural, namespace, obj.metadata.name));
    return current
      ? this.update(plural, namespace, current, { ...obj, metadata: { ...obj.metadata, namespace } } as StoredObject)
      : this.create(plural, namespace, obj as StoredObject);
  }

  /** `kubectl delete`. */
  remove(plural: string, name: string, namespace = 'nsm-system'): boolean {
    const current = this.store.get(key(plural, namespace, name));
    if (!current) return false;
    this.destroy(plural, namespace, current);
    return true;
  }

  /** Closes every open watch connection abruptly, as a restarting API server or a broken network does. */
  dropWatches(): number {
    const n = this.watches.size;
    for (const w of this.watches) w.socket.destroy();
    this.watches.clear();
    return n;
  }

  /** etcd compaction: watches can no longer resume from any version before now. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history = [];
  }

  /** Ends every open watch with the in-stream 410 the API server sends when a watch falls too far behind. */
  expireWatches(): number {
    const n = this.watches.size;
    for (const w of this.watches) {
      this.writeEvent(w, { type: 'ERROR', object: status(410, 'Expired', `too old resource version: ${this.rv - 1} (${this.rv})`) });
      w.res.end();
    }
    this.watches.clear();
    return n;
  }

  get openWatches(): number {
    return this.watches.size;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', this.url);
    const query = Object.fromEntries(url.searchParams);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        this.requests.push({ method: req.method ?? '', path: url.pathname, query });
        send(res, 400, status(400, 'BadRequest', 'the request body is not JSON'));
        return;
      }
      this.requests.push({ method: req.method ?? '', path: url.pathname, query, ...(body === undefined ? {} : { body }) });
      if (this.hang) return;
      if (req.headers.authorization !== `Bearer ${this.token}`) {
        send(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
        return;
      }
      this.route(req.method ?? 'GET', url.pathname, query, body, res);
    });
  }

  private route(method: string, pathname: string, query: Record<string, string>, body: unknown, res: ServerResponse): void {
    const notFound = () => send(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
    if (!pathname.startsWith(GROUP_PATH)) return notFound();
    const [namespace, plural, name, ...rest] = pathname.slice(GROUP_PATH.length).split('/').map(decodeURIComponent);
    if (!namespace || !plural || !KINDS[plural] || rest.length > 0) return notFound();
    if (name === undefined) {
      if (method === 'GET' && query.watch === 'true') return this.watch(plural, namespace, query, res);
      if (method === 'GET') return this.list(plural, namespace, query, res);
      if (method === 'POST') return this.handleCreate(plural, namespace, body, res);
      return send(res, 405, status(405, 'MethodNotAllowed', `${method} is not supported on a collection`));
    }
    const current = this.store.get(key(plural, namespace, name));
    const missing = () => send(res, 404, notFoundStatus(plural, name));
    if (method === 'GET') return current ? send(res, 200, current) : missing();
    if (method === 'PUT') return this.handleReplace(plural, namespace, name, current, body, res);
    if (method === 'DELETE') {
      if (!current) return missing();
      const want = (body as { preconditions?: { resourceVersion?: string } } | undefined)?.preconditions?.resourceVersion;
      if (want !== undefined && want !== current.metadata.resourceVersion) {
        const msg = `Operation cannot be fulfilled on ${plural}.networkservicemesh.io "${name}": Precondition failed: ResourceVersion in precondition: ${want}, ResourceVersion in object meta: ${current.metadata.resourceVersion}`;
        return send(res, 409, status(409, 'Conflict', msg, { name, group: 'networkservicemesh.io', kind: plural }));
      }
      return send(res, 200, this.destroy(plural, namespace, current));
    }
    return send(res, 405, status(405, 'MethodNotAllowed', `${method} is not supported on an object`));
  }

  private list(plural: string, namespace: string, query: Record<string, string>, res: ServerResponse): void {
    let snapshot: { items: StoredObject[]; rv: number } | undefined;
    let offset = 0;
    if (query.continue) {
      const [id, from] = Buffer.from(query.continue, 'base64').toString().split(':');
      snapshot = this.snapshots.get(id ?? '');
      offset = Number(from);
      if (!snapshot) return send(res, 410, status(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result.'));
    } else {
      const items = this.objects(plural, namespace).sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
      snapshot = { items, rv: this.rv };
    }
    const limit = query.limit ? Number(query.limit) : Infinity;
    const page = snapshot.items.slice(offset, offset + limit);
    const metadata: Record<string, string> = { resourceVersion: String(snapshot.rv) };
    if (offset + page.length < snapshot.items.length) {
      const id = randomBytes(6).toString('hex');
      this.snapshots.set(id, snapshot);
      metadata.continue = Buffer.from(`${id}:${offset + page.length}`).toString('base64');
    }
    send(res, 200, { apiVersion: 'networkservicemesh.io/v1', kind: KINDS[plural]!.listKind, metadata, items: page });
  }

  private watch(plural: string, namespace: string, query: Record<string, string>, res: ServerResponse): void {
    if (this.refuseWatchesWith !== undefined) {
      const code = this.refuseWatchesWith;
      if (code === 410) this.goneAnswers++;
      send(res, code, status(code, code === 410 ? 'Gone' : 'ServiceUnavailable', 'watch refused by the test'));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: OpenWatch = { plural, namespace, res, socket: res.socket as Socket };
    const from = query.resourceVersion;
    if (from && from !== '0' && Number(from) < this.compactedRv) {
      this.goneAnswers++;
      this.writeEvent(w, { type: 'ERROR', object: status(410, 'Expired', `too old resource version: ${from} (${this.compactedRv})`) });
      res.end();
      return;
    }
    if (!from || from === '0') {
      for (const object of this.objects(plural, namespace)) this.writeEvent(w, { type: 'ADDED', object });
    } else {
      for (const e of this.history) {
        if (e.rv > Number(from) && e.plural === plural && e.namespace === namespace) this.writeEvent(w, { type: e.type, object: e.object });
      }
    }
    this.watches.add(w);
    const timeout = Number(query.timeoutSeconds);
    const timer = Number.isFinite(timeout) && timeout > 0 && !this.silentWatches ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on('close', () => {
      clearTimeout(timer);
      this.watches.delete(w);
    });
  }

  private handleCreate(plural: string, namespace: string, body: unknown, res: ServerResponse): void {
    const obj = body as StoredObject | undefined;
    const name = obj?.metadata?.name;
    if (!obj || typeof name !== 'string' || obj.kind !== KINDS[plural]!.kind) {
      return send(res, 400, status(400, 'BadRequest', `the body is not a ${KINDS[plural]!.kind}`));
    }
    if (!(name.length <= 253 && DNS_SUBDOMAIN.test(name))) {
      const msg = `${KINDS[plural]!.kind}.networkservicemesh.io "${name}" is invalid: metadata.name: Invalid value: "${name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`;
      return send(res, 422, status(422, 'Invalid', msg));
    }
    if (this.store.has(key(plural, namespace, name))) {
      return send(res, 409, status(409, 'AlreadyExists', `${plural}.networkservicemesh.io "${name}" already exists`, { name, group: 'networkservicemesh.io', kind: plural }));
    }
    send(res, 201, this.create(plural, namespace, obj));
  }

  private handleReplace(plural: string, namespace: string, name: string, current: StoredObject | undefined, body: unknown, res: ServerResponse): void {
    const obj = body as StoredObject | undefined;
    if (!obj?.metadata || obj.metadata.name !== name) {
      return send(res, 400, status(400, 'BadRequest', 'the name of the object does not match the name on the URL'));
    }
    if (!current) return send(res, 404, notFoundStatus(plural, name));
    if (!obj.metadata.resourceVersion) {
      const msg = `${KINDS[plural]!.kind}.networkservicemesh.io "${name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update`;
      return send(res, 422, status(422, 'Invalid', msg));
    }
    if (obj.metadata.resourceVersion !== current.metadata.resourceVersion) {
      const msg = `Operation cannot be fulfilled on ${plural}.networkservicemesh.io "${name}": the object has been modified; please apply your changes to the latest version and try again`;
      return send(res, 409, status(409, 'Conflict', msg, { name, group: 'networkservicemesh.io', kind: plural }));
    }
    send(res, 200, this.update(plural, namespace, current, obj));
  }

  private create(plural: string, namespace: string, obj: StoredObject): StoredObject {
    const stored: StoredObject = {
      ...structuredClone(obj),
      metadata: {
        ...structuredClone(obj.metadata),
        namespace,
        uid: randomUUID(),
        resourceVersion: String(++this.rv),
        creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
        generation: 1,
      },
    };
    this.commit('ADDED', plural, namespace, stored);
    return structuredClone(stored);
  }

  private update(plural: string, namespace: string, current: StoredObject, obj: StoredObject): StoredObject {
    const specChanged = JSON.stringify(obj.spec) !== JSON.stringify(current.spec);
    const stored: StoredObject = {
      ...structuredClone(obj),
      metadata: {
        ...structuredClone(obj.metadata),
        namespace,
        uid: current.metadata.uid,
        creationTimestamp: current.metadata.creationTimestamp,
        resourceVersion: String(++this.rv),
        generation: current.metadata.generation + (specChanged ? 1 : 0),
      },
    };
    this.commit('MODIFIED', plural, namespace, stored);
    return structuredClone(stored);
  }

  private destroy(plural: string, namespace: string, current: StoredObject): StoredObject {
    this.store.delete(key(plural, namespace, current.metadata.name));
    const gone = { ...structuredClone(current), metadata: { ...structuredClone(current.metadata), resourceVersion: String(++this.rv) } };
    this.history.push({ rv: this.rv, type: 'DELETED', plural, namespace, object: gone });
    this.publish(this.history[this.history.length - 1]!);
    return gone;
  }

  private commit(type: 'ADDED' | 'MODIFIED', plural: string, namespace: string, stored: StoredObject): void {
    this.store.set(key(plural, namespace, stored.metadata.name), stored);
    const event: HistoryEvent = { rv: this.rv, type, plural, namespace, object: structuredClone(stored) };
    this.history.push(event);
    this.publish(event);
  }

  private publish(e: HistoryEvent): void {
    for (const w of this.watches) {
      if (w.plural === e.plural && w.namespace === e.namespace) this.writeEvent(w, { type: e.type, object: e.object });
    }
  }

  private writeEvent(w: OpenWatch, event: { type: string; object: unknown }): void {
    w.res.write(`${JSON.stringify(event)}\n`);
  }
}

function key(plural: string, namespace: string, name: string): string {
  return `${plural}/${namespace}/${name}`;
}

function pluralOf(kind: string): string {
  const plural = Object.entries(KINDS).find(([, k]) => k.kind === kind)?.[0];
  if (!plural) throw new Error(`the fake API server serves no kind ${kind}`);
  return plural;
}

function status(code: number, reason: string, message: string, details?: Record<string, string>) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

function notFoundStatus(plural: string, name: string) {
  return status(404, 'NotFound', `${plural}.networkservicemesh.io "${name}" not found`, { name, group: 'networkservicemesh.io', kind: plural });
}

function send(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
