/**
 * The nsm-webhook command as deployed: run from dist/, configured by environment, reading Namespaces through
 * @kubernetes/client-node. There is no Kubernetes API server on this machine, so the test serves the one endpoint
 * the webhook calls (GET /api/v1/namespaces/NAME, over HTTPS with a bearer token, as kube-apiserver answers it)
 * with recorded Namespace and Status objects, and points the webhook at it through a kubeconfig.
 */
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import type { ServerResponse } from 'node:http';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INJECTED_ENV, webhookSettings } from '../../../src/k8s/webhook/config.js';
import { waitFor } from '../../helpers/wait.js';
import { admissionReview, applyJsonPatch, decodePatch, httpsRequest, loadPod, review } from './helpers.js';
import { createTestCa, issueServerPair } from './tls.js';

const ROOT = path.resolve(import.meta.dirname, '../../..');
const BIN = path.join(ROOT, 'dist/src/cli/nsm-webhook.js');
const NSC_BIN = path.join(ROOT, 'dist/src/cli/nsc.js');
const TOKEN = 'test-serviceaccount-token';

const namespaceObject = (name: string, labels: Record<string, string>, annotations: Record<string, string> = {}) => ({
  kind: 'Namespace',
  apiVersion: 'v1',
  metadata: {
    name,
    uid: '3c0d8f0e-6a0b-4f7e-9d49-0b7e1b1f5a10',
    resourceVersion: '48211',
    creationTimestamp: '2026-02-11T08:00:00Z',
    labels: { 'kubernetes.io/metadata.name': name, ...labels },
    annotations,
  },
  spec: { finalizers: ['kubernetes'] },
  status: { phase: 'Active' },
});

const status = (code: number, reason: string, message: string) => ({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });

const RECORDED: Record<string, { code: number; body: unknown }> = {
  finance: { code: 200, body: namespaceObject('finance', {}, { 'ns.networkservicemesh.io': 'secure-intranet-connectivity/nsm-1' }) },
  legacy: { code: 200, body: namespaceObject('legacy', { 'nsmesh.io/inject': 'disabled' }, { 'ns.networkservicemesh.io': 'icmp-responder' }) },
  forbidden: {
    code: 403,
    body: status(
      403,
      'Forbidden',
      'namespaces "forbidden" is forbidden: User "system:serviceaccount:nsm-system:nsm-webhook" cannot get resource "namespaces" in API group "" in the namespace "forbidden"',
    ),
  },
};

let dir: string;
let caPem: string;
let apiServer: https.Server;
const apiRequests: { url: string; authorization?: string }[] = [];
const held: ServerResponse[] = [];
let webhook: ResultPromise;
let webhookUrl: string;
let stderr = '';

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsmwhcli-'));
  const ca = createTestCa();
  caPem = ca.certPem;
  const apiPair = issueServerPair(ca, ['127.0.0.1']);
  apiServer = https.createServer({ cert: apiPair.certPem, key: apiPair.keyPem }, (req, res) => {
    apiRequests.push({ url: req.url ?? '', authorization: req.headers.authorization });
    const name = /^\/api\/v1\/namespaces\/([^/?]+)/.exec(req.url ?? '')?.[1];
    if (name === 'slow') {
      held.push(res);
      return;
    }
    const r = (name && RECORDED[name]) || { code: 404, body: status(404, 'NotFound', `namespaces "${name}" not found`) };
    res.writeHead(r.code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(r.body));
  });
  await new Promise<void>((resolve) => apiServer.listen(0, '127.0.0.1', resolve));
  const apiPort = (apiServer.address() as { port: number }).port;
  const kubeconfig = path.join(dir, 'kubeconfig');
  fs.writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      `- name: test\n  cluster:\n    server: https://127.0.0.1:${apiPort}\n    certificate-authority-data: ${Buffer.from(ca.certPem).toString('base64')}`,
      'users:',
      `- name: nsm-webhook\n  user:\n    token: ${TOKEN}`,
      'contexts:',
      '- name: test\n  context:\n    cluster: test\n    user: nsm-webhook',
      'current-context: test',
      '',
    ].join('\n'),
  );
  const pair = issueServerPair(ca, ['nsm-webhook.nsm-system.svc']);
  fs.writeFileSync(path.join(dir, 'tls.crt'), pair.certPem);
  fs.writeFileSync(path.join(dir, 'tls.key'), pair.keyPem, { mode: 0o600 });

  webhook = execa('node', [BIN], {
    reject: false,
    env: {
      KUBECONFIG: kubeconfig,
      NSM_WEBHOOK_LISTEN_ON: 'tcp://127.0.0.1:0',
      NSM_WEBHOOK_CERT_FILE: path.join(dir, 'tls.crt'),
      NSM_WEBHOOK_KEY_FILE: path.join(dir, 'tls.key'),
      NSM_WEBHOOK_API_TIMEOUT: '300ms',
      NSM_WEBHOOK_EXCLUDE_NAMESPACE_SELECTOR: 'nsmesh.io/inject=disabled',
    },
  });
  webhook.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  webhookUrl = await waitFor(
    'nsm-webhook to listen',
    () => {
      if (webhook.exitCode !== null) throw new Error(`nsm-webhook exited: ${stderr}`);
      return /"url":"(https:\/\/[^"]+)".*"msg":"nsm-webhook listening"/.exec(stderr)?.[1];
    },
    15_000,
  );
});

