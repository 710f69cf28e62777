/**
 * The examples' Kubernetes manifests (examples/icmp-responder/k8s, examples/secure-intranet-connectivity/k8s), the
 * registry's recorded objects (test/registry-k8s/fixtures) and the objects the k8s:// registry itself writes,
 * checked against the chart's CRDs and the Kubernetes schema — and against the programs that will read them: the
 * registry's converter, the webhook's annotation parser, each endpoint's settings and config file loader, and the
 * real endpoint selection, so a manifest that validates also does what its comments say.
 * There is no API server here; the schemas stand in for it (see chart.test.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import type { NetworkService, NetworkServiceEndpoint } from '../../src/api/types.js';
import { endpointSettings } from '../../src/endpoint/settings.js';
import { requestedServices } from '../../src/k8s/webhook/annotation.js';
import { fromEndpointObject, toEndpointObject } from '../../src/registry/k8s/endpoint-object.js';
import type { ApiObject } from '../../src/registry/k8s/resources.js';
import { fromServiceObject, toServiceObject } from '../../src/registry/k8s/service-object.js';
import { parseNetworkServiceYaml } from '../../src/registry/yaml.js';
import { matchEndpoints } from '../../src/select/index.js';
import { parseSettings } from '../../src/util/settings.js';
import { firewallConfigSchema } from '../../examples/firewall/rules.js';
import { loadVpnGatewayConfig } from '../../examples/vpn-gateway/config.js';
import { helmTemplate, kustomize, parseObjects, ROOT, type KubeObject } from './k8s-tools.js';
import { baselineViolations, containersOf, referenceOnlyEnv, resolvedEnv, restrictedViolations, workloadsOf, type Container, type Workload } from './pods.js';
import { crdsOf, ObjectValidator } from './validate.js';

const REGISTRY_NAMESPACE = 'nsm-system';
const EXAMPLES = ['examples/icmp-responder/k8s', 'examples/secure-intranet-connectivity/k8s'];
const ENDPOINT_COMMANDS = ['nse-icmp-responder', 'nse-firewall', 'nse-vpn-gateway'];

let validator: ObjectValidator;
const rendered = new Map<string, KubeObject[]>();
let tmp: string;

beforeAll(async () => {
  validator = new ObjectValidator(crdsOf(await helmTemplate()));
  for (const dir of EXAMPLES) rendered.set(dir, await kustomize(dir));
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nsmesh-deploy-'));
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function services(objects: KubeObject[]): NetworkService[] {
  return objects
    .filter((o) => o.kind === 'NetworkService')
    .map((o) => {
      const r = fromServiceObject(o as ApiObject);
      if ('problem' in r) throw new Error(`${o.metadata.name}: ${r.problem}`);
      return r.ok;
    });
}

/** The settings an endpoint program defines beyond the SDK's: the NSM_* names its own source declares. */
function ownSettingNames(command: string): Set<string> {
  const dir = path.join(ROOT, 'examples', command.replace(/^nse-/, ''));
  const names = new Set<string>();
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.ts'))) {
    for (const m of fs.readFileSync(path.join(dir, f), 'utf8').matchAll(/str\('(NSM_[A-Z0-9_]+)'|labelsSetting\('(NSM_[A-Z0-9_]+)'/g)) names.add(m[1] ?? m[2]!);
  }
  return names;
}

function endpointEnv(c: Container, fields: Record<string, string> = {}): Record<string, string> {
  const sdk = new Set(Object.values(endpointSettings).map((s) => s.env));
  const own = ownSettingNames(c.command![0]!);
  const helpers = referenceOnlyEnv(c);
  const unknown = (c.env ?? []).map((e) => e.name).filter((n) => !sdk.has(n) && !own.has(n) && !helpers.has(n));
  expect(unknown, `${c.command![0]}: environment variables that are not its settings`).toEqual([]);
  return resolvedEnv(c, fields);
}

/** The registration each endpoint Deployment makes, as nsmd would store it (its node filled in). */
function registrations(objects: KubeObject[], node: string): NetworkServiceEndpoint[] {
  return workloadsOf(objects)
    .flatMap((w) => containersOf(w.spec).map((c) => ({ w, c })))
    .filter(({ c }) => ENDPOINT_COMMANDS.includes(c.command?.[0] ?? ''))
    .map(({ c }) => {
      const env = endpointEnv(c, { 'spec.nodeName': node, 'metadata.name': `${c.command![0]}-${node}` });
      // The SDK's settings only: each program parses its own on top of them.
      const sdk = new Set(Object.values(endpointSettings).map((s) => s.env));
      const v = parseSettings(endpointSettings, [], Object.fromEntries(Object.entries(env).filter(([k]) => sdk.has(k)))).values;
      return {
        name: v.name,
        network_service_names: v.serviceNames,
        network_service_labels: Object.fromEntries(v.serviceNames.map((s) => [s, { labels: v.labels }])),
        url: `tcp://${node}:5001`,
        expiration_time: null,
        initial_registration_time: null,
        path_ids: [],
      };
    });
}

function endpointWorkloads(objects: KubeObject[]): { w: Workload; c: Container }[] {
  return workloadsOf(objects)
    .flatMap((w) => containersOf(w.spec).map((c) => ({ w, c })))
    .filter(({ c }) => ENDPOINT_COMMANDS.includes(c.command?.[0] ?? ''));
}

describe('example manifests', () => {
  it('validate against the Kubernetes schema and the chart CRDs', async () => {
    for (const [dir, objects] of rendered) expect(await validator.allProblems(objects), dir).toEqual([]);
  });

  it('run commands the image has (package.json bin) from the image the chart uses', async () => {
    const bins = Object.keys((JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin);
    const meshImage = containersOf(workloadsOf(await helmTemplate()).find((w) => w.object.kind === 'DaemonSet')!.spec)[0]!.image;
    for (const [dir, objects] of rendered) {
      for (const { w, c } of endpointWorkloads(objects)) {
        expect(bins, `${dir} ${w.owner}`).toContain(c.command![0]);
        expect(c.image, `${dir} ${w.owner}`).toBe(meshImage);
      }
    }
  });

  it('put their NetworkServices where the registry reads them, in a form it reads', () => {
    for (const [dir, objects] of rendered) {
      const ns = objects.filter((o) => o.kind === 'NetworkService');
      expect(ns.length, dir).toBeGreaterThan(0);
      for (const o of ns) expect(o.metadata.namespace, `${dir} ${o.metadata.name}`).toBe(REGISTRY_NAMESPACE);
      expect(services(objects).length).toBe(ns.length);
    }
  });

  it('run endpoints with their real settings and config files', () => {
    for (const [dir, objects] of rendered) {
      for (const { w, c } of endpointWorkloads(objects)) {
        const env = endpointEnv(c);
        const configMaps = new Map(objects.filter((o) => o.kind === 'ConfigMap').map((o) => [o.metadata.name, o as KubeObject & { data: Record<string, string> }]));
        // A config file setting must name a file that a mounted ConfigMap provides, in a form the program loads.
        for (const [setting, load] of [
          ['NSM_FIREWALL_CONFIG', (text: string) => firewallConfigSchema.parse(parseYaml(text))],
          ['NSM_VPN_CONFIG', (text: string) => {
            const file = path.join(tmp, 'vpn-gateway.yaml');
            fs.writeFileSync(file, text);
            return loadVpnGatewayConfig(file);
          }],
        ] as const) {
          const file = env[setting];
          if (!file) continue;
          const mount = (c.volumeMounts ?? []).find((m) => path.posix.dirname(file) === m.mountPath);
          expect(mount, `${w.owner}: ${setting} ${file} is not on a mounted volume`).toBeDefined();
          const volume = (w.spec.volumes ?? []).find((v) => v.name === mount!.name) as { configMap?: { name: string } };
          const text = configMaps.get(volume.configMap!.name)?.data[path.posix.basename(file)];
          expect(text, `${dir}: ConfigMap ${volume.configMap?.name} has no ${path.posix.basename(file)}`).toBeDefined();
          expect(() => load(text!), `${w.owner}: ${setting}`).not.toThrow();
        }
      }
    }
  });

  it('annotate clients with services the example defines, as the webhook parses them', async () => {
    for (const [dir, objects] of rendered) {
      const defined = new Set(services(objects).map((s) => s.name));
      const clients = workloadsOf(objects).filter((w) => Object.keys(w.annotations).length > 0);
      expect(clients.length, dir).toBeGreaterThan(0);
      for (const w of clients) {
        const asked = await requestedServices(w.annotations, async () => ({}));
        expect(asked, w.owner).toBeDefined();
        for (const s of asked!.services) expect(defined, w.owner).toContain(s.service);
      }
    }
  });

  it('select the endpoints their comments promise, with the real selection', () => {
    const icmp = rendered.get('examples/icmp-responder/k8s')!;
    const [icmpService] = services(icmp);
    const nses = [...registrations(icmp, 'node-1'), ...registrations(icmp, 'node-2')];
    // nsmd adds the client's node as nodeName: its own node's endpoint first, another node's when that is gone.
    expect(matchEndpoints({ nodeName: 'node-2' }, icmpService!, nses).map((e) => e.name)).toEqual(['nse-icmp-responder-node-2']);
    expect(matchEndpoints({ nodeName: 'node-2' }, icmpService!, nses.slice(0, 1)).map((e) => e.name)).toEqual(['nse-icmp-responder-node-1']);

    const intranet = rendered.get('examples/secure-intranet-connectivity/k8s')!;
    const [service] = services(intranet);
    const all = registrations(intranet, 'node-1');
    const labelsOf = (app: string) => all.filter((e) => e.network_service_labels[service!.name]?.labels.app === app).map((e) => e.name);
    // A client (no labels of its own) reaches the firewall, never the gateway directly.
    expect(matchEndpoints({ nodeName: 'node-1' }, service!, all).map((e) => e.name)).toEqual(labelsOf('firewall'));
    // The firewall's onward request carries its NSM_ONWARD_LABELS and reaches the VPN gateway.
    const fw = endpointWorkloads(intranet).find(({ c }) => c.command![0] === 'nse-firewall')!;
    const onward = Object.fromEntries(endpointEnv(fw.c).NSM_ONWARD_LABELS!.split(',').map((kv) => kv.split(':') as [string, string]));
    expect(matchEndpoints({ ...onward, nodeName: 'node-1' }, service!, all).map((e) => e.name)).toEqual(labelsOf('vpn-gateway'));
    // Without the firewall, clients get nothing: there is no way around it.
    const noFirewall = all.filter((e) => !labelsOf('firewall').includes(e.name));
    expect(matchEndpoints({ nodeName: 'node-1' }, service!, noFirewall)).toEqual([]);
  });

  it("say the same as the seed's v0.2 NetworkService, which also applies as it is", async () => {
    const seedText = fs.readFileSync(path.join(ROOT, 'examples/secure-intranet-connectivity/network-service.yaml'), 'utf8');
    const [seed] = parseNetworkServiceYaml(seedText);
    const [k8s] = services(rendered.get('examples/secure-intranet-connectivity/k8s')!);
    expect(k8s).toEqual(seed);
    const [seedObject] = parseObjects(seedText, 'seed network-service.yaml');
    expect(await validator.problems({ ...seedObject!, metadata: { ...seedObject!.metadata, namespace: REGISTRY_NAMESPACE } })).toEqual([]);
    const r = fromServiceObject(seedObject as ApiObject);
    expect('ok' in r && r.ok).toEqual(seed);
  });

  it('keep clients at the restricted Pod Security level and endpoints to the host access they use', () => {
    for (const [dir, objects] of rendered) {
      for (const w of workloadsOf(objects)) {
        expect(w.spec.automountServiceAccountToken, `${dir} ${w.owner}: no API credentials`).toBe(false);
        const endpoint = containersOf(w.spec).some((c) => ENDPOINT_COMMANDS.includes(c.command?.[0] ?? ''));
        if (!endpoint) {
          expect(restrictedViolations(w.spec), `${dir} ${w.owner}`).toEqual([]);
          continue;
        }
        // Sockets on the node, /dev/net/tun for WireGuard, NET_ADMIN and SYS_ADMIN and packet forwarding in their
        // own network namespace; nothing else.
        const allowed =
          /^(hostPath volume (nsm-socket-dir|nse-sockets|spire-agent-socket|dev-tun)|nse: adds (NET_ADMIN|SYS_ADMIN)|sysctl (net\.ipv4\.ip_forward|net\.ipv6\.conf\.all\.forwarding))$/;
        expect(baselineViolations(w.spec).filter((v) => !allowed.test(v)), `${dir} ${w.owner}`).toEqual([]);
        for (const c of containersOf(w.spec)) {
          expect(c.securityContext?.privileged ?? false).toBe(false);
          expect(c.securityContext?.allowPrivilegeEscalation).toBe(false);
          expect(c.securityContext?.capabilities?.drop).toEqual(['ALL']);
        }
        const nsMount = containersOf(w.spec).flatMap((c) => c.volumeMounts ?? []).find((m) => m.name === 'nsm-socket-dir');
        expect(nsMount?.readOnly, `${w.owner}: nsmd's directory (with its state) must be read-only`).toBe(true);
      }
    }
  });
});

describe('registry objects against the CRDs', () => {
  it('accept every object the k8s:// registry writes', async () => {
    const service: NetworkService = {
      name: 'icmp@my.cluster2',
      payload: 'IP',
      matches: [
        { source_selector: { app: 'firewall' }, routes: [{ destination_selector: { app: 'gw' }, weight: 3 }], fallthrough: true, metadata: { labels: { x: 'y' } } },
        { source_selector: {}, routes: [], fallthrough: false, metadata: null },
      ],
      path_ids: ['spiffe://nsmesh.local/ns/a/pod/b'],
    };
    const endpoint: NetworkServiceEndpoint = {
      name: 'nse-1',
      network_service_names: ['icmp'],
      network_service_labels: { icmp: { labels: { app: 'icmp', nodeName: 'n1' } } },
      url: 'tcp://198.18.0.11:5001',
      expiration_time: { seconds: 1_900_000_000, nanos: 5 },
      initial_registration_time: { seconds: 1_899_999_000, nanos: 0 },
      path_ids: ['spiffe://nsmesh.local/ns/a/pod/b'],
    };
    const objects = [toServiceObject(service, 'icmp-my-cluster2-0123456789', REGISTRY_NAMESPACE), toEndpointObject(endpoint, 'nse-1', REGISTRY_NAMESPACE)];
    for (const o of objects) expect(await validator.problems(o as KubeObject)).toEqual([]);
    // And what they read back is what was written.
    const back = fromEndpointObject(objects[1]!);
    expect('ok' in back && back.ok).toEqual(endpoint);
  });

  it("accept the registry tests' recorded objects, and refuse the misspelt one at apply time", async () => {
    const dir = path.join(ROOT, 'test/registry-k8s/fixtures');
    const items = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.yaml'))
      // Each file is one List, as kubectl get -o yaml prints it.
      .flatMap((f) => (parseYaml(fs.readFileSync(path.join(dir, f), 'utf8')) as { items: KubeObject[] }).items);
    expect(items.length).toBeGreaterThan(0);
    for (const o of items) {
      const problems = await validator.problems(o);
      if (o.metadata.name === 'broken-service') expect(problems.join('\n')).toMatch(/additional properties "source_selectr"/);
      else expect(problems, o.metadata.name).toEqual([]);
    }
  });

  it('refuse wrong types and values with the field named', async () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ payload: 'TCP' }, /\/spec\/payload must be equal to one of the allowed values/],
      [{ matches: [{ routes: [{ destination_selector: { app: 'x' }, weight: -1 }] }] }, /weight must be >= 0/],
      [{ matches: [{ source_selector: { replicas: 3 } }] }, /source_selector\/replicas must be string/],
      [{ matches: [{ routes: [{ destinationSelector: { app: 'x' } }] }] }, /additional properties "destinationSelector"/],
    ];
    for (const [spec, message] of bad) {
      const o: KubeObject = { apiVersion: 'networkservicemesh.io/v1', kind: 'NetworkService', metadata: { name: 'x', namespace: REGISTRY_NAMESPACE }, spec };
      expect((await validator.problems(o)).join('\n')).toMatch(message);
    }
    const nse: KubeObject = {
      apiVersion: 'networkservicemesh.io/v1',
      kind: 'NetworkServiceEndpoint',
      metadata: { name: 'x', namespace: REGISTRY_NAMESPACE },
      spec: { network_service_labels: { icmp: { app: 'x' } } },
    };
    expect((await validator.problems(nse)).join('\n')).toMatch(/network_service_labels\/icmp must NOT have additional properties "app"/);
  });
});
