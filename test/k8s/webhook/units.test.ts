/** The webhook's building blocks on their own: JSON Pointer escaping, patch building, selectors, settings, the namespace cache. */
import { describe, expect, it } from 'vitest';
import { exclusionConfig, injectionConfig, webhookSettings } from '../../../src/k8s/webhook/config.js';
import { addToArray, addToMap, escapePointerToken, pointer } from '../../../src/k8s/webhook/json-patch.js';
import { parseLabelSelector } from '../../../src/k8s/webhook/label-selector.js';
import { cachedNamespaces, type NamespaceLookup } from '../../../src/k8s/webhook/namespaces.js';
import { parseSettings } from '../../../src/util/settings.js';
import { applyJsonPatch, type PatchOp } from './helpers.js';

describe('JSON Pointer and JSON Patch', () => {
  it('escapes "~" before "/" (RFC 6901), and the test helper reads such paths back', () => {
    expect(escapePointerToken('a/b')).toBe('a~1b');
    expect(escapePointerToken('a~b')).toBe('a~0b');
    expect(escapePointerToken('~1')).toBe('~01');
    expect(pointer('metadata', 'annotations', 'nsmesh.io/injected')).toBe('/metadata/annotations/nsmesh.io~1injected');
    const doc = { m: { 'x~/y': 1, '~1': 2 } };
    expect(applyJsonPatch(doc, [{ op: 'replace', path: pointer('m', 'x~/y'), value: 3 }]).m['x~/y']).toBe(3);
    expect(applyJsonPatch(doc, [{ op: 'remove', path: pointer('m', '~1') }]).m).toEqual({ 'x~/y': 1 });
  });

  it('adds whole arrays and maps when absent, members when present, keeping order when inserting at the front', () => {
    expect(addToArray(undefined, ['spec', 'volumes'], ['a', 'b'])).toEqual([{ op: 'add', path: '/spec/volumes', value: ['a', 'b'] }]);
    const front = addToArray(['x'], ['spec', 'initContainers'], ['a', 'b'], 0);
    expect(applyJsonPatch({ spec: { initContainers: ['x'] } }, front as PatchOp[]).spec.initContainers).toEqual(['a', 'b', 'x']);
    const end = addToArray(['x'], ['l'], ['a', 'b']);
    expect(applyJsonPatch({ l: ['x'] }, end as PatchOp[]).l).toEqual(['x', 'a', 'b']);
    expect(addToArray(['x'], ['l'], [])).toEqual([]);
    expect(addToMap(undefined, ['metadata', 'labels'], { 'a/b': 'c' })).toEqual([{ op: 'add', path: '/metadata/labels', value: { 'a/b': 'c' } }]);
    // "add" on an existing member replaces it.
    const set = addToMap({ 'a/b': 'old' }, ['metadata', 'labels'], { 'a/b': 'c' });
    expect(applyJsonPatch({ metadata: { labels: { 'a/b': 'old' } } }, set as PatchOp[]).metadata.labels).toEqual({ 'a/b': 'c' });
  });

  it('the test helper applies RFC 6902 as specified, failing on a missing parent or an index past the end', () => {
    const doc = { foo: ['bar', 'baz'], obj: { a: 1 } };
    const ops: PatchOp[] = [
      { op: 'add', path: '/foo/1', value: 'qux' },
      { op: 'test', path: '/foo/2', value: 'baz' },
      { op: 'move', from: '/obj/a', path: '/obj/b' },
      { op: 'copy', from: '/foo/0', path: '/foo/-' },
    ];
    expect(applyJsonPatch(doc, ops)).toEqual({ foo: ['bar', 'qux', 'baz', 'bar'], obj: { b: 1 } });
    expect(doc.foo).toEqual(['bar', 'baz']);
    expect(() => applyJsonPatch(doc, [{ op: 'add', path: '/missing/x', value: 1 }])).toThrow(/"missing" does not exist/);
    expect(() => applyJsonPatch(doc, [{ op: 'add', path: '/foo/3', value: 1 }])).toThrow(/out of bounds/);
    expect(() => applyJsonPatch(doc, [{ op: 'test', path: '/foo/0', value: 'x' }])).toThrow(/test failed/);
  });
});

describe('namespace label selectors', () => {
  const labels = { env: 'prod', tier: 'web', 'nsmesh.io/inject': 'disabled' };
  it.each([
    ['env=prod', true],
    ['env==prod,tier=web', true],
    ['env!=prod', false],
    ['missing!=x', true],
    ['nsmesh.io/inject', true],
    ['!nsmesh.io/inject', false],
    ['env in (dev, prod)', true],
    ['env notin (dev,prod)', false],
    ['env in (dev,prod), tier notin (db)', true],
  ])('%s matches: %s', (sel, want) => {
    expect(parseLabelSelector(sel).matches(labels)).toBe(want);
  });

  it.each([
    ['env=prod,', /cannot read ""/],
    ['env > 3', /cannot read "env > 3"; accepted: "key", "!key"/],
    ['bad key!=x', /cannot read/],
    ['-env=x', /"-env" is not a label key/],
    ['env in (a b)', /"a b" is not a label value/],
  ])('refuses %s', (sel, msg) => {
    expect(() => parseLabelSelector(sel)).toThrow(msg);
  });
});

