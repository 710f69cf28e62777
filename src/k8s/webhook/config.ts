/**
 * nsm-webhook's settings (environment, overridden by flags; `nsm-webhook --help` lists them) and their checked,
 * ready-to-use form. Every value is validated at start, so a typo stops the webhook with a message instead of
 * producing pods the API server refuses.
 */
import path from 'node:path';
import { parseSocketUrl } from '../../api/grpc.js';
import { DEFAULT_NSM_SOCKET } from '../../nsmd/config.js';
import { parseLabelList, parseList } from '../../util/labels.js';
import { bool, dur, int, str, type Values } from '../../util/settings.js';
import { checkLabel, parseLabelSelector, type LabelSelector } from './label-selector.js';

export const DEFAULT_NSC_IMAGE = 'ghcr.io/nsmesh/nsmesh:0.1.0';
export const DEFAULT_SPIFFE_SOCKET = 'unix:///run/spire/sockets/agent.sock';
/** The uid of "nonroot" in distroless images; nsc needs no privilege (see inject.ts). */
export const DEFAULT_RUN_AS_USER = 65532;

/*
 * Resource defaults come from measuring nsc on this machine (Node 20): ≈70 MiB RSS and ≈0.55 CPU-seconds from start
 * to its first Request. Upstream's 80Mi limit would leave no headroom, and a CPU limit would stretch that half second
 * of start-up into seconds of pod start delay, so there is none by default.
 */
export const webhookSettings = {
  listenOn: str('NSM_WEBHOOK_LISTEN_ON', 'listen-on', 'tcp://0.0.0.0:8443', 'HTTPS address the API server calls: tcp://host:port'),
  certFile: str('NSM_WEBHOOK_CERT_FILE', 'cert-file', '/etc/nsm-webhook/tls/tls.crt', 'PEM certificate chain of the HTTPS server'),
  keyFile: str('NSM_WEBHOOK_KEY_FILE', 'key-file', '/etc/nsm-webhook/tls/tls.key', 'PEM private key of the HTTPS server'),
  certReloadInterval: dur(
    'NSM_WEBHOOK_CERT_RELOAD_INTERVAL',
    'cert-reload-interval',
    '30s',
    'how often the certificate files are checked for a renewed pair (0: never)',
  ),
  nscImage: str('NSM_WEBHOOK_NSC_IMAGE', 'nsc-image', DEFAULT_NSC_IMAGE, 'image of the injected nsc containers'),
  imagePullPolicy: str('NSM_WEBHOOK_IMAGE_PULL_POLICY', 'image-pull-policy', 'IfNotPresent', 'Always, IfNotPresent or Never'),
  sidecar: bool(
    'NSM_WEBHOOK_SIDECAR',
    'sidecar',
    false,
    "also inject an `nsc --keep-alive` container that refreshes the connections; without it they end when their token expires (nsmd's NSM_MAX_TOKEN_LIFETIME)",
  ),
  nsmSocket: str('NSM_WEBHOOK_NSM_SOCKET', 'nsm-socket', DEFAULT_NSM_SOCKET, "nsmd's local API as the pod sees it; its directory is mounted into the pod"),
  spiffeSocket: str(
    'NSM_WEBHOOK_SPIFFE_SOCKET',
    'spiffe-socket',
    DEFAULT_SPIFFE_SOCKET,
    'SPIFFE Workload API (SPIRE agent) as the pod sees it; its directory is mounted into the pod',
  ),
  nsmSocketCsiDriver: str(
    'NSM_WEBHOOK_NSM_SOCKET_CSI_DRIVER',
    'nsm-socket-csi-driver',
    '',
    "CSI driver that provides nsmd's socket directory; empty: a hostPath volume",
  ),
  spiffeCsiDriver: str(
    'NSM_WEBHOOK_SPIFFE_CSI_DRIVER',
    'spiffe-csi-driver',
    '',
    'CSI driver that provides the Workload API socket directory, e.g. csi.spiffe.io; empty: a hostPath volume',
  ),
  cpuRequest: str('NSM_WEBHOOK_CPU_REQUEST', 'cpu-request', '50m', 'CPU request of each injected container (empty: none)'),
  cpuLimit: str('NSM_WEBHOOK_CPU_LIMIT', 'cpu-limit', '', 'CPU limit of each injected container (empty: none)'),
  memoryRequest: str('NSM_WEBHOOK_MEMORY_REQUEST', 'memory-request', '96Mi', 'memory request of each injected container (empty: none)'),
  memoryLimit: str('NSM_WEBHOOK_MEMORY_LIMIT', 'memory-limit', '192Mi', 'memory limit of each injected container (empty: none)'),
  runAsUser: int(
    'NSM_WEBHOOK_RUN_AS_USER',
    'run-as-user',
    DEFAULT_RUN_AS_USER,
    "uid of the injected containers, which need no privilege (0: the pod's or the image's user; nsmd's socket admits any uid unless nsmd runs with NSM_INSECURE)",
    0,
    2 ** 31 - 1,
  ),
  nscEnv: str('NSM_WEBHOOK_NSC_ENV', 'nsc-env', '', 'extra environment of the injected containers, NAME=value,NAME2=value2'),
  podLabels: str('NSM_WEBHOOK_POD_LABELS', 'pod-labels', '', 'labels added to injected pods, key:value,key2:value2 (e.g. spiffe.io/spiffe-id:true)'),
  excludedNamespaces: str('NSM_WEBHOOK_EXCLUDED_NAMESPACES', 'excluded-namespaces', 'kube-system', 'namespaces whose pods are never injected, comma separated'),
  excludeNamespaceSelector: str(
    'NSM_WEBHOOK_EXCLUDE_NAMESPACE_SELECTOR',
    'exclude-namespace-selector',
    '',
    'label selector of namespaces whose pods are never injected, e.g. nsmesh.io/inject=disabled',
  ),
  namespaceCacheTtl: dur('NSM_WEBHOOK_NAMESPACE_CACHE_TTL', 'namespace-cache-ttl', '5s', 'how long a namespace read from the API server is reused (0: not at all)'),
  apiTimeout: dur('NSM_WEBHOOK_API_TIMEOUT', 'api-timeout', '3s', 'deadline of each API server request'),
  kubeconfig: str('KUBECONFIG', 'kubeconfig', '', 'kubeconfig file to reach the API server; empty: the in-cluster ServiceAccount'),
  logLevel: str('NSM_LOG_LEVEL', 'log-level', 'INFO', 'TRACE, DEBUG, INFO, WARN or ERROR'),
};

