/**
 * The pods a set of manifests would run, and the Pod Security Standards checks the API server's Pod Security
 * Admission would apply to them (https://kubernetes.io/docs/concepts/security/pod-security-standards/, as of
 * Kubernetes 1.30), plus the container environment as the kubelet would hand it to the process.
 */
import type { KubeObject } from './k8s-tools.js';

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  ports?: { name?: string; containerPort: number; hostPort?: number }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean; mountPropagation?: string }[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: SecurityContext;
}
interface SecurityContext {
  privileged?: boolean;
  allowPrivilegeEscalation?: boolean;
  runAsNonRoot?: boolean;
  runAsUser?: number;
  readOnlyRootFilesystem?: boolean;
  capabilities?: { add?: string[]; drop?: string[] };
  seccompProfile?: { type: string };
}
export interface PodSpec {
  hostNetwork?: boolean;
  hostPID?: boolean;
  hostIPC?: boolean;
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  securityContext?: SecurityContext & { runAsGroup?: number; sysctls?: { name: string; value: string }[] };
  containers: Container[];
  initContainers?: Container[];
  volumes?: ({ name: string } & Record<string, unknown>)[];
}
export interface Workload {
  /** "Kind namespace/name" */
  owner: string;
  object: KubeObject;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  spec: PodSpec;
}

const WORKLOAD_KINDS = new Set(['Deployment', 'DaemonSet', 'StatefulSet', 'ReplicaSet', 'Job']);

export function workloadsOf(objects: KubeObject[]): Workload[] {
  const out: Workload[] = [];
  for (const o of objects) {
    const owner = `${o.kind} ${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    if (WORKLOAD_KINDS.has(o.kind)) {
      const t = (o.spec as { template: { metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec } }).template;
      out.push({ owner, object: o, labels: t.metadata?.labels ?? {}, annotations: t.metadata?.annotations ?? {}, spec: t.spec });
    } else if (o.kind === 'Pod') {
      out.push({ owner, object: o, labels: o.metadata.labels ?? {}, annotations: o.metadata.annotations ?? {}, spec: o.spec as PodSpec });
    }
  }
  return out;
}

export function containersOf(spec: PodSpec): Container[] {
  return [...(spec.initContainers ?? []), ...spec.containers];
}

// Capabilities the baseline level lets a container add.
const BASELINE_CAPS = new Set([
  'AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'MKNOD', 'NET_BIND_SERVICE', 'SETFCAP',
  'SETGID', 'SETPCAP', 'SETUID', 'SYS_CHROOT',
]);
// Sysctls the baseline level admits: namespaced ones that cannot affect other pods.
const SAFE_SYSCTLS = new Set([
  'kernel.shm_rmid_forced', 'net.ipv4.ip_local_port_range', 'net.ipv4.ip_unprivileged_port_start', 'net.ipv4.tcp_syncookies',
  'net.ipv4.ping_group_range', 'net.ipv4.ip_local_reserved_ports', 'net.ipv4.tcp_keepalive_time', 'net.ipv4.tcp_fin_timeout',
  'net.ipv4.tcp_keepalive_intvl', 'net.ipv4.tcp_keepalive_probes',
]);
const RESTRICTED_VOLUMES = new Set(['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret']);

/** What the "baseline" Pod Security level refuses in this pod. */
export function baselineViolations(spec: PodSpec): string[] {
  const out: string[] = [];
  if (spec.hostNetwork) out.push('hostNetwork');
  if (spec.hostPID) out.push('hostPID');
  if (spec.hostIPC) out.push('hostIPC');
  for (const v of spec.volumes ?? []) if ('hostPath' in v) out.push(`hostPath volume ${v.name}`);
  for (const sysctl of spec.securityContext?.sysctls ?? []) if (!SAFE_SYSCTLS.has(sysctl.name)) out.push(`sysctl ${sysctl.name}`);
  for (const c of containersOf(spec)) {
    if (c.securityContext?.privileged) out.push(`${c.name}: privileged`);
    for (const cap of c.securityContext?.capabilities?.add ?? []) if (!BASELINE_CAPS.has(cap)) out.push(`${c.name}: adds ${cap}`);
    for (const p of c.ports ?? []) if (p.hostPort) out.push(`${c.name}: hostPort ${p.hostPort}`);
    for (const m of c.volumeMounts ?? []) if (m.mountPropagation && m.mountPropagation !== 'None') out.push(`${c.name}: mountPropagation`);
  }
  return out;
}

/** What the "restricted" Pod Security level refuses in this pod (baseline's rules included). */
export function restrictedViolations(spec: PodSpec): string[] {
  const out = baselineViolations(spec);
  for (const v of spec.volumes ?? []) {
    const type = Object.keys(v).find((k) => k !== 'name');
    if (type && !RESTRICTED_VOLUMES.has(type)) out.push(`volume ${v.name} of type ${type}`);
  }
  const pod = spec.securityContext ?? {};
  for (const c of containersOf(spec)) {
    const sc = c.securityContext ?? {};
    if (sc.allowPrivilegeEscalation !== false) out.push(`${c.name}: allowPrivilegeEscalation is not false`);
    if ((sc.runAsNonRoot ?? pod.runAsNonRoot) !== true) out.push(`${c.name}: runAsNonRoot is not true`);
    if ((sc.runAsUser ?? pod.runAsUser) === 0) out.push(`${c.name}: runAsUser 0`);
    const seccomp = sc.seccompProfile?.type ?? pod.seccompProfile?.type;
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') out.push(`${c.name}: seccompProfile ${seccomp ?? 'unset'}`);
    if (!sc.capabilities?.drop?.includes('ALL')) out.push(`${c.name}: does not drop ALL capabilities`);
    for (const cap of sc.capabilities?.add ?? []) if (cap !== 'NET_BIND_SERVICE') out.push(`${c.name}: adds ${cap}`);
  }
  return out;
}

/** Sample values for the downward API fields the manifests use. */
const FIELD_SAMPLES: Record<string, string> = {
  'spec.nodeName': 'node-1',
  'status.hostIP': '198.18.0.11',
  'status.podIP': '198.18.5.7',
  'metadata.name': 'pod-1',
  'metadata.namespace': 'ns-1',
};

/**
 * The container's environment as its process would see it: downward API fields filled with samples (or `fields`) and
 * `$(NAME)` references to earlier variables expanded, as the kubelet does.
 */
export function resolvedEnv(c: Container, fields: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.valueFrom?.fieldRef) {
      const sample = fields[e.valueFrom.fieldRef.fieldPath] ?? FIELD_SAMPLES[e.valueFrom.fieldRef.fieldPath];
      if (sample === undefined) throw new Error(`${c.name}: no sample for field ${e.valueFrom.fieldRef.fieldPath}`);
      env[e.name] = sample;
    } else {
      env[e.name] = (e.value ?? '').replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, name: string) => env[name] ?? whole);
    }
  }
  return env;
}

/** Variables that are only there to be referenced as $(NAME) by other variables (e.g. NODE_IP). */
export function referenceOnlyEnv(c: Container): Set<string> {
  const referenced = new Set<string>();
  for (const e of c.env ?? []) for (const m of (e.value ?? '').matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) referenced.add(m[1]!);
  return referenced;
}
