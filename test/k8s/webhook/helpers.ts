/**
 * What the webhook tests need of the API server's side: AdmissionReview requests as kube-apiserver builds them,
 * an HTTPS client that trusts only the test CA, and RFC 6902 JSON Patch application as the API server does it
 * before it stores the pod.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';

export const WEBHOOK_DNS_NAME = 'nsm-webhook.nsm-system.svc';
export const FIXTURES = path.join(import.meta.dirname, 'fixtures');

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type Pod = { [k: string]: Json } & { metadata: { [k: string]: Json }; spec: { [k: string]: Json } };

export function loadPod(file: string): Pod {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, file), 'utf8')) as Pod;
}

/** An AdmissionReview for `operation` on `pod`, shaped like kube-apiserver's (v1.30) request to a mutating webhook. */
export function admissionReview(pod: unknown, namespace: string, operation: 'CREATE' | 'UPDATE' = 'CREATE'): { [k: string]: Json } {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: crypto.randomUUID(),
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      requestResource: { group: '', version: 'v1', resource: 'pods' },
      name: ((pod as Pod).metadata?.name as string | undefined) ?? '',
      namespace,
      operation,
      userInfo: {
        username: 'system:serviceaccount:kube-system:replicaset-controller',
        uid: 'f0c7d7a4-3b4e-4bb8-9d1f-3d1f0b5d2e11',
        groups: ['system:serviceaccounts', 'system:serviceaccounts:kube-system', 'system:authenticated'],
      },
      object: pod as Json,
      oldObject: operation === 'UPDATE' ? (pod as Json) : null,
      dryRun: false,
      options: { kind: operation === 'CREATE' ? 'CreateOptions' : 'UpdateOptions', apiVersion: 'meta.k8s.io/v1' },
    },
  };
}

export interface HttpReply {
  statusCode: number;
  body: string;
  /** SHA-256 fingerprint of the certificate the server presented. */
  fingerprint256: string;
}

/** One HTTPS request the way the API server makes it: to the Service DNS name, trusting the caBundle only. */
export function httpsRequest(
  url: string,
  opts: { method?: string; path?: string; body?: string | Buffer; ca: string; agent?: https.Agent | false; timeoutMs?: number },
): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const u = new URL(opts.path ?? '/mutate?timeout=10s', url);
    const req = https.request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        method: opts.method ?? 'POST',
        ca: opts.ca,
        servername: WEBHOOK_DNS_NAME,
        agent: opts.agent,
        timeout: opts.timeoutMs ?? 5000,
        headers: opts.body !== undefined ? { 'content-type': 'application/json', accept: 'application/json' } : {},
      },
      (res) => {
        // Read now: at the end of the body a kept-alive socket has already gone back to the agent.
        const fingerprint256 = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), fingerprint256 }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${opts.timeoutMs ?? 5000} ms`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

export interface ReviewResponse {
  uid: string;
  allowed: boolean;
  patchType?: string;
  patch?: string;
  status?: { code: number; message: string; reason?: string; status?: string };
}

export async function review(url: string, ca: string, body: unknown, agent?: https.Agent): Promise<{ response: ReviewResponse; raw: { [k: string]: Json } }> {
  const reply = await httpsRequest(url, { body: JSON.stringify(body), ca, agent });
  if (reply.statusCode !== 200) throw new Error(`webhook answered HTTP ${reply.statusCode}: ${reply.body}`);
  const raw = JSON.parse(reply.body) as { [k: string]: Json };
  return { response: raw.response as unknown as ReviewResponse, raw };
}

export type PatchOp =
  | { op: 'add' | 'replace' | 'test'; path: string; value: Json }
  | { op: 'remove'; path: string }
  | { op: 'move' | 'copy'; from: string; path: string };

export function decodePatch(r: ReviewResponse): PatchOp[] {
  if (r.patchType !== 'JSONPatch' || !r.patch) throw new Error(`no JSONPatch in the response: ${JSON.stringify(r)}`);
  return JSON.parse(Buffer.from(r.patch, 'base64').toString('utf8')) as PatchOp[];
}

/** RFC 6901: "~1" is "/", "~0" is "~" (in that order, so "~01" stays "~1"). */
function parsePointer(p: string): string[] {
  if (p === '') return [];
  if (!p.startsWith('/')) throw new Error(`JSON Pointer "${p}" does not start with "/"`);
  return p.slice(1).split('/').map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function arrayIndex(arr: Json[], token: string, forAdd: boolean, p: string): number {
  if (forAdd && token === '-') return arr.length;
  if (!/^(0|[1-9]\d*)$/.test(token)) throw new Error(`"${token}" in ${p} is not an array index`);
  const i = Number(token);
  if (i > arr.length || (!forAdd && i === arr.length)) throw new Error(`index ${i} in ${p} is out of bounds (length ${arr.length})`);
  return i;
}

function parentOf(doc: Json, p: string): { parent: Json[] | { [k: string]: Json }; last: string } {
  const tokens = parsePointer(p);
  if (tokens.length === 0) throw new Error('operations on the whole document are not used here');
  let node: Json = doc;
  for (const t of tokens.slice(0, -1)) {
    if (Array.isArray(node)) node = node[arrayIndex(node, t, false, p)]!;
    else if (node !== null && typeof node === 'object' && Object.hasOwn(node, t)) node = node[t]!;
    else throw new Error(`path ${p}: "${t}" does not exist`);
  }
  if (node === null || typeof node !== 'object') throw new Error(`path ${p}: the parent is not an object or array`);
  return { parent: node, last: tokens.at(-1)! };
}

function get(doc: Json, p: string): Json {
  const { parent, last } = parentOf(doc, p);
  if (Array.isArray(parent)) return parent[arrayIndex(parent, last, false, p)]!;
  if (!Object.hasOwn(parent, last)) throw new Error(`path ${p} does not exist`);
  return parent[last]!;
}

function remove(doc: Json, p: string): Json {
  const { parent, last } = parentOf(doc, p);
  if (Array.isArray(parent)) return parent.splice(arrayIndex(parent, last, false, p), 1)[0]!;
  if (!Object.hasOwn(parent, last)) throw new Error(`path ${p} does not exist`);
  const v = parent[last]!;
  delete parent[last];
  return v;
}

function add(doc: Json, p: string, value: Json): void {
  const { parent, last } = parentOf(doc, p);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, true, p), 0, value);
  else parent[last] = value;
}

/** RFC 6902 applied to a copy of `doc`; any failing operation fails the whole patch, as in the API server. */
export function applyJsonPatch<T>(doc: T, ops: PatchOp[]): T {
  const out = structuredClone(doc) as Json;
  for (const op of ops) {
    switch (op.op) {
      case 'add':
        add(out, op.path, structuredClone(op.value));
        break;
      case 'remove':
        remove(out, op.path);
        break;
      case 'replace':
        get(out, op.path);
        remove(out, op.path);
        add(out, op.path, structuredClone(op.value));
        break;
      case 'move':
        add(out, op.path, remove(out, op.from));
        break;
      case 'copy':
        add(out, op.path, structuredClone(get(out, op.from)));
        break;
      case 'test':
        if (JSON.stringify(get(out, op.path)) !== JSON.stringify(op.value)) throw new Error(`test failed at ${op.path}`);
        break;
    }
  }
  return out as T;
}
