/**
 * The Helm chart (deploy/helm/nsmesh) and the kustomize base (deploy/kustomize/base), rendered by the real helm and
 * kubectl binaries. There is no Kubernetes API server on these machines, so "would the cluster accept it" is
 * answered by the schemas an API server applies: Kubernetes' own for built-in kinds (kubernetes-models, with
 * unknown fields refused as strict field validation does), the rendered CRDs' openAPIV3Schema for custom
 * resources (ajv), and transcribed schemas for cert-manager and spire-controller-manager objects.
 */
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { Policy } from '../../src/identity/policy.js';
import { exclusionConfig, injectionConfig, webhookSettings } from '../../src/k8s/webhook/config.js';
import { nsmdSettings } from '../../src/nsmd/config.js';
import { ENDPOINTS, GROUP, SERVICES, VERSION } from '../../src/registry/k8s/resources.js';
import { parseK8sRegistryUrl } from '../../src/registry/k8s/url.js';
import { parseSettings, type Setting, type Values } from '../../src/util/settings.js';
import type { Crd } from './crd-schema.js';
import {
  helmLint,
  helmTemplate,
  helmTemplateText,
  kustomize,
  objectKey,
  parseObjects,
  ROOT,
  type KubeObject,
} from './k8s-tools.js';
import { KUSTOMIZE_BASE, renderKustomizeBase, staleFiles, writeKustomizeBase } from './kustomize-base.js';
import { containersOf, referenceOnlyEnv, resolvedEnv, restrictedViolations, workloadsOf, type Container, type Workload } from './pods.js';
import { crdsOf, ObjectValidator } from './validate.js';

const NAMESPACE = 'nsm-system';

/** Every option of values.yaml switched away from its default at least once. */
const OVERRIDES: Record<string, string[]> = {
  'no sidecar, no cert-manager, CNI RBAC, authz policy': [
    '--set', 'webhook.sidecar=false',
    '--set', 'webhook.tls.certManager=false',
    '--set', `webhook.tls.caBundle=${Buffer.from('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n').toString('base64')}`,
    '--set', 'cni.enabled=true',
    '--set-json', 'nsmd.authzPolicy={"rules":[{"action":"request","effect":"deny","spiffeIds":["spiffe://nsmesh.local/ns/guest/*"],"resources":["*"]},{"action":"request","spiffeIds":["spiffe://nsmesh.local/*"]}]}',
  ],
  'VXLAN only, etcd registry, own namespace, SPIRE CSI driver and class': [
    '--set', 'nsmd.settings.NSM_MECHANISM_PRIORITY=VXLAN',
    '--set', 'nsmd.settings.NSM_MAX_TOKEN_LIFETIME=5m',
    '--set', 'nsmd.registryUrl=etcd://198.18.0.2:2379',
    '--set', 'namespace=mesh',
    '--set', 'createNamespace=false',
    '--set', 'spire.csiDriver=csi.spiffe.io',
    '--set', 'spire.clusterSPIFFEID.className=spire-mesh',
    '--set', 'webhook.failurePolicy=Ignore',
    '--set', 'webhook.settings.NSM_WEBHOOK_MEMORY_LIMIT=256Mi',
    '--set', 'image.tag=0.2.0',
  ],
  'no CRDs, no webhook, no SPIRE objects': [
    '--set', 'crds.install=false',
    '--set', 'webhook.enabled=false',
    '--set', 'spire.clusterSPIFFEID.enabled=false',
  ],
};

function byKey(objects: KubeObject[]): Map<string, KubeObject> {
  const m = new Map<string, KubeObject>();
  for (const o of objects) {
    const k = objectKey(o);
    if (m.has(k)) throw new Error(`${k} is rendered twice`);
    m.set(k, o);
  }
  return m;
}

