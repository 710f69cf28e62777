/**
 * nsm-cni-refresher in the Helm chart (cni.enabled), rendered by the real helm (test/deploy/k8s-tools.ts): the
 * container runs a command the image has, with nothing but the refresher's own settings and values it accepts,
 * sees every path it uses on a volume, holds no capability, and SPIRE gives it the plugin's identity rather than
 * nsmd's. There is no API server or SPIRE here, so this checks the rendered objects, as test/deploy does.
 */
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseSocketUrl } from '../../src/api/grpc.js';
import { parseSettings } from '../../src/util/settings.js';
import { refresherSettings } from '../../cni/src/refresher/settings.js';
import { helmTemplate, helmTemplateText, ROOT, type KubeObject } from '../deploy/k8s-tools.js';
import { containersOf, referenceOnlyEnv, resolvedEnv, workloadsOf, type Container, type Workload } from '../deploy/pods.js';

let enabled: KubeObject[];
let nsmdPod: Workload;
let refresher: Container;

interface ClusterSpiffeId extends KubeObject {
  spec: { spiffeIDTemplate: string; podSelector: { matchLabels: Record<string, string> }; workloadSelectorTemplates?: string[] };
}
const spiffeIds = (objects: KubeObject[]) => objects.filter((o): o is ClusterSpiffeId => o.kind === 'ClusterSPIFFEID');

beforeAll(async () => {
  enabled = await helmTemplate(['--set', 'cni.enabled=true']);
  nsmdPod = workloadsOf(enabled).find((w) => w.object.kind === 'DaemonSet' && w.object.metadata.name === 'nsmd')!;
  refresher = containersOf(nsmdPod.spec).find((c) => c.name === 'nsm-cni-refresher')!;
});

describe('nsm-cni-refresher in the Helm chart', () => {
  it('runs beside nsmd only when cni.enabled', async () => {
    expect(refresher).toBeDefined();
    const defaults = await helmTemplate();
    const pod = workloadsOf(defaults).find((w) => w.object.metadata.name === 'nsmd')!;
    expect(containersOf(pod.spec).map((c) => c.name)).toEqual(['nsmd']);
    expect(spiffeIds(defaults).map((o) => o.metadata.name).sort()).toEqual(['nsmesh-nsmd', 'nsmesh-workloads']);
  });

  it('runs a command the image has, with its own settings and values it accepts', () => {
    const bins = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin;
    expect(refresher.command).toEqual(['nsm-cni-refresher']);
    expect(bins['nsm-cni-refresher']).toBe('dist/cni/src/nsm-cni-refresher.js');
    const known = new Set(Object.values(refresherSettings).map((s) => s.env));
    const helpers = referenceOnlyEnv(refresher);
    expect((refresher.env ?? []).map((e) => e.name).filter((n) => !known.has(n) && !helpers.has(n))).toEqual([]);
    const v = parseSettings(refresherSettings, [], resolvedEnv(refresher)).values;

    // Every path it uses is on a volume: nsmd's socket and the Workload API as nsmd's container has them, and
    // the plugin's dataDir from the host, writable.
    const mounts = refresher.volumeMounts ?? [];
    const mountOf = (p: string) => mounts.find((m) => p === m.mountPath || p.startsWith(`${m.mountPath}/`));
    const nsmd = containersOf(nsmdPod.spec).find((c) => c.name === 'nsmd')!;
    expect(v.connectTo).toBe(resolvedEnv(nsmd).NSM_LISTEN_ON);
    expect(mountOf(parseSocketUrl(v.connectTo).path!)?.name).toBe('nsm-socket-dir');
    expect(v.workloadApi).toBe(resolvedEnv(nsmd).SPIFFE_ENDPOINT_SOCKET);
    expect(mountOf(parseSocketUrl(v.workloadApi).path!)?.name).toBe('spire-agent-socket');
    expect(mountOf(v.dataDir)).toMatchObject({ name: 'cni-data', mountPath: v.dataDir });
    expect(mountOf(v.dataDir)!.readOnly ?? false).toBe(false);
    const dataVolume = nsmdPod.spec.volumes!.find((x) => x.name === 'cni-data') as unknown as { hostPath: { path: string } };
    expect(dataVolume.hostPath.path).toBe('/var/lib/cni/nsm'); // nsm-cni's default dataDir
    // Pod namespaces made after the pod started must show up, or live pods would look deleted.
    expect(mountOf('/var/run/netns/cni-1234')).toMatchObject({ readOnly: true, mountPropagation: 'HostToContainer' });
  });

  it('holds no capability and writes nothing but the records', () => {
    const sc = refresher.securityContext!;
    expect(sc.capabilities).toEqual({ drop: ['ALL'] });
    expect(sc.privileged).toBe(false);
    expect(sc.allowPrivilegeEscalation).toBe(false);
    expect(sc.readOnlyRootFilesystem).toBe(true);
    expect(sc.seccompProfile?.type).toBe('RuntimeDefault');
    expect((refresher.volumeMounts ?? []).filter((m) => !m.readOnly).map((m) => m.name)).toEqual(['cni-data']);
  });

  it("gets the plugin's SPIFFE identity, and nsmd keeps its own", () => {
    const byName = new Map(spiffeIds(enabled).map((o) => [o.metadata.name, o.spec]));
    const nsmdLabels = (nsmdPod.object.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels;
    expect(byName.get('nsmesh-cni')).toMatchObject({
      spiffeIDTemplate: 'spiffe://{{ .TrustDomain }}/nsmesh/cni/{{ .PodSpec.NodeName }}',
      podSelector: { matchLabels: nsmdLabels },
      workloadSelectorTemplates: ['k8s:container-name:nsm-cni-refresher'],
    });
    expect(byName.get('nsmesh-nsmd')?.workloadSelectorTemplates).toEqual(['k8s:container-name:nsmd']);
  });

  it('refuses settings the chart sets itself', async () => {
    await expect(helmTemplateText(['--set', 'cni.enabled=true', '--set', 'cni.refresher.settings.NSM_CONNECT_TO=unix:///x.sock'])).rejects.toThrow(
      /cni\.refresher\.settings\.NSM_CONNECT_TO is set by the chart itself/,
    );
    await expect(helmTemplateText(['--set', 'cni.dataDir=relative'])).rejects.toThrow(/\/cni\/dataDir/);
  });
});
