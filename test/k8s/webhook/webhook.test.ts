/**
 * nsm-webhook over real HTTPS (a CA and a server certificate made here; the client trusts that CA only and calls
 * the Service DNS name, as kube-apiserver does) with AdmissionReview v1 requests shaped like kube-apiserver's.
 * Each returned JSON Patch is applied to the pod and the result validated against the Kubernetes Pod schema
 * (kubernetes-models) and the API server's cross-field rules the schema cannot express.
 *
 * There is no Kubernetes API server on this machine, so namespaces (their labels and annotations) come from a fixed
 * map through the same NamespaceLookup interface the production client-node lookup implements; that lookup is
 * exercised against a test-served API endpoint in cli.test.ts.
 */
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { Pod as PodModel } from 'kubernetes-models/v1';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACCEPTED_FORMS, parseNsUrlList } from '../../../src/client/nsurl.js';
import { exclusionConfig, injectionConfig, webhookSettings } from '../../../src/k8s/webhook/config.js';
import { fixedNamespaces, type NamespaceInfo } from '../../../src/k8s/webhook/namespaces.js';
import { Mutator } from '../../../src/k8s/webhook/review.js';
import { startWebhookServer, type RunningWebhook } from '../../../src/k8s/webhook/server.js';
import { silentLogger } from '../../../src/util/log.js';
import { parseSettings } from '../../../src/util/settings.js';
import { waitFor } from '../../helpers/wait.js';
import {
  admissionReview,
  applyJsonPatch,
  decodePatch,
  httpsRequest,
  loadPod,
  review,
  WEBHOOK_DNS_NAME,
  type Json,
  type PatchOp,
  type Pod,
} from './helpers.js';
import { createTestCa, issueServerPair, type TestCa } from './tls.js';

const NAMESPACES: Record<string, Partial<NamespaceInfo>> = {
  default: { labels: { 'kubernetes.io/metadata.name': 'default' } },
  finance: {
    labels: { 'kubernetes.io/metadata.name': 'finance' },
    annotations: { 'ns.networkservicemesh.io': 'secure-intranet-connectivity?app=finance-default' },
  },
  legacy: {
    labels: { 'kubernetes.io/metadata.name': 'legacy', 'nsmesh.io/inject': 'disabled' },
    annotations: { 'ns.networkservicemesh.io': 'icmp-responder' },
  },
  'kube-system': { labels: { 'kubernetes.io/metadata.name': 'kube-system' } },
  'broken-ns': { annotations: { 'networkservicemesh.io': 'vfio://icmp-responder/nsm-1' } },
};

const BASE_ENV = {
  NSM_WEBHOOK_EXCLUDE_NAMESPACE_SELECTOR: 'nsmesh.io/inject=disabled',
  NSM_WEBHOOK_POD_LABELS: 'spiffe.io/spiffe-id:true',
};

let dir: string;
let ca: TestCa;
let certFile: string;
let keyFile: string;
const servers: RunningWebhook[] = [];

function writeAtomically(file: string, text: string): void {
  fs.writeFileSync(`${file}.tmp`, text);
  fs.renameSync(`${file}.tmp`, file);
}

async function startWith(env: Record<string, string>, files = { certFile, keyFile }, reloadIntervalMs = 0): Promise<RunningWebhook> {
  const v = parseSettings(webhookSettings, [], { ...BASE_ENV, ...env }).values;
  const mutator = new Mutator({
    injection: injectionConfig(v),
    exclusion: exclusionConfig(v),
    namespaces: fixedNamespaces(NAMESPACES),
    log: silentLogger,
  });
  const s = await startWebhookServer({ listenOn: 'tcp://127.0.0.1:0', ...files, reloadIntervalMs, mutator, log: silentLogger });
  servers.push(s);
  return s;
}

let plain: RunningWebhook;
let withSidecar: RunningWebhook;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsmwh-'));
  ca = createTestCa();
  const pair = issueServerPair(ca, [WEBHOOK_DNS_NAME, '127.0.0.1']);
  certFile = path.join(dir, 'tls.crt');
  keyFile = path.join(dir, 'tls.key');
  fs.writeFileSync(certFile, pair.certPem);
  fs.writeFileSync(keyFile, pair.keyPem, { mode: 0o600 });
  plain = await startWith({});
  withSidecar = await startWith({
    NSM_WEBHOOK_SIDECAR: 'true',
    NSM_WEBHOOK_SPIFFE_CSI_DRIVER: 'csi.spiffe.io',
    NSM_WEBHOOK_CPU_LIMIT: '500m',
  });
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  fs.rmSync(dir, { recursive: true, force: true });
});