function find(objects: KubeObject[], kind: string, name: string): KubeObject {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name} in: ${objects.map(objectKey).join(', ')}`);
  return o;
}

function workload(objects: KubeObject[], kind: string, name: string): Workload {
  const w = workloadsOf(objects).find((x) => x.object.kind === kind && x.object.metadata.name === name);
  if (!w) throw new Error(`no ${kind} ${name}`);
  return w;
}

function container(w: Workload, name: string): Container {
  const c = containersOf(w.spec).find((x) => x.name === name);
  if (!c) throw new Error(`${w.owner} has no container ${name}`);
  return c;
}

/**
 * The container's environment checked against the program's real settings: every variable is one of its settings
 * (or only feeds another through $(NAME)), and every value parses as that program would parse it at start.
 */
function checkSettings<S extends Record<string, Setting<unknown>>>(c: Container, settings: S): Values<S> {
  const known = new Set(Object.values(settings).map((s) => s.env));
  const helpers = referenceOnlyEnv(c);
  const unknown = (c.env ?? []).map((e) => e.name).filter((n) => !known.has(n) && !helpers.has(n));
  expect(unknown, `${c.name}: environment variables that are not settings`).toEqual([]);
  return parseSettings(settings, [], resolvedEnv(c)).values;
}

let defaults: KubeObject[];
let defaultsText: string;
let validator: ObjectValidator;

beforeAll(async () => {
  defaultsText = await helmTemplateText();
  defaults = parseObjects(defaultsText, 'helm template');
  validator = new ObjectValidator(crdsOf(defaults));
});

describe('Helm chart: rendering and schemas', () => {
  it('passes helm lint --strict with its defaults and with every option switched', async () => {
    await helmLint();
    for (const args of Object.values(OVERRIDES)) await helmLint(args);
  });

  it('renders the whole mesh, each object once', () => {
    const keys = [...byKey(defaults).keys()].sort();
    expect(keys).toEqual(
      [
        'v1 Namespace /nsm-system',
        'apiextensions.k8s.io/v1 CustomResourceDefinition /networkservices.networkservicemesh.io',
        'apiextensions.k8s.io/v1 CustomResourceDefinition /networkserviceendpoints.networkservicemesh.io',
        'v1 ServiceAccount nsm-system/nsmd',
        'rbac.authorization.k8s.io/v1 Role nsm-system/nsmesh-nsmd-registry',
        'rbac.authorization.k8s.io/v1 RoleBinding nsm-system/nsmesh-nsmd-registry',
        'apps/v1 DaemonSet nsm-system/nsmd',
        'v1 ServiceAccount nsm-system/nsm-webhook',
        'rbac.authorization.k8s.io/v1 ClusterRole /nsmesh-nsm-webhook',
        'rbac.authorization.k8s.io/v1 ClusterRoleBinding /nsmesh-nsm-webhook',
        'apps/v1 Deployment nsm-system/nsm-webhook',
        'v1 Service nsm-system/nsm-webhook',
        'policy/v1 PodDisruptionBudget nsm-system/nsm-webhook',
        'admissionregistration.k8s.io/v1 MutatingWebhookConfiguration /nsmesh-nsm-webhook',
        'cert-manager.io/v1 Issuer nsm-system/nsm-webhook-selfsigned',
        'cert-manager.io/v1 Certificate nsm-system/nsm-webhook',
        'spire.spiffe.io/v1alpha1 ClusterSPIFFEID /nsmesh-nsmd',
        'spire.spiffe.io/v1alpha1 ClusterSPIFFEID /nsmesh-workloads',
      ].sort(),
    );
  });

  it('renders only objects that validate against the Kubernetes, CRD and third-party schemas', async () => {
    expect(await validator.allProblems(defaults)).toEqual([]);
  });

  it('validates every override rendering too', async () => {
    for (const [what, args] of Object.entries(OVERRIDES)) {
      const objects = await helmTemplate(args);
      // Without its own CRDs in the rendering, custom resources are checked against the default rendering's.
      const v = crdsOf(objects).length > 0 ? new ObjectValidator(crdsOf(objects)) : validator;
      expect(await v.allProblems(objects), what).toEqual([]);
    }
  });

  it('catches what it claims to catch: misspelt fields, wrong types, non-structural CRDs', async () => {
    const ds = structuredClone(find(defaults, 'DaemonSet', 'nsmd'));
    (ds.spec as { template: { spec: Record<string, unknown> } }).template.spec.hostNetwrok = true;
    expect((await validator.problems(ds)).join('\n')).toMatch(/hostNetwrok: unknown field/);
    const dep = structuredClone(find(defaults, 'Deployment', 'nsm-webhook'));
    (dep.spec as Record<string, unknown>).replicas = 'two';
    const mount = container(workload([dep], 'Deployment', 'nsm-webhook'), 'nsm-webhook').volumeMounts![0]! as Record<string, unknown>;
    mount.readonly = true;
    const depProblems = (await validator.problems(dep)).join('\n');
    expect(depProblems).toMatch(/replicas must be integer/);
    expect(depProblems).toMatch(/containers\[0\]\.volumeMounts\[0\]\.readonly: unknown field/);
    const crd = structuredClone(find(defaults, 'CustomResourceDefinition', 'networkservices.networkservicemesh.io')) as Crd;
    const spec = crd.spec.versions[0]!.schema!.openAPIV3Schema!.properties!.spec!;
    delete spec.type;
    expect((await validator.problems(crd)).join('\n')).toMatch(/properties\.spec: no type/);
    const cert = structuredClone(find(defaults, 'Certificate', 'nsm-webhook'));
    (cert.spec as Record<string, unknown>).dnsName = ['x'];
    expect((await validator.problems(cert)).join('\n')).toMatch(/must NOT have additional properties "dnsName"/);
  });

  it('refuses values that would render a broken mesh, saying what to set', async () => {
    await expect(helmTemplateText(['--set', 'webhook.tls.certManager=false'])).rejects.toThrow(/webhook\.tls\.caBundle .* is needed when webhook\.tls\.certManager is false/);
    await expect(helmTemplateText(['--set', 'nsmd.settings.NSM_LISTEN_ON=unix:///x.sock'])).rejects.toThrow(/nsmd\.settings\.NSM_LISTEN_ON is set by the chart itself/);
    await expect(helmTemplateText(['--set', 'webhook.settings.NSM_WEBHOOK_SIDECAR=true'])).rejects.toThrow(/webhook\.settings\.NSM_WEBHOOK_SIDECAR is set by the chart itself/);
    // values.schema.json: misspelt options and impossible values stop the install instead of being ignored.
    await expect(helmTemplateText(['--set', 'webhook.failurePolicy=Sometimes'])).rejects.toThrow(/\/webhook\/failurePolicy': value must be one of 'Fail', 'Ignore'/);
    await expect(helmTemplateText(['--set', 'webhook.sidcar=true'])).rejects.toThrow(/at '\/webhook': additional properties 'sidcar' not allowed/);
  });
});

describe('Helm chart: the registry CRDs', () => {
  it('define exactly the resources the k8s:// registry reads and writes', () => {
    for (const kind of [SERVICES, ENDPOINTS]) {
      const crd = find(defaults, 'CustomResourceDefinition', `${kind.plural}.${GROUP}`) as Crd;
      expect(crd.spec.group).toBe(GROUP);
      expect(crd.spec.scope).toBe('Namespaced');
      expect(crd.spec.names.kind).toBe(kind.kind);
      expect(crd.spec.names.plural).toBe(kind.plural);
      const storage = crd.spec.versions.find((v) => v.storage);
      expect(storage?.name).toBe(VERSION);
      expect(storage?.served).toBe(true);
    }
  });

  it("puts the registry in the chart's namespace and lets nsmd reach nothing else", async () => {
    const nsmd = container(workload(defaults, 'DaemonSet', 'nsmd'), 'nsmd');
    const url = resolvedEnv(nsmd).NSM_REGISTRY_URL!;
    expect(parseK8sRegistryUrl(url)).toEqual({ namespace: NAMESPACE });
    const role = find(defaults, 'Role', 'nsmesh-nsmd-registry') as KubeObject & { rules: unknown[] };
    expect(role.metadata.namespace).toBe(NAMESPACE);
    // What src/registry/k8s/api.ts calls: list+watch, get, create, replace (update), delete. No patch.
    expect(role.rules).toEqual([
      { apiGroups: [GROUP], resources: [SERVICES.plural, ENDPOINTS.plural], verbs: ['get', 'list', 'watch', 'create', 'update', 'delete'] },
    ]);
    const etcd = OVERRIDES['VXLAN only, etcd registry, own namespace, SPIRE CSI driver and class']!;
    // With an etcd registry nsmd needs no access to the API at all.
    const objects = await helmTemplate(etcd);
    expect(objects.filter((o) => o.kind === 'Role' || o.kind === 'RoleBinding')).toEqual([]);
    expect(workload(objects, 'DaemonSet', 'nsmd').spec.automountServiceAccountToken).toBe(false);
    expect(workload(defaults, 'DaemonSet', 'nsmd').spec.automountServiceAccountToken).toBe(true);
  });
});

describe('kustomize base', () => {
  it('is the chart rendered with its default values, file for file', () => {
    const files = renderKustomizeBase(defaultsText);
    const dir = path.join(ROOT, KUSTOMIZE_BASE);
    if (process.env.NSMESH_UPDATE_KUSTOMIZE === '1') writeKustomizeBase(dir, files);
    expect(staleFiles(dir, files), 'stale kustomize base: run NSMESH_UPDATE_KUSTOMIZE=1 npx vitest run test/deploy').toEqual([]);
  });

  it('and kubectl kustomize renders the same objects as helm template', async () => {
    const fromKustomize = byKey(await kustomize(KUSTOMIZE_BASE));
    const fromHelm = byKey(defaults);
    expect([...fromKustomize.keys()].sort()).toEqual([...fromHelm.keys()].sort());
    for (const [k, o] of fromHelm) expect(fromKustomize.get(k), k).toEqual(o);
  });

  it('no-sidecar overlay renders the same objects as helm with webhook.sidecar=false', async () => {
    const overlay = byKey(await kustomize('deploy/kustomize/overlays/no-sidecar'));
    const helm = byKey(await helmTemplate(['--set', 'webhook.sidecar=false']));
    expect([...overlay.keys()].sort()).toEqual([...helm.keys()].sort());
    for (const [k, o] of helm) expect(overlay.get(k), k).toEqual(o);
    const env = resolvedEnv(container(workload([...overlay.values()], 'Deployment', 'nsm-webhook'), 'nsm-webhook'));
    expect(env.NSM_WEBHOOK_SIDECAR).toBe('false');
  });
});

describe('least privilege', () => {
  it('runs nothing privileged and drops every capability nobody needs', () => {
    for (const w of workloadsOf(defaults)) {
      for (const c of containersOf(w.spec)) {
        expect(c.securityContext?.privileged ?? false, `${w.owner} ${c.name}`).toBe(false);
        expect(c.securityContext?.allowPrivilegeEscalation, `${w.owner} ${c.name}`).toBe(false);
        expect(c.securityContext?.readOnlyRootFilesystem, `${w.owner} ${c.name}`).toBe(true);
        expect(c.securityContext?.capabilities?.drop, `${w.owner} ${c.name}`).toEqual(['ALL']);
      }
    }
  });

  it('gives nsmd exactly NET_ADMIN, SYS_ADMIN and SYS_PTRACE, and the host access it uses', () => {
    const w = workload(defaults, 'DaemonSet', 'nsmd');
    const c = container(w, 'nsmd');
    expect(c.securityContext?.capabilities?.add).toEqual(['NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE']);
    expect(w.spec.hostNetwork).toBe(true);
    expect(w.spec.hostPID).toBe(true);
    expect(w.spec.hostIPC ?? false).toBe(false);
    const hostPaths = Object.fromEntries(
      (w.spec.volumes ?? []).filter((v) => 'hostPath' in v).map((v) => [v.name, (v.hostPath as { path: string }).path]),
    );
    expect(hostPaths).toEqual({
      'nsm-socket-dir': '/var/lib/networkservicemesh',
      'spire-agent-socket': '/run/spire/sockets',
      netns: '/var/run/netns',
      'dev-tun': '/dev/net/tun',
      'wireguard-run': '/var/run/wireguard',
    });
    const readOnly = Object.fromEntries((c.volumeMounts ?? []).map((m) => [m.name, m.readOnly ?? false]));
    expect(readOnly).toMatchObject({ 'spire-agent-socket': true, netns: true });
  });

  it('mounts /dev/net/tun only while WireGuard is offered', async () => {
    const objects = await helmTemplate(['--set', 'nsmd.settings.NSM_MECHANISM_PRIORITY=VXLAN']);
    const w = workload(objects, 'DaemonSet', 'nsmd');
    expect((w.spec.volumes ?? []).map((v) => v.name)).not.toContain('dev-tun');
  });

  it('keeps the webhook at the restricted Pod Security level', () => {
    expect(restrictedViolations(workload(defaults, 'Deployment', 'nsm-webhook').spec)).toEqual([]);
  });

  it('grants RBAC by name: no wildcards, no secrets, nothing but what each component calls', async () => {
    const all = [...defaults, ...(await helmTemplate(['--set', 'cni.enabled=true']))];
    const rules = (kind: string, name: string) => (find(all, kind, name) as KubeObject & { rules: unknown }).rules;
    for (const o of all.filter((x) => x.kind === 'Role' || x.kind === 'ClusterRole')) {
      for (const r of (o as KubeObject & { rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] }).rules) {
        for (const v of [...r.apiGroups, ...r.resources, ...r.verbs]) expect(v, `${o.kind} ${o.metadata.name}`).not.toContain('*');
        expect(r.resources, `${o.kind} ${o.metadata.name}`).not.toContain('secrets');
      }
    }
    expect(rules('ClusterRole', 'nsmesh-nsm-webhook')).toEqual([{ apiGroups: [''], resources: ['namespaces'], verbs: ['get'] }]);
    expect(rules('ClusterRole', 'nsmesh-nsm-cni')).toEqual([{ apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['get'] }]);
    // Every binding binds its component's own ServiceAccount to its own role.
    for (const b of all.filter((x) => x.kind === 'RoleBinding' || x.kind === 'ClusterRoleBinding')) {
      const binding = b as KubeObject & { roleRef: { name: string }; subjects: { kind: string; name: string }[] };
      expect(binding.roleRef.name).toBe(b.metadata.name);
      expect(binding.subjects).toHaveLength(1);
      expect(binding.subjects[0]!.kind).toBe('ServiceAccount');
    }
  });
});

describe('real commands and settings', () => {
  const bins = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin;

  it('runs commands the image has (package.json bin)', () => {
    for (const w of workloadsOf(defaults)) {
      for (const c of containersOf(w.spec)) expect(Object.keys(bins), `${w.owner} ${c.name}`).toContain(c.command?.[0]);
    }
  });

  it("gives nsmd only nsmd's settings, and values it accepts", () => {
    const c = container(workload(defaults, 'DaemonSet', 'nsmd'), 'nsmd');
    const v = checkSettings(c, nsmdSettings);
    expect(v.name).toBe('nsmd-node-1');
    expect(v.remoteListenOn).toBe('tcp://198.18.0.11:5001');
    const mounts = (c.volumeMounts ?? []).map((m) => m.mountPath);
    const under = (p: string) => mounts.some((m) => p === m || p.startsWith(`${m}/`));
    // The root filesystem is read-only: every path nsmd writes or serves must be on a volume.
    expect(under(new URL(v.listenOn).pathname), v.listenOn).toBe(true);
    expect(under(v.stateDir), v.stateDir).toBe(true);
    expect(under(new URL(v.workloadApi).pathname), v.workloadApi).toBe(true);
    const port = (c.ports ?? []).find((p) => p.name === 'remote-api');
    expect(`tcp://198.18.0.11:${port?.containerPort}`).toBe(v.remoteListenOn);
  });

  it("gives the webhook only the webhook's settings, which it starts with", () => {
    const c = container(workload(defaults, 'Deployment', 'nsm-webhook'), 'nsm-webhook');
    const v = checkSettings(c, webhookSettings);
    const injection = injectionConfig(v);
    expect(injection.image).toBe(c.image);
    expect(injection.sidecar).toBe(true);
    const exclusion = exclusionConfig(v);
    expect([...exclusion.namespaces].sort()).toEqual(['kube-system', NAMESPACE]);
    expect(exclusion.selector?.matches({ 'nsmesh.io/inject': 'disabled' })).toBe(true);
    expect(exclusion.selector?.matches({})).toBe(false);
  });

  it('hands nsmd an authorization policy its parser accepts', async () => {
    const objects = await helmTemplate(OVERRIDES['no sidecar, no cert-manager, CNI RBAC, authz policy']!);
    const cm = find(objects, 'ConfigMap', 'nsmd-authz-policy') as KubeObject & { data: Record<string, string> };
    const policy = Policy.parse(cm.data['policy.yaml']!, 'nsmd-authz-policy');
    expect(policy.governs('request')).toBe(true);
    const c = container(workload(objects, 'DaemonSet', 'nsmd'), 'nsmd');
    const v = checkSettings(c, nsmdSettings);
    const mount = (c.volumeMounts ?? []).find((m) => m.name === 'authz-policy');
    expect(v.authzPolicy).toBe(`${mount?.mountPath}/policy.yaml`);
  });
});

