/**
 * deploy/kustomize/base is the chart rendered with its default values, one file per chart template, so the two
 * install paths cannot drift apart and nobody keeps the same YAML twice by hand. `renderKustomizeBase` makes the
 * files from `helm template` output; the deploy tests compare them with what is committed and rewrite them when
 * run with NSMESH_UPDATE_KUSTOMIZE=1.
 */
import fs from 'node:fs';
import path from 'node:path';

export const KUSTOMIZE_BASE = 'deploy/kustomize/base';

const HEADER =
  '# Generated from deploy/helm/nsmesh with its default values; do not edit. Change the chart, then run\n' +
  '#   NSMESH_UPDATE_KUSTOMIZE=1 npx vitest run test/deploy\n';

/** File name → content of the kustomize base for this `helm template` output. */
export function renderKustomizeBase(helmOutput: string): Map<string, string> {
  const bySource = new Map<string, string[]>();
  for (const chunk of helmOutput.split(/^---\s*$/m)) {
    const source = /^# Source: [^/]+\/templates\/(.+)$/m.exec(chunk)?.[1];
    const body = chunk.replace(/^# Source: .*\n/m, '').trim();
    if (!source || body === '') continue;
    const docs = bySource.get(source) ?? [];
    docs.push(body);
    bySource.set(source, docs);
  }
  const files = new Map<string, string>();
  for (const [source, docs] of bySource) files.set(path.basename(source), `${HEADER}${docs.join('\n---\n')}\n`);
  const resources = [...files.keys()].sort();
  files.set(
    'kustomization.yaml',
    `${HEADER}apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n${resources.map((r) => `  - ${r}\n`).join('')}`,
  );
  return files;
}

/** Names of the files that differ from `files`, are missing, or should not be there. */
export function staleFiles(dir: string, files: Map<string, string>): string[] {
  const present = fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  const stale = present.filter((f) => !files.has(f));
  for (const [name, content] of files) {
    const file = path.join(dir, name);
    if (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== content) stale.push(name);
  }
  return stale.sort();
}

export function writeKustomizeBase(dir: string, files: Map<string, string>): void {
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(dir)) if (!files.has(f)) fs.rmSync(path.join(dir, f));
  for (const [name, content] of files) fs.writeFileSync(path.join(dir, name), content);
}
