import { DEFAULT_NSM_SOCKET } from '../nsmd/config.js';
import { parseLabelList, parseList } from '../util/labels.js';
import { bool, dur, str, type Setting, type Values } from '../util/settings.js';
import type { Transport } from '../identity/transport.js';
import type { EndpointOptions } from './endpoint.js';
import { validateLabels } from '../api/validate.js';

/** A `key:value,key2:value2` setting, checked as request labels are. */
export const labelsSetting = (env: string, flag: string, description: string): Setting<Record<string, string>> => ({
  env, flag, description, default: {},
  parse: (t) => {
    const l = parseLabelList(t);
    validateLabels(l, env);
    return l;
  },
  format: (v) => Object.entries(v).map(([k, x]) => `${k}:${x}`).join(','),
});
/** A comma-separated list setting. */
export const listSetting = (env: string, flag: string, def: string[], description: string): Setting<string[]> => ({
  env, flag, description, default: def, parse: parseList, format: (v) => v.join(','),
});

/** Settings every endpoint built on the SDK understands, with upstream's environment names. */
export const endpointSettings = {
  name: str('NSM_NAME', 'name', 'icmp-responder', 'endpoint name (registry name and path segment)'),
  connectTo: str('NSM_CONNECT_TO', 'connect-to', DEFAULT_NSM_SOCKET, "nsmd's local API"),
  listenOn: str('NSM_LISTEN_ON', 'listen-on', '', "where the endpoint serves (default: nse/<name>.sock beside nsmd's socket)"),
  serviceNames: listSetting('NSM_SERVICE_NAMES', 'service-names', ['icmp-responder'], 'network services served, comma separated'),
  labels: labelsSetting('NSM_LABELS', 'labels', 'labels for destination selectors, key:value,key2:value2'),
  cidrPrefix: listSetting('NSM_CIDR_PREFIX', 'cidr-prefix', ['169.254.0.0/16'], 'prefixes for point-to-point addresses, comma separated (v4 and/or v6)'),
  payload: str('NSM_PAYLOAD', 'payload', 'IP', 'payload of services this endpoint registers when they do not exist yet'),
  logLevel: str('NSM_LOG_LEVEL', 'log-level', 'INFO', 'TRACE, DEBUG, INFO, WARN or ERROR'),
  insecure: bool('NSM_INSECURE', 'insecure', false, 'development only: no mutual TLS, no path tokens'),
  workloadApi: str('SPIFFE_ENDPOINT_SOCKET', 'spiffe-endpoint-socket', 'unix:///run/spire/sockets/agent.sock', 'SPIFFE Workload API giving this endpoint its X.509-SVID'),
  maxTokenLifetime: dur('NSM_MAX_TOKEN_LIFETIME', 'max-token-lifetime', '10m', 'longest a connection lives without a refresh'),
};

/** The same setting with another default, for endpoints whose defaults differ (given as the environment would spell it). */
export const withDefault = <T>(s: Setting<T>, text: string): Setting<T> => ({ ...s, default: s.parse(text) });

/** The startEndpoint options every SDK endpoint takes from its settings; add your own elements and overrides. */
export function endpointOptionsFrom(v: Values<typeof endpointSettings>, transport: Transport) {
  return {
    transport,
    name: v.name,
    serviceNames: v.serviceNames,
    labels: v.labels,
    connectTo: v.connectTo,
    ...(v.listenOn ? { listenOn: v.listenOn } : {}),
    cidrPrefixes: v.cidrPrefix,
    maxLifetimeMs: v.maxTokenLifetime,
    registerServices: { payload: v.payload },
  } satisfies Partial<EndpointOptions>;
}