describe('settings', () => {
  const values = (env: Record<string, string>) => parseSettings(webhookSettings, [], env).values;

  it('builds the injection and exclusion config from the defaults', () => {
    const cfg = injectionConfig(values({}));
    expect(cfg).toMatchObject({
      image: 'ghcr.io/nsmesh/nsmesh:0.1.0',
      sidecar: false,
      nsmSocket: { url: 'unix:///var/lib/networkservicemesh/nsm.io.sock', dir: '/var/lib/networkservicemesh', csiDriver: '' },
      spiffeSocket: { url: 'unix:///run/spire/sockets/agent.sock', dir: '/run/spire/sockets', csiDriver: '' },
      requests: { cpu: '50m', memory: '96Mi' },
      limits: { memory: '192Mi' },
    });
    expect([...exclusionConfig(values({})).namespaces]).toEqual(['kube-system']);
  });

  it.each([
    [{ NSM_WEBHOOK_MEMORY_LIMIT: '1 GB' }, /NSM_WEBHOOK_MEMORY_LIMIT: "1 GB" is not a Kubernetes quantity/],
    [{ NSM_WEBHOOK_NSC_IMAGE: 'Not An Image' }, /NSM_WEBHOOK_NSC_IMAGE: "Not An Image" is not an image reference/],
    [{ NSM_WEBHOOK_IMAGE_PULL_POLICY: 'Sometimes' }, /must be Always, IfNotPresent or Never/],
    [{ NSM_WEBHOOK_NSM_SOCKET: 'tcp://10.0.0.1:5001' }, /must be a unix:\/\/\/path socket/],
    [{ NSM_WEBHOOK_SPIFFE_SOCKET: 'unix:///var/lib/networkservicemesh/agent.sock' }, /each needs a directory of its own/],
    [{ NSM_WEBHOOK_SPIFFE_CSI_DRIVER: 'CSI SPIFFE' }, /is not a DNS name like csi\.spiffe\.io/],
    [{ NSM_WEBHOOK_NSC_ENV: 'NSM_NAME=x' }, /NSM_NAME is set by the webhook itself/],
    [{ NSM_WEBHOOK_NSC_ENV: '1BAD=x' }, /"1BAD" is not a valid environment variable name/],
    [{ NSM_WEBHOOK_POD_LABELS: 'spiffe.io/spiffe-id:not ok' }, /NSM_WEBHOOK_POD_LABELS: "not ok" is not a label value/],
  ])('refuses %o', (env, msg) => {
    expect(() => injectionConfig(values(env))).toThrow(msg);
  });

  it('refuses bad exclusions', () => {
    expect(() => exclusionConfig(values({ NSM_WEBHOOK_EXCLUDED_NAMESPACES: 'kube-system,Bad_NS' }))).toThrow(/"Bad_NS" is not a namespace name/);
    expect(() => exclusionConfig(values({ NSM_WEBHOOK_EXCLUDE_NAMESPACE_SELECTOR: 'a=(b' }))).toThrow(/label selector "a=\(b"/);
  });
});

describe('namespace cache', () => {
  function counting(fail = false): NamespaceLookup & { calls: number } {
    const l = {
      calls: 0,
      async get(name: string) {
        l.calls++;
        if (fail) throw new Error(`cannot read ${name}`);
        return { labels: {}, annotations: { n: String(l.calls) } };
      },
    };
    return l;
  }

  it('shares one lookup among concurrent reviews and reuses it for the TTL', async () => {
    let now = 0;
    const inner = counting();
    const cache = cachedNamespaces(inner, 5000, () => now);
    const all = await Promise.all(Array.from({ length: 100 }, () => cache.get('finance')));
    expect(inner.calls).toBe(1);
    expect(new Set(all.map((n) => n?.annotations.n))).toEqual(new Set(['1']));
    now = 4999;
    await cache.get('finance');
    expect(inner.calls).toBe(1);
    now = 5000;
    expect((await cache.get('finance'))?.annotations.n).toBe('2');
  });

  it('does not remember failures', async () => {
    const inner = counting(true);
    const cache = cachedNamespaces(inner, 5000, () => 0);
    await expect(cache.get('x')).rejects.toThrow(/cannot read x/);
    await expect(cache.get('x')).rejects.toThrow(/cannot read x/);
    expect(inner.calls).toBe(2);
  });
});