type Container = { name: string; env?: { name: string; value?: string; valueFrom?: unknown }[]; [k: string]: unknown };
const initContainers = (p: Pod) => (p.spec.initContainers ?? []) as unknown as Container[];
const envOf = (c: Container) => Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? e.valueFrom]));

/**
 * What kube-apiserver's ValidatePod checks beyond the OpenAPI schema, for the fields the webhook touches: names
 * unique among all containers and among volumes, every mount naming a volume, mount paths unique per container.
 */
function checkApiServerRules(pod: Pod): void {
  const spec = pod.spec as unknown as { containers: Container[]; initContainers?: Container[]; volumes?: { name: string }[] };
  const all = [...(spec.initContainers ?? []), ...spec.containers];
  expect(new Set(all.map((c) => c.name)).size, 'container names are unique').toBe(all.length);
  const volumes = new Set((spec.volumes ?? []).map((v) => v.name));
  expect(volumes.size, 'volume names are unique').toBe((spec.volumes ?? []).length);
  for (const c of all) {
    const mounts = (c.volumeMounts ?? []) as { name: string; mountPath: string }[];
    for (const m of mounts) expect(volumes.has(m.name), `${c.name} mounts ${m.name}, which exists`).toBe(true);
    expect(new Set(mounts.map((m) => m.mountPath)).size, `${c.name} mount paths are unique`).toBe(mounts.length);
  }
}

/** Reviews `pod`, applies the patch as the API server would and validates the result; returns both. */
async function inject(server: RunningWebhook, pod: Pod, namespace: string): Promise<{ patched: Pod; ops: PatchOp[] }> {
  const req = admissionReview(pod, namespace);
  const { response, raw } = await review(server.url, ca.certPem, req);
  expect(raw.apiVersion).toBe('admission.k8s.io/v1');
  expect(raw.kind).toBe('AdmissionReview');
  expect(response.uid).toBe((req.request as { uid: string }).uid);
  expect(response.allowed, JSON.stringify(response.status)).toBe(true);
  const ops = decodePatch(response);
  const patched = applyJsonPatch(pod, ops);
  new PodModel(patched as never).validate();
  checkApiServerRules(patched);
  return { patched, ops };
}

async function expectUntouched(server: RunningWebhook, pod: Pod, namespace: string, operation: 'CREATE' | 'UPDATE' = 'CREATE'): Promise<void> {
  const { response } = await review(server.url, ca.certPem, admissionReview(pod, namespace, operation));
  expect(response.allowed).toBe(true);
  expect(response.patch).toBeUndefined();
  expect(response.patchType).toBeUndefined();
}

async function expectDenied(pod: Pod, namespace: string): Promise<string> {
  const { response } = await review(plain.url, ca.certPem, admissionReview(pod, namespace));
  expect(response.allowed).toBe(false);
  expect(response.patch).toBeUndefined();
  expect(response.status?.code).toBe(400);
  expect(response.status?.reason).toBe('BadRequest');
  return response.status!.message;
}

function withAnnotations(pod: Pod, annotations: Record<string, string> | undefined): Pod {
  const p = structuredClone(pod);
  if (annotations === undefined) delete p.metadata.annotations;
  else p.metadata.annotations = annotations;
  return p;
}

