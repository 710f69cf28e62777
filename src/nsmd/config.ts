import os from 'node:os';
import { bool, dur, int, str, type Setting, type Values } from '../util/settings.js';
import { formatFederatesWith, parseFederatesWith, type FederationEntry } from '../identity/federation.js';

export const DEFAULT_NSM_SOCKET = 'unix:///var/lib/networkservicemesh/nsm.io.sock';

const federatesWith: Setting<FederationEntry[]> = {
  env: 'NSM_FEDERATES_WITH',
  flag: 'federates-with',
  description:
    "other domains' trust domains whose SVIDs are accepted, comma separated: TD (bundle from the Workload API's federated bundles) or TD=https://bundle-endpoint (fetched and refreshed here); empty: this trust domain only",
  default: [],
  parse: parseFederatesWith,
  format: formatFederatesWith,
};

/** nsmd's settings, with upstream's environment names where upstream has one. */
export const nsmdSettings = {
  name: str('NSM_NAME', 'name', `nsmd-${os.hostname()}`, 'name of this nsmd: its path segment and registry identity'),
  listenOn: str('NSM_LISTEN_ON', 'listen-on', DEFAULT_NSM_SOCKET, 'local API (clients, endpoints, nsmctl): unix:///path'),
  nodeName: str('NODE_NAME', 'node-name', os.hostname(), 'node name, given to selectors as {{.nodeName}}'),
  clusterName: str('CLUSTER_NAME', 'cluster-name', '', 'cluster name, given to selectors as {{.clusterName}}'),
  logLevel: str('NSM_LOG_LEVEL', 'log-level', 'INFO', 'TRACE, DEBUG, INFO, WARN or ERROR'),
  registryUrl: str('NSM_REGISTRY_URL', 'registry-url', 'embedded', 'registry: "embedded" (in nsmd, persisted in the state directory), etcd://host:port[,host:port...] (shared by several nodes) or k8s://[namespace] (NetworkService/NetworkServiceEndpoint custom resources; namespace default NSM_K8S_NAMESPACE or nsm-system; API from the pod\'s service account or NSM_KUBECONFIG)'),
  stateDir: str('NSM_STATE_DIR', 'state-dir', '/var/lib/networkservicemesh/state', 'where nsmd keeps its registry and connection state (mode 0700)'),
  remoteListenOn: str('NSM_REMOTE_LISTEN_ON', 'remote-listen-on', '', 'remote API for other nodes\' nsmd, mutual TLS: tcp://<node-ip>:5001 (empty: single node)'),
  remoteUrl: str('NSM_REMOTE_URL', 'remote-url', '', 'address other nodes reach this nsmd at (default: the remote listen address)'),
  tunnelIp: str('NSM_TUNNEL_IP', 'tunnel-ip', '', "this node's underlay address for tunnels (default: the host of the remote URL)"),
  mechanismPriority: str('NSM_MECHANISM_PRIORITY', 'mechanism-priority', 'VXLAN,WIREGUARD', 'remote mechanisms this node offers and accepts, most preferred first (VXLAN, WIREGUARD)'),
  wireguardKeyMaxAge: dur('NSM_WIREGUARD_KEY_MAX_AGE', 'wireguard-key-max-age', '1h', 'WireGuard keys older than this are rotated at the connection\'s next refresh (both ends, same device and port)'),
  vxlanPort: int('NSM_VXLAN_PORT', 'vxlan-port', 4789, 'UDP port of VXLAN tunnels', 1, 65535),
  maxTokenLifetime: dur('NSM_MAX_TOKEN_LIFETIME', 'max-token-lifetime', '10m', 'longest a connection lives without a refresh'),
  registryExpiration: dur('NSM_REGISTRY_EXPIRATION', 'registry-expiration', '1m', 'longest an endpoint registration lives without renewal'),
  dialTimeout: dur('NSM_DIAL_TIMEOUT', 'dial-timeout', '1s', 'how long to wait for an endpoint to accept a connection before trying the next'),
  requestTimeout: dur('NSM_REQUEST_TIMEOUT', 'request-timeout', '15s', 'deadline for one Request through the whole chain'),
  mtu: int('NSM_MTU', 'mtu', 1500, 'MTU of local (veth) connections when the client asks for none', 576, 65535),
  statsInterval: dur('NSM_STATS_INTERVAL', 'stats-interval', '0', 'log a "stats" line (memory, connections, event-loop delay) this often; 0 = off'),
  federatesWith,
  dnsServers: str('NSM_DNS_SERVERS', 'dns-servers', '', 'DNS servers for service@domain (ip, ip:port or [v6]:port, comma separated); empty: the nameservers of /etc/resolv.conf'),
  interdomainMechanismPriority: str('NSM_INTERDOMAIN_MECHANISM_PRIORITY', 'interdomain-mechanism-priority', 'WIREGUARD', 'remote mechanisms offered to endpoints of other domains, most preferred first (WIREGUARD, VXLAN)'),
  interdomainLookupTtl: dur('NSM_INTERDOMAIN_LOOKUP_TTL', 'interdomain-lookup-ttl', '5s', "how long Requests reuse another domain's registry answer (0: ask every time; registry Find always asks)"),
  mapIpFile: str('NSM_MAP_IP_FILE', 'map-ip-file', '', "NAT address map: YAML of internal-ip: external-ip, this node's addresses as other domains reach them (upstream's map-ip)"),
  insecure: bool('NSM_INSECURE', 'insecure', false, 'development only: no mutual TLS, no path tokens, no authorization'),
  workloadApi: str('SPIFFE_ENDPOINT_SOCKET', 'spiffe-endpoint-socket', 'unix:///run/spire/sockets/agent.sock', "SPIFFE Workload API that gives nsmd its X.509-SVID (SPIRE agent or nsm-issuer)"),
  authzPolicy: str('NSM_AUTHZ_POLICY', 'authz-policy', '', 'YAML policy: who may request, register, monitor (empty: the defaults)'),
  adminIds: str('NSM_ADMIN_SPIFFE_IDS', 'admin-spiffe-ids', 'spiffe://*/nsmesh/admin/*', 'comma list of SPIFFE ID globs that may see and close every connection and manage every registration'),
  cleanupOnExit: bool('NSM_CLEANUP_ON_EXIT', 'cleanup-on-exit', false, 'close every connection when nsmd stops (otherwise they survive a restart)'),
};

export type NsmdConfig = Values<typeof nsmdSettings>;
