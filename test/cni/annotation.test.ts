/**
 * nsm-cni reading a pod's network services from its annotation through the Kubernetes API, for runtimes that
 * pass neither runtimeConfig nor CNI_ARGS. There is no Kubernetes API server on these machines: a stand-in
 * HTTPS server (its own self-signed certificate, trusted through the kubeconfig) answers the two reads the
 * plugin makes (the pod, then its namespace) with recorded objects.
 * The plugin itself runs as the runtime runs it (a process, CNI_* environment, configuration on stdin).
 */
import fs from 'node:fs';
import https from 'node:https';
import { execa } from 'execa';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNetns, tag } from '../helpers/netns.js';
import { CniRuntime, makeBinDir } from './runtime.js';

interface Recorded {
  annotations?: Record<string, string>;
}
const pods = new Map<string, Recorded>();
const namespaces = new Map<string, Recorded>();
const seen: string[] = [];

function podObject(ns: string, name: string, r: Recorded) {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns, uid: `uid-${name}`, annotations: r.annotations }, spec: { containers: [{ name: 'app', image: 'app:1' }] } };
}
function namespaceObject(name: string, r: Recorded) {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, annotations: r.annotations } };
}
function notFound(what: string) {
  return { apiVersion: 'v1', kind: 'Status', status: 'Failure', message: `${what} not found`, reason: 'NotFound', code: 404 };
}

let api: https.Server;
const handler = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
  seen.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
  const send = (code: number, body: unknown) => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  let m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/?]+)/.exec(req.url ?? '');
  if (m) {
    const r = pods.get(`${m[1]}/${m[2]}`);
    return r ? send(200, podObject(m[1]!, m[2]!, r)) : send(404, notFound(`pods "${m[2]}"`));
  }
  m = /^\/api\/v1\/namespaces\/([^/?]+)$/.exec(req.url ?? '');
  if (m) {
    const r = namespaces.get(m[1]!);
    return r ? send(200, namespaceObject(m[1]!, r)) : send(404, notFound(`namespaces "${m[1]}"`));
  }
  send(404, notFound(req.url ?? ''));
};

let tmp: string;
let runtime: CniRuntime;
let kubeconfig: string;
let podNetns: string;

let caData = '';

function kubeconfigFor(server: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    `clusters: [{name: test, cluster: {server: "${server}", certificate-authority-data: ${caData}}}]`,
    'users: [{name: cni, user: {token: nsm-cni-token}}]',
    'contexts: [{name: test, context: {cluster: test, user: cni}}]',
    'current-context: test',
  ].join('\n');
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), `nsmcni-k8s-${tag}-`));
  const [key, cert] = [path.join(tmp, 'api.key'), path.join(tmp, 'api.crt')];
  await execa('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert]);
  caData = fs.readFileSync(cert).toString('base64');
  api = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, handler);
  await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
  kubeconfig = path.join(tmp, 'kubeconfig');
  fs.writeFileSync(kubeconfig, kubeconfigFor(`https://127.0.0.1:${(api.address() as AddressInfo).port}`));
  runtime = new CniRuntime({ binDir: makeBinDir(path.join(tmp, 'bin')) });
  podNetns = (await createNetns('pod')).path;
});

afterAll(async () => {
  await new Promise((resolve) => api?.close(resolve));
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const PREV = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }], ips: [{ address: '198.18.78.2/24', interface: 0 }] };

function add(pod: string, namespace: string, conf: Record<string, unknown> = {}) {
  const stdin = {
    cniVersion: '1.0.0',
    name: `nsmt-${tag}`,
    type: 'nsm-cni',
    kubeconfig,
    // No nsmd on this socket: a run that gets past the annotation says so with code 11.
    nsmSocket: `unix://${tmp}/no-nsmd.sock`,
    dataDir: path.join(tmp, 'state'),
    insecure: true,
    prevResult: PREV,
    ...conf,
  };
  const args = { IgnoreUnknown: '1', K8S_POD_NAMESPACE: namespace, K8S_POD_NAME: pod, K8S_POD_INFRA_CONTAINER_ID: `${tag}c1` };
  return runtime.exec('nsm-cni', 'ADD', { containerId: `${tag}c1`, netns: podNetns, ifname: 'eth0', args }, JSON.stringify(stdin));
}

describe('nsm-cni: services from the pod annotation (stand-in API server)', () => {
  it("reads the pod's annotation with the kubeconfig's credentials", async () => {
    pods.set('default/web', { annotations: { 'ns.networkservicemesh.io': 'secure-intranet-connectivity/nsm1?app=web' } });
    seen.length = 0;
    const r = await add('web', 'default');
    // Parsed and on its way to nsmd, which is not there.
    expect(r.json).toMatchObject({ code: 11, msg: expect.stringMatching(/nsmd's socket .* does not exist/) });
    expect(seen).toEqual(['GET /api/v1/namespaces/default/pods/web Bearer nsm-cni-token']);
  });

  it("falls back to the namespace's annotation (upstream v1 key) and names where a bad value came from", async () => {
    pods.set('team/api', {});
    namespaces.set('team', { annotations: { 'networkservicemesh.io': 'kernel://bad service/nsm1' } });
    seen.length = 0;
    const r = await add('api', 'team');
    expect(r.exitCode).toBe(1);
    expect(r.json).toMatchObject({ code: 7, msg: expect.stringMatching(/^annotation networkservicemesh\.io of namespace team: .*not a valid network service name.*accepted forms/) });
    expect(seen.map((s) => s.split(' ').slice(0, 2).join(' '))).toEqual(['GET /api/v1/namespaces/team/pods/api', 'GET /api/v1/namespaces/team']);
  });

  it('passes the previous result through for a pod that asks for nothing', async () => {
    pods.set('plain/db', {});
    namespaces.set('plain', {});
    const r = await add('db', 'plain');
    expect(r.exitCode).toBe(0);
    expect(r.json).toEqual(PREV);
  });

  it('answers an API error or an unreachable API server with code 103', async () => {
    const missing = await add('ghost', 'default');
    expect(missing.json).toMatchObject({ code: 103, msg: expect.stringContaining('pod default/ghost'), details: expect.stringContaining('get on pods and namespaces') });
    const down = path.join(tmp, 'kubeconfig-down');
    fs.writeFileSync(down, kubeconfigFor('https://127.0.0.1:1'));
    const unreachable = await add('web', 'default', { kubeconfig: down });
    expect(unreachable.json).toMatchObject({ code: 103, msg: expect.stringContaining('https://127.0.0.1:1') });
  });

  it('prefers runtimeConfig and CNI_ARGS over the API (no read at all)', async () => {
    seen.length = 0;
    const r = await add('web', 'default', { runtimeConfig: { networkServices: 'icmp-responder' } });
    expect(r.json).toMatchObject({ code: 11 });
    expect(seen).toEqual([]);
  });
});