describe('injection', () => {
  it('injects nsc first into a Deployment pod annotated ns.networkservicemesh.io, appending volumes and keeping what was there', async () => {
    const pod = loadPod('deployment-pod.json');
    const { patched, ops } = await inject(plain, pod, 'finance');
    // The pod has annotations, labels, init containers and volumes: entries are added to each, with "/" in keys escaped.
    expect(ops.map((o) => o.path)).toEqual([
      '/metadata/annotations/nsmesh.io~1injected',
      '/metadata/labels/spiffe.io~1spiffe-id',
      '/spec/initContainers/0',
      '/spec/volumes/-',
      '/spec/volumes/-',
    ]);
    expect(ops.every((o) => o.op === 'add')).toBe(true);
    expect(patched.metadata.annotations).toEqual({ ...(pod.metadata.annotations as object), 'nsmesh.io/injected': 'true' });
    expect(patched.metadata.labels).toEqual({ ...(pod.metadata.labels as object), 'spiffe.io/spiffe-id': 'true' });
    expect(patched.spec.containers).toEqual(pod.spec.containers);
    expect(initContainers(patched).map((c) => c.name)).toEqual(['nsc', 'fetch-config']);

    const nsc = initContainers(patched)[0]!;
    expect(nsc).toMatchObject({ image: 'ghcr.io/nsmesh/nsmesh:0.1.0', command: ['nsc'], imagePullPolicy: 'IfNotPresent' });
    expect(nsc.args).toBeUndefined();
    expect(envOf(nsc)).toEqual({
      NSM_NETWORK_SERVICES: 'secure-intranet-connectivity/nsm-1?app=finance',
      NSM_NAME: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } },
      POD_NAME: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } },
      NODE_NAME: { fieldRef: { apiVersion: 'v1', fieldPath: 'spec.nodeName' } },
      NSM_CONNECT_TO: 'unix:///var/lib/networkservicemesh/nsm.io.sock',
      SPIFFE_ENDPOINT_SOCKET: 'unix:///run/spire/sockets/agent.sock',
    });
    // What nsc will do with it.
    expect(parseNsUrlList(envOf(nsc).NSM_NETWORK_SERVICES as string)).toEqual([
      { mechanism: 'KERNEL', service: 'secure-intranet-connectivity', ifname: 'nsm-1', labels: { app: 'finance' } },
    ]);
    expect(nsc.volumeMounts).toEqual([
      { name: 'nsmesh-nsm-socket', mountPath: '/var/lib/networkservicemesh', readOnly: true },
      { name: 'nsmesh-spiffe-socket', mountPath: '/run/spire/sockets', readOnly: true },
    ]);
    expect(nsc.resources).toEqual({ requests: { cpu: '50m', memory: '96Mi' }, limits: { memory: '192Mi' } });
    expect(nsc.securityContext).toEqual({
      runAsUser: 65532,
      runAsNonRoot: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      readOnlyRootFilesystem: true,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    const volumes = patched.spec.volumes as Json[];
    expect(volumes.slice(0, 2)).toEqual(pod.spec.volumes);
    expect(volumes.slice(2)).toEqual([
      { name: 'nsmesh-nsm-socket', hostPath: { path: '/var/lib/networkservicemesh', type: 'Directory' } },
      { name: 'nsmesh-spiffe-socket', hostPath: { path: '/run/spire/sockets', type: 'Directory' } },
    ]);
  });

  it('adds whole lists and maps to a pod that has no init containers, volumes or labels (upstream networkservicemesh.io form)', async () => {
    const pod = loadPod('bare-pod.json');
    expect(pod.spec.initContainers).toBeUndefined();
    expect(pod.spec.volumes).toBeUndefined();
    expect(pod.metadata.labels).toBeUndefined();
    const { patched, ops } = await inject(plain, pod, 'default');
    expect(ops.map((o) => o.path)).toEqual(['/metadata/annotations/nsmesh.io~1injected', '/metadata/labels', '/spec/initContainers', '/spec/volumes']);
    expect(patched.metadata.labels).toEqual({ 'spiffe.io/spiffe-id': 'true' });
    expect(initContainers(patched).map((c) => c.name)).toEqual(['nsc']);
    expect(envOf(initContainers(patched)[0]!).NSM_NETWORK_SERVICES).toBe('kernel://icmp-responder/nsm-1');
    expect((patched.spec.volumes as { name: string }[]).map((v) => v.name)).toEqual(['nsmesh-nsm-socket', 'nsmesh-spiffe-socket']);
  });

  it('creates the annotation map of a pod that has none (services from its namespace) and treats null lists as absent', async () => {
    const pod = withAnnotations(loadPod('bare-pod.json'), undefined);
    pod.spec.volumes = null;
    const { patched, ops } = await inject(plain, pod, 'finance');
    expect(ops[0]).toEqual({ op: 'add', path: '/metadata/annotations', value: { 'nsmesh.io/injected': 'true' } });
    expect(ops.map((o) => o.path)).toContain('/spec/volumes');
    expect(envOf(initContainers(patched)[0]!).NSM_NETWORK_SERVICES).toBe('secure-intranet-connectivity?app=finance-default');
  });

  it('a second review of an injected pod changes nothing (every fixture, with and without the sidecar)', async () => {
    for (const server of [plain, withSidecar]) {
      for (const [file, ns] of [['deployment-pod.json', 'finance'], ['bare-pod.json', 'default']] as const) {
        const { patched } = await inject(server, loadPod(file), ns);
        await expectUntouched(server, patched, ns);
      }
    }
  });

  it('uses the namespace annotation when the pod has none, and the pod annotation over the namespace one', async () => {
    const pod = loadPod('deployment-pod.json');
    const fromNamespace = await inject(plain, withAnnotations(pod, { 'kubectl.kubernetes.io/restartedAt': '2026-03-02T09:14:05Z' }), 'finance');
    expect(envOf(initContainers(fromNamespace.patched)[0]!).NSM_NETWORK_SERVICES).toBe('secure-intranet-connectivity?app=finance-default');
    const fromPod = await inject(plain, pod, 'finance');
    expect(envOf(initContainers(fromPod.patched)[0]!).NSM_NETWORK_SERVICES).toBe('secure-intranet-connectivity/nsm-1?app=finance');
  });

  it('leaves pods that ask for nothing, and pods in excluded namespaces, untouched', async () => {
    await expectUntouched(plain, withAnnotations(loadPod('bare-pod.json'), undefined), 'default');
    // Annotated, but kube-system is excluded by name (the default)...
    await expectUntouched(plain, loadPod('bare-pod.json'), 'kube-system');
    // ...and legacy by the label selector nsmesh.io/inject=disabled, for its own annotation and the pod's alike.
    await expectUntouched(plain, withAnnotations(loadPod('bare-pod.json'), undefined), 'legacy');
    await expectUntouched(plain, loadPod('bare-pod.json'), 'legacy');
  });

  it('mutates only pod creation: updates and other kinds pass untouched', async () => {
    await expectUntouched(plain, loadPod('bare-pod.json'), 'default', 'UPDATE');
    const req = admissionReview({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' } }, 'default');
    (req.request as { kind: Json }).kind = { group: 'apps', version: 'v1', kind: 'Deployment' };
    const { response } = await review(plain.url, ca.certPem, req);
    expect(response).toEqual({ uid: (req.request as { uid: string }).uid, allowed: true });
  });

  it('injects the nsc --keep-alive native sidecar and CSI volumes when configured', async () => {
    const pod = loadPod('deployment-pod.json');
    const { patched, ops } = await inject(withSidecar, pod, 'finance');
    expect(ops.filter((o) => o.path === '/spec/initContainers/0')).toHaveLength(2);
    expect(initContainers(patched).map((c) => c.name)).toEqual(['nsc', 'nsc-keep-alive', 'fetch-config']);
    const [nsc, keepAlive] = initContainers(patched) as [Container, Container];
    expect(keepAlive).toMatchObject({ command: ['nsc'], args: ['--keep-alive'], restartPolicy: 'Always' });
    expect(nsc.restartPolicy).toBeUndefined();
    // Same NSM_NAME, so the sidecar's Requests refresh the init container's connections instead of making new ones.
    expect(envOf(keepAlive)).toEqual(envOf(nsc));
    expect(keepAlive.resources).toEqual({ requests: { cpu: '50m', memory: '96Mi' }, limits: { cpu: '500m', memory: '192Mi' } });
    expect((patched.spec.volumes as Json[]).slice(2)).toEqual([
      { name: 'nsmesh-nsm-socket', hostPath: { path: '/var/lib/networkservicemesh', type: 'Directory' } },
      { name: 'nsmesh-spiffe-socket', csi: { driver: 'csi.spiffe.io', readOnly: true } },
    ]);
  });
});

