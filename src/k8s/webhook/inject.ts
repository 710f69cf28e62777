/**
 * What the webhook adds to a pod that asks for network services, as JSON Patch operations against the pod
 * exactly as the API server sent it.
 *
 * - `nsc`, the first init container: requests every service into the pod's network namespace and exits, so the
 *   interfaces exist before any other init container or the application starts.
 * - with the sidecar configured, `nsc-keep-alive` right after it: `nsc --keep-alive` with the same NSM_NAME, so its
 *   Requests are refreshes of the init container's connections (same ids), kept alive for the pod's life and closed
 *   when it stops. It is a native sidecar (an init container with restartPolicy Always, Kubernetes ≥ 1.29): unlike a
 *   regular container it does not keep a Job's pod running forever, and it is stopped only after the application.
 * - the volumes holding nsmd's socket and the SPIFFE Workload API socket, read-only.
 * - the annotation that marks the pod as injected, and the configured pod labels.
 */
import type { V1Container, V1EnvVar, V1SecurityContext, V1Volume } from '@kubernetes/client-node';
import type { InjectionConfig, MountedSocket } from './config.js';
import { addToArray, addToMap, type AddOperation } from './json-patch.js';

/** Set on every pod the webhook has patched: a second review of it (reinvocation, a re-created copy) changes nothing. */
export const INJECTED_ANNOTATION = 'nsmesh.io/injected';
export const INIT_CONTAINER_NAME = 'nsc';
export const SIDECAR_NAME = 'nsc-keep-alive';
export const NSM_SOCKET_VOLUME = 'nsmesh-nsm-socket';
export const SPIFFE_SOCKET_VOLUME = 'nsmesh-spiffe-socket';

/** The parts of a Pod the injection reads; everything else passes through untouched. */
export interface PodShape {
  metadata: { annotations?: Record<string, string>; labels?: Record<string, string> };
  spec: {
    containers: { name: string }[];
    initContainers?: { name: string }[];
    volumes?: { name: string }[];
  };
}

export class InjectionConflict extends Error {}

function env(services: string, cfg: InjectionConfig): V1EnvVar[] {
  const field = (fieldPath: string) => ({ valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath } } });
  return [
    { name: 'NSM_NETWORK_SERVICES', value: services },
    // The pod's final name (generateName is resolved after admission): connection ids are <NSM_NAME>-<i>.
    { name: 'NSM_NAME', ...field('metadata.name') },
    { name: 'POD_NAME', ...field('metadata.name') },
    { name: 'NODE_NAME', ...field('spec.nodeName') },
    { name: 'NSM_CONNECT_TO', value: cfg.nsmSocket.url },
    { name: 'SPIFFE_ENDPOINT_SOCKET', value: cfg.spiffeSocket.url },
    ...Object.entries(cfg.extraEnv).map(([name, value]) => ({ name, value })),
  ];
}

/**
 * nsc does no kernel work: it sends its network namespace's inode to nsmd over the unix socket, and nsmd (on the
 * node, with NET_ADMIN there) creates each interface directly inside the pod's namespace. So nsc needs no
 * capability at all, not even NET_ADMIN, and runs as a non-root user on a read-only root filesystem.
 */
function securityContext(cfg: InjectionConfig): V1SecurityContext {
  return {
    ...(cfg.runAsUser !== 0 ? { runAsUser: cfg.runAsUser, runAsNonRoot: true } : {}),
    allowPrivilegeEscalation: false,
    capabilities: { drop: ['ALL'] },
    readOnlyRootFilesystem: true,
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

function container(name: string, services: string, cfg: InjectionConfig, keepAlive: boolean): V1Container {
  const resources = {
    ...(Object.keys(cfg.requests).length ? { requests: cfg.requests } : {}),
    ...(Object.keys(cfg.limits).length ? { limits: cfg.limits } : {}),
  };
  return {
    name,
    image: cfg.image,
    imagePullPolicy: cfg.imagePullPolicy,
    command: ['nsc'],
    ...(keepAlive ? { args: ['--keep-alive'], restartPolicy: 'Always' } : {}),
    env: env(services, cfg),
    volumeMounts: [
      { name: NSM_SOCKET_VOLUME, mountPath: cfg.nsmSocket.dir, readOnly: true },
      { name: SPIFFE_SOCKET_VOLUME, mountPath: cfg.spiffeSocket.dir, readOnly: true },
    ],
    ...(Object.keys(resources).length ? { resources } : {}),
    securityContext: securityContext(cfg),
    // nsc's last words (why a Request failed) then show in `kubectl describe pod`, not only in its log.
    terminationMessagePolicy: 'FallbackToLogsOnError',
  };
}

function volume(name: string, socket: MountedSocket): V1Volume {
  return socket.csiDriver
    ? { name, csi: { driver: socket.csiDriver, readOnly: true } }
    : // Directory, not DirectoryOrCreate: on a node without nsmd (or the SPIRE agent) the pod waits with a clear
      // event instead of starting against an empty directory the kubelet made.
      { name, hostPath: { path: socket.dir, type: 'Directory' } };
}

/** Refuses pods that already use a name the injection needs: the API server would refuse the patched pod less clearly. */
function checkNames(pod: PodShape, cfg: InjectionConfig): void {
  const containers = new Set([...pod.spec.containers, ...(pod.spec.initContainers ?? [])].map((c) => c.name));
  const wanted = cfg.sidecar ? [INIT_CONTAINER_NAME, SIDECAR_NAME] : [INIT_CONTAINER_NAME];
  for (const name of wanted) {
    if (containers.has(name)) {
      throw new InjectionConflict(
        `the pod already has a container named "${name}", which nsm-webhook injects; rename it, or if it is an nsc you added yourself, drop the network service annotation`,
      );
    }
  }
  const volumes = new Set((pod.spec.volumes ?? []).map((v) => v.name));
  for (const name of [NSM_SOCKET_VOLUME, SPIFFE_SOCKET_VOLUME]) {
    if (volumes.has(name)) throw new InjectionConflict(`the pod already has a volume named "${name}", which nsm-webhook injects; rename it`);
  }
}

export function injectionPatch(pod: PodShape, services: string, cfg: InjectionConfig): AddOperation[] {
  checkNames(pod, cfg);
  const initContainers = [container(INIT_CONTAINER_NAME, services, cfg, false)];
  if (cfg.sidecar) initContainers.push(container(SIDECAR_NAME, services, cfg, true));
  return [
    ...addToMap(pod.metadata.annotations, ['metadata', 'annotations'], { [INJECTED_ANNOTATION]: 'true' }),
    ...addToMap(pod.metadata.labels, ['metadata', 'labels'], cfg.podLabels),
    // First, so that the pod's own init containers already see the interfaces.
    ...addToArray(pod.spec.initContainers, ['spec', 'initContainers'], initContainers, 0),
    ...addToArray(pod.spec.volumes, ['spec', 'volumes'], [volume(NSM_SOCKET_VOLUME, cfg.nsmSocket), volume(SPIFFE_SOCKET_VOLUME, cfg.spiffeSocket)]),
  ];
}