export type WebhookValues = Values<typeof webhookSettings>;

export type PullPolicy = 'Always' | 'IfNotPresent' | 'Never';

/** A socket the injected containers reach through a volume mounted at its directory. */
export interface MountedSocket {
  /** unix:///dir/file, as handed to nsc. */
  url: string;
  dir: string;
  /** Empty: a hostPath volume of `dir`. */
  csiDriver: string;
}

export interface InjectionConfig {
  image: string;
  imagePullPolicy: PullPolicy;
  sidecar: boolean;
  nsmSocket: MountedSocket;
  spiffeSocket: MountedSocket;
  requests: Record<string, string>;
  limits: Record<string, string>;
  runAsUser: number;
  extraEnv: Record<string, string>;
  podLabels: Record<string, string>;
}

export interface ExclusionConfig {
  namespaces: ReadonlySet<string>;
  selector?: LabelSelector;
}

/** The environment variables the webhook sets itself; NSM_WEBHOOK_NSC_ENV may not override them. */
export const INJECTED_ENV = ['NSM_NETWORK_SERVICES', 'NSM_NAME', 'POD_NAME', 'NODE_NAME', 'NSM_CONNECT_TO', 'SPIFFE_ENDPOINT_SOCKET'] as const;

const QUANTITY = /^(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
// A reference as `docker pull` takes it: [registry[:port]/]path[:tag][@digest], lower-case path components.
const IMAGE = /^([a-zA-Z0-9.-]+(:\d+)?\/)?[a-z0-9]+([._-]+[a-z0-9]+)*(\/[a-z0-9]+([._-]+[a-z0-9]+)*)*(:[\w][\w.-]{0,127})?(@sha256:[a-f0-9]{64})?$/;

function mountedSocket(setting: string, url: string, csiDriver: string): MountedSocket {
  const addr = parseSocketUrl(url);
  if (addr.kind !== 'unix') throw new Error(`${setting}: "${url}" must be a unix:///path socket: the pod reaches it through a mounted directory`);
  const dir = path.posix.dirname(addr.path!);
  if (dir === '/') throw new Error(`${setting}: "${url}" is in /; the socket needs a directory of its own to be mounted`);
  if (csiDriver && !DNS_SUBDOMAIN.test(csiDriver)) throw new Error(`CSI driver "${csiDriver}" is not a DNS name like csi.spiffe.io`);
  return { url: `unix://${addr.path}`, dir, csiDriver };
}

function resources(v: WebhookValues): Pick<InjectionConfig, 'requests' | 'limits'> {
  const requests: Record<string, string> = {};
  const limits: Record<string, string> = {};
  const put = (to: Record<string, string>, resource: string, env: string, q: string) => {
    if (q === '') return;
    if (!QUANTITY.test(q)) throw new Error(`${env}: "${q}" is not a Kubernetes quantity such as 50m, 0.5, 96Mi or 1Gi`);
    to[resource] = q;
  };
  put(requests, 'cpu', 'NSM_WEBHOOK_CPU_REQUEST', v.cpuRequest);
  put(requests, 'memory', 'NSM_WEBHOOK_MEMORY_REQUEST', v.memoryRequest);
  put(limits, 'cpu', 'NSM_WEBHOOK_CPU_LIMIT', v.cpuLimit);
  put(limits, 'memory', 'NSM_WEBHOOK_MEMORY_LIMIT', v.memoryLimit);
  return { requests, limits };
}

export function injectionConfig(v: WebhookValues): InjectionConfig {
  if (!IMAGE.test(v.nscImage)) throw new Error(`NSM_WEBHOOK_NSC_IMAGE: "${v.nscImage}" is not an image reference like ${DEFAULT_NSC_IMAGE}`);
  if (!['Always', 'IfNotPresent', 'Never'].includes(v.imagePullPolicy)) {
    throw new Error(`NSM_WEBHOOK_IMAGE_PULL_POLICY: "${v.imagePullPolicy}" must be Always, IfNotPresent or Never`);
  }
  const extraEnv = parseLabelList(v.nscEnv);
  for (const name of Object.keys(extraEnv)) {
    if (!ENV_NAME.test(name)) throw new Error(`NSM_WEBHOOK_NSC_ENV: "${name}" is not a valid environment variable name`);
    if ((INJECTED_ENV as readonly string[]).includes(name)) {
      throw new Error(`NSM_WEBHOOK_NSC_ENV: ${name} is set by the webhook itself (${INJECTED_ENV.join(', ')}); use its own setting instead`);
    }
  }
  const podLabels = parseLabelList(v.podLabels);
  for (const [key, value] of Object.entries(podLabels)) checkLabel(key, value, 'NSM_WEBHOOK_POD_LABELS');
  const nsmSocket = mountedSocket('NSM_WEBHOOK_NSM_SOCKET', v.nsmSocket, v.nsmSocketCsiDriver);
  const spiffeSocket = mountedSocket('NSM_WEBHOOK_SPIFFE_SOCKET', v.spiffeSocket, v.spiffeCsiDriver);
  if (nsmSocket.dir === spiffeSocket.dir) {
    throw new Error(`NSM_WEBHOOK_NSM_SOCKET and NSM_WEBHOOK_SPIFFE_SOCKET are both in ${nsmSocket.dir}; each needs a directory of its own (two volumes cannot share a mount path)`);
  }
  return {
    image: v.nscImage,
    imagePullPolicy: v.imagePullPolicy as PullPolicy,
    sidecar: v.sidecar,
    nsmSocket,
    spiffeSocket,
    ...resources(v),
    runAsUser: v.runAsUser,
    extraEnv,
    podLabels,
  };
}

export function exclusionConfig(v: WebhookValues): ExclusionConfig {
  const namespaces = parseList(v.excludedNamespaces);
  for (const ns of namespaces) {
    if (!DNS_LABEL.test(ns)) throw new Error(`NSM_WEBHOOK_EXCLUDED_NAMESPACES: "${ns}" is not a namespace name`);
  }
  const selector = v.excludeNamespaceSelector.trim();
  return { namespaces: new Set(namespaces), ...(selector ? { selector: parseLabelSelector(selector) } : {}) };
}