describe('denials', () => {
  const deny = (annotations: Record<string, string>) => expectDenied(withAnnotations(loadPod('deployment-pod.json'), annotations), 'finance');

  const cases: [string, Record<string, string>, RegExp][] = [
    ['bad service name (space)', { 'ns.networkservicemesh.io': 'secure intranet' }, /"secure intranet" is not a valid network service name/],
    ['bad service name (leading dash)', { 'ns.networkservicemesh.io': 'ok-service,-bad' }, /"-bad" is not a valid network service name/],
    [
      'bad ifname (too long)',
      { 'ns.networkservicemesh.io': 'secure-intranet-connectivity/this-name-is-too-long' },
      /interface name "this-name-is-too-long" is not valid: it is 21 characters long; Linux allows at most 15/,
    ],
    ['bad ifname (colon)', { 'networkservicemesh.io': 'kernel://icmp-responder/nsm:1' }, /interface name "nsm:1" is not valid: it contains whitespace, "\/" or ":"/],
    ['reserved ifname', { 'ns.networkservicemesh.io': 'icmp-responder/eth0' }, /interface name "eth0" is already taken in every pod/],
    ['duplicate ifname', { 'ns.networkservicemesh.io': 'a/nsm-1,b/nsm-1' }, /interface name "nsm-1" is asked for twice/],
    ['bad label (value too long)', { 'ns.networkservicemesh.io': `icmp-responder?app=${'x'.repeat(64)}` }, /label "app" has a value of 64 characters; at most 63/],
    ['bad label (empty key)', { 'ns.networkservicemesh.io': 'icmp-responder?=finance' }, /label key "" must be 1 to 253 characters/],
    ['unsupported scheme', { 'networkservicemesh.io': 'vfio://icmp-responder/nsm-1' }, /mechanism "vfio" is not supported \(only kernel\)/],
    ['no service named', { 'networkservicemesh.io': 'kernel://?app=x' }, /no network service named/],
    ['empty', { 'ns.networkservicemesh.io': '' }, /pod annotation ns\.networkservicemesh\.io is empty/],
    ['only commas', { 'networkservicemesh.io': ' , ' }, /pod annotation networkservicemesh\.io is empty/],
  ];
  for (const [kind, annotations, problem] of cases) {
    it(`denies a ${kind} naming the problem, the annotation and the accepted forms`, async () => {
      const message = await deny(annotations);
      expect(message).toMatch(problem);
      expect(message).toContain(`pod annotation ${Object.keys(annotations)[0]}`);
      expect(message).toMatch(/^pod finance-app-7d4b9c6f8d-<generated> in namespace finance: /);
      expect(message).toContain(ACCEPTED_FORMS);
    });
  }

  it('denies two different service lists under both keys', async () => {
    const message = await deny({ 'ns.networkservicemesh.io': 'a', 'networkservicemesh.io': 'kernel://b' });
    expect(message).toMatch(/both ns\.networkservicemesh\.io and networkservicemesh\.io annotations with different values; keep one/);
  });

  it('denies a malformed namespace annotation, saying it is the namespace', async () => {
    const message = await expectDenied(withAnnotations(loadPod('bare-pod.json'), undefined), 'broken-ns');
    expect(message).toMatch(/namespace annotation networkservicemesh\.io: "vfio:\/\/icmp-responder\/nsm-1": mechanism "vfio" is not supported/);
    expect(message).toContain(ACCEPTED_FORMS);
  });

  it('denies hostNetwork pods and pods already using an injected name', async () => {
    const hostNet = loadPod('bare-pod.json');
    hostNet.spec.hostNetwork = true;
    expect(await expectDenied(hostNet, 'default')).toMatch(/uses hostNetwork.*remove hostNetwork or the annotation/);
    const clash = loadPod('bare-pod.json');
    (clash.spec.containers as { name: string }[])[0]!.name = 'nsc';
    expect(await expectDenied(clash, 'default')).toMatch(/already has a container named "nsc"/);
  });
});