afterAll(async () => {
  webhook?.kill('SIGKILL');
  await webhook;
  for (const res of held) res.destroy();
  apiServer?.closeAllConnections();
  await new Promise((resolve) => apiServer?.close(resolve));
  fs.rmSync(dir, { recursive: true, force: true });
});

const podWithout = () => {
  const pod = loadPod('deployment-pod.json');
  delete pod.metadata.annotations;
  return pod;
};
const namespaceReads = (name: string) => apiRequests.filter((r) => r.url.startsWith(`/api/v1/namespaces/${name}`));

describe('nsm-webhook command', () => {
  it('--help exits 0 and lists every setting', async () => {
    const r = await execa('node', [BIN, '--help'], { reject: false });
    expect(r.exitCode).toBe(0);
    for (const s of Object.values(webhookSettings)) {
      expect(r.stdout).toContain(`--${s.flag}`);
      expect(r.stdout).toContain(s.env);
    }
  });

  it('injects only environment variables that nsc reads (nsc --help lists them)', async () => {
    const r = await execa('node', [NSC_BIN, '--help'], { reject: false });
    expect(r.exitCode).toBe(0);
    for (const name of INJECTED_ENV) expect(r.stdout).toContain(` ${name} `);
  });

  it('refuses a bad setting with exit 2 and the reason', async () => {
    const r = await execa('node', [BIN], { reject: false, env: { NSM_WEBHOOK_CPU_REQUEST: 'lots', KUBECONFIG: '' } });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/NSM_WEBHOOK_CPU_REQUEST: "lots" is not a Kubernetes quantity/);
  });

  it('reads the namespace annotation from the API server, once per namespace while cached', async () => {
    const before = namespaceReads('finance').length;
    for (let i = 0; i < 3; i++) {
      const pod = podWithout();
      const { response } = await review(webhookUrl, caPem, admissionReview(pod, 'finance'));
      expect(response.allowed).toBe(true);
      const patched = applyJsonPatch(pod, decodePatch(response));
      const nsc = (patched.spec.initContainers as { name: string; env: { name: string; value?: string }[] }[])[0]!;
      expect(nsc.name).toBe('nsc');
      expect(nsc.env.find((e) => e.name === 'NSM_NETWORK_SERVICES')?.value).toBe('secure-intranet-connectivity/nsm-1');
    }
    const reads = namespaceReads('finance').slice(before);
    expect(reads).toHaveLength(1);
    expect(reads[0]!.authorization).toBe(`Bearer ${TOKEN}`);
  });

  it('skips namespaces the selector excludes by their labels on the API server', async () => {
    const { response } = await review(webhookUrl, caPem, admissionReview(loadPod('bare-pod.json'), 'legacy'));
    expect(response).toMatchObject({ allowed: true });
    expect(response.patch).toBeUndefined();
    expect(namespaceReads('legacy').length).toBeGreaterThan(0);
  });

  it('treats a namespace the API server does not know as unlabelled and unannotated', async () => {
    const { response } = await review(webhookUrl, caPem, admissionReview(loadPod('bare-pod.json'), 'newly-made'));
    expect(response.allowed).toBe(true);
    expect(decodePatch(response).length).toBeGreaterThan(0);
  });

  it('answers HTTP 500 when the namespace cannot be read, so the failurePolicy decides, saying why', async () => {
    const forbidden = await httpsRequest(webhookUrl, { body: JSON.stringify(admissionReview(podWithout(), 'forbidden')), ca: caPem });
    expect(forbidden.statusCode).toBe(500);
    expect(forbidden.body).toMatch(/cannot read namespace "forbidden" from https:\/\/127\.0\.0\.1:\d+: HTTP 403: .*cannot get resource \\?"namespaces\\?".*needs get on namespaces/);

    const t = performance.now();
    const slow = await httpsRequest(webhookUrl, { body: JSON.stringify(admissionReview(podWithout(), 'slow')), ca: caPem });
    const took = performance.now() - t;
    expect(slow.statusCode).toBe(500);
    expect(slow.body).toMatch(/cannot read namespace "slow" .*: no answer within 300 ms/);
    expect(took).toBeLessThan(2000);
  });

  it('stops on SIGTERM with exit code 0', async () => {
    webhook.kill('SIGTERM');
    const r = await webhook;
    expect(r.exitCode).toBe(0);
  });
});