describe('wiring between objects', () => {
  it('points the MutatingWebhookConfiguration at the webhook Service, port and certificate', () => {
    const mwc = find(defaults, 'MutatingWebhookConfiguration', 'nsmesh-nsm-webhook') as KubeObject & {
      webhooks: { clientConfig: { service: { name: string; namespace: string; port: number; path: string } }; namespaceSelector: { matchExpressions: { key: string; values: string[] }[] } }[];
    };
    const svc = find(defaults, 'Service', 'nsm-webhook') as KubeObject & { spec: { ports: { port: number; targetPort: string }[]; selector: Record<string, string> } };
    const w = workload(defaults, 'Deployment', 'nsm-webhook');
    const c = container(w, 'nsm-webhook');
    const ref = mwc.webhooks[0]!.clientConfig.service;
    expect([ref.name, ref.namespace, ref.path]).toEqual([svc.metadata.name, svc.metadata.namespace, '/mutate']);
    const port = svc.spec.ports.find((p) => p.port === ref.port);
    expect(port?.targetPort).toBe('https');
    const containerPort = (c.ports ?? []).find((p) => p.name === 'https')!.containerPort;
    expect(resolvedEnv(c).NSM_WEBHOOK_LISTEN_ON).toBe(`tcp://0.0.0.0:${containerPort}`);
    expect(w.labels).toMatchObject(svc.spec.selector);

    const cert = find(defaults, 'Certificate', 'nsm-webhook') as KubeObject & { spec: { dnsNames: string[]; secretName: string } };
    expect(cert.spec.dnsNames).toContain(`${ref.name}.${ref.namespace}.svc`);
    expect(mwc.metadata.annotations?.['cert-manager.io/inject-ca-from']).toBe(`${cert.metadata.namespace}/${cert.metadata.name}`);
    const tls = (w.spec.volumes ?? []).find((v) => v.name === 'tls') as unknown as { secret: { secretName: string } };
    expect(tls.secret.secretName).toBe(cert.spec.secretName);
    const certFile = resolvedEnv(c).NSM_WEBHOOK_CERT_FILE!;
    const mount = (c.volumeMounts ?? []).find((m) => m.name === 'tls')!;
    expect(path.posix.dirname(certFile)).toBe(mount.mountPath);

    // The API server skips the same namespaces the webhook itself excludes.
    const excluded = mwc.webhooks[0]!.namespaceSelector.matchExpressions.find((e) => e.key === 'kubernetes.io/metadata.name')!.values;
    expect(excluded.join(',')).toBe(resolvedEnv(c).NSM_WEBHOOK_EXCLUDED_NAMESPACES);
  });

  it('never sends the mesh its own pods, so it starts while the webhook is down', () => {
    const ns = find(defaults, 'Namespace', NAMESPACE);
    expect(ns.metadata.labels?.['pod-security.kubernetes.io/enforce']).toBe('privileged');
    expect(ns.metadata.labels?.['nsmesh.io/inject']).toBe('disabled');
  });

  it('gives SPIFFE IDs to nsmd pods and to the pods the webhook labels', () => {
    const nsmdId = find(defaults, 'ClusterSPIFFEID', 'nsmesh-nsmd') as KubeObject & {
      spec: { podSelector: { matchLabels: Record<string, string> }; namespaceSelector: { matchLabels: Record<string, string> }; spiffeIDTemplate: string };
    };
    const nsmd = workload(defaults, 'DaemonSet', 'nsmd');
    expect(nsmd.labels).toMatchObject(nsmdId.spec.podSelector.matchLabels);
    expect(nsmdId.spec.namespaceSelector.matchLabels).toEqual({ 'kubernetes.io/metadata.name': NAMESPACE });
    expect(nsmdId.spec.spiffeIDTemplate).toBe('spiffe://{{ .TrustDomain }}/nsmesh/nsmd/{{ .PodSpec.NodeName }}');

    const workloads = find(defaults, 'ClusterSPIFFEID', 'nsmesh-workloads') as KubeObject & { spec: { podSelector: { matchLabels: Record<string, string> } } };
    const c = container(workload(defaults, 'Deployment', 'nsm-webhook'), 'nsm-webhook');
    const v = parseSettings(webhookSettings, [], resolvedEnv(c)).values;
    expect(injectionConfig(v).podLabels).toEqual(workloads.spec.podSelector.matchLabels);
    // nsmd must not also match the workloads' entry: two SVIDs for one pod would make its identity ambiguous.
    expect(nsmd.labels).not.toMatchObject(workloads.spec.podSelector.matchLabels);
  });

  it('renders values.yaml defaults into the objects it documents', () => {
    const values = parseYaml(fs.readFileSync(path.join(ROOT, 'deploy/helm/nsmesh/values.yaml'), 'utf8')) as {
      image: { repository: string };
      webhook: { replicas: number };
    };
    const dep = find(defaults, 'Deployment', 'nsm-webhook') as KubeObject & { spec: { replicas: number } };
    expect(dep.spec.replicas).toBe(values.webhook.replicas);
    const chart = parseYaml(fs.readFileSync(path.join(ROOT, 'deploy/helm/nsmesh/Chart.yaml'), 'utf8')) as { appVersion: string };
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(chart.appVersion).toBe(pkg.version);
    for (const w of workloadsOf(defaults)) {
      for (const c of containersOf(w.spec)) expect(c.image).toBe(`${values.image.repository}:${pkg.version}`);
    }
  });
});
