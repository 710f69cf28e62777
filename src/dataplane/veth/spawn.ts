/**
 * Starts the netlink worker from compiled JS or from TS sources.
 *
 * Compiled (dist/src/dataplane/veth/spawn.js): the worker is the sibling worker.js.
 * TS sources (vitest runs src/ untranspiled through vite, but a worker_thread is a bare Node isolate that
 * vite never sees, and Node 20 cannot load .ts): the worker boots with a module loader hook that
 * transpiles .ts with the `typescript` devDependency and maps `./x.js` imports to `./x.ts`, mirroring
 * what tsc does. That keeps one source of truth and lets tests run without a build; production never
 * takes this path. Loading typescript and its first transpile cost ~1 s, so output is cached on disk by
 * content hash and a warm start skips typescript entirely.
 */
import { Worker } from 'node:worker_threads';

/** Loader hook module source; exported so tests can start a child process from TS sources the same way. */
export const TS_HOOKS = `
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
let resolveFrom;
let ts;
const cacheDir = tmpdir() + '/nsmesh-ts-cache';
export function initialize(data) { resolveFrom = data.resolveFrom; }
export async function resolve(specifier, context, next) {
  if (context.parentURL && context.parentURL.endsWith('.ts') && specifier.startsWith('.') && specifier.endsWith('.js')) {
    const url = new URL(specifier.slice(0, -3) + '.ts', context.parentURL);
    if (existsSync(url)) return { url: url.href, format: 'module', shortCircuit: true };
  }
  return next(specifier, context);
}
export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  const src = readFileSync(new URL(url), 'utf8');
  const cached = cacheDir + '/' + createHash('sha256').update(url).update('\\0').update(src).digest('hex') + '.js';
  if (existsSync(cached)) return { format: 'module', source: readFileSync(cached, 'utf8'), shortCircuit: true };
  ts ??= createRequire(resolveFrom)('typescript');
  const out = ts.transpileModule(src, {
    fileName: fileURLToPath(url),
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, inlineSourceMap: true, inlineSources: true },
  }).outputText;
  mkdirSync(cacheDir, { recursive: true });
  const tmp = cached + '.' + process.pid + '.' + Math.random().toString(36).slice(2);
  writeFileSync(tmp, out);
  renameSync(tmp, cached);
  return { format: 'module', source: out, shortCircuit: true };
}
`;

// Eval'd worker code is a CommonJS script unless the parent runs with --input-type=module (inherited),
// so it sticks to dynamic import(), which both accept. It installs the hook, then imports the real entry.
const TS_BOOT = `
Promise.all([import('node:module'), import('node:worker_threads')])
  .then(([{ register }, { workerData }]) => {
    const boot = workerData.__tsBoot;
    register('data:text/javascript,' + encodeURIComponent(boot.hooks), { data: { resolveFrom: boot.resolveFrom } });
    return import(boot.entry);
  })
  .catch((err) => { setImmediate(() => { throw err; }); });
`;

export function spawnWorker(entry: string, workerData: Record<string, unknown>): Worker {
  const here = import.meta.url;
  if (!here.endsWith('.ts')) return new Worker(new URL(`./${entry}.js`, here), { workerData });
  const boot = { hooks: TS_HOOKS, resolveFrom: here, entry: new URL(`./${entry}.ts`, here).href };
  return new Worker(TS_BOOT, { eval: true, workerData: { ...workerData, __tsBoot: boot } });
}