describe('HTTPS endpoint', () => {
  it('answers health checks and refuses what is not an AdmissionReview v1 with an HTTP error saying why', async () => {
    const get = (p: string, method = 'GET', body?: string) => httpsRequest(plain.url, { path: p, method, ca: ca.certPem, body });
    expect(await get('/healthz')).toMatchObject({ statusCode: 200, body: 'ok\n' });
    expect(await get('/mutate')).toMatchObject({ statusCode: 405 });
    expect((await get('/validate', 'POST', '{}')).statusCode).toBe(404);
    const notJson = await get('/mutate', 'POST', '{"apiVersion":');
    expect(notJson.statusCode).toBe(400);
    expect(notJson.body).toMatch(/not JSON/);
    const notReview = await get('/mutate', 'POST', JSON.stringify({ apiVersion: 'v1', kind: 'Pod' }));
    expect(notReview.statusCode).toBe(400);
    expect(notReview.body).toMatch(/not an AdmissionReview: kind: Invalid literal value/);
    const beta = admissionReview(loadPod('bare-pod.json'), 'default');
    beta.apiVersion = 'admission.k8s.io/v1beta1';
    const betaReply = await get('/mutate', 'POST', JSON.stringify(beta));
    expect(betaReply.statusCode).toBe(400);
    expect(betaReply.body).toMatch(/list v1 in the webhook's admissionReviewVersions/);
    const big = await get('/mutate', 'POST', 'x'.repeat(5 << 20));
    expect(big.statusCode).toBe(413);
    expect(big.body).toMatch(/request body of 5242880 bytes; at most 4194304 are accepted/);
  });

  it('is real TLS: a client without the CA, or expecting another name, is refused', async () => {
    const other = createTestCa('another CA');
    await expect(httpsRequest(plain.url, { path: '/healthz', method: 'GET', ca: other.certPem })).rejects.toMatchObject({
      code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    });
    const wrongName = new Promise((resolve, reject) => {
      const u = new URL(plain.url);
      https
        .get({ host: u.hostname, port: u.port, path: '/healthz', ca: ca.certPem, servername: 'evil.example.com', timeout: 5000 }, resolve)
        .on('error', reject);
    });
    await expect(wrongName).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
  });

  it('serves a renewed certificate without a restart, and keeps the old pair while the files do not match', async () => {
    const files = { certFile: path.join(dir, 'rot.crt'), keyFile: path.join(dir, 'rot.key') };
    const first = issueServerPair(ca, [WEBHOOK_DNS_NAME]);
    writeAtomically(files.certFile, first.certPem);
    writeAtomically(files.keyFile, first.keyPem);
    const server = await startWith({}, files, 50);
    // A fresh connection each time: a kept-alive one would still show the certificate of its own handshake.
    const served = async () => (await httpsRequest(server.url, { path: '/healthz', method: 'GET', ca: ca.certPem, agent: false })).fingerprint256;
    expect(await served()).toBe(first.fingerprint256);

    const second = issueServerPair(ca, [WEBHOOK_DNS_NAME]);
    writeAtomically(files.keyFile, second.keyPem);
    writeAtomically(files.certFile, second.certPem);
    await waitFor('the renewed certificate to be served', async () => (await served()) === second.fingerprint256, 5000);

    // Half way through a rotation: a new certificate beside the old key is refused, the current pair stays.
    const third = issueServerPair(ca, [WEBHOOK_DNS_NAME]);
    writeAtomically(files.certFile, third.certPem);
    expect(server.reloadCertificate()).toBe(false);
    expect(await served()).toBe(second.fingerprint256);
    writeAtomically(files.keyFile, third.keyPem);
    await waitFor('the third certificate to be served', async () => (await served()) === third.fingerprint256, 5000);
  });

  it('answers reviews in milliseconds over a kept-alive connection (measured)', async () => {
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    const pod = loadPod('deployment-pod.json');
    const times: number[] = [];
    for (let i = 0; i < 300; i++) {
      const t = performance.now();
      const { response } = await review(plain.url, ca.certPem, admissionReview(pod, 'finance'), agent);
      times.push(performance.now() - t);
      expect(response.allowed).toBe(true);
    }
    agent.destroy();
    times.sort((a, b) => a - b);
    const p50 = times[Math.floor(times.length * 0.5)]!;
    const p99 = times[Math.floor(times.length * 0.99)]!;
    console.log(`nsm-webhook review round trip over HTTPS (keep-alive), 300 sequential: p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`);
    // The API server's default webhook timeout is 10 s; this only guards against something pathological.
    expect(p50).toBeLessThan(50);
  });
});
