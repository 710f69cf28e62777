/**
 * nsm-cni-refresher's settings, read as the other commands read theirs (environment, then flags). Exported so
 * that deployment manifests can be checked against them.
 */
import { parseSocketUrl } from '../../../src/api/grpc.js';
import { DEFAULT_WORKLOAD_API_SOCKET } from '../../../src/identity/workload-client.js';
import { DEFAULT_NSM_SOCKET } from '../../../src/nsmd/config.js';
import { normalizeLevel } from '../../../src/util/log.js';
import { bool, dur, str, type Setting, type Values } from '../../../src/util/settings.js';
import { DEFAULT_DATA_DIR } from '../config.js';

/** A string setting whose value must pass `check` (which throws with the reason). */
const checked = (s: Setting<string>, check: (v: string) => unknown): Setting<string> => ({
  ...s,
  parse: (t) => {
    check(t);
    return t;
  },
});

export const refresherSettings = {
  dataDir: checked(
    str('NSM_CNI_DATA_DIR', 'data-dir', DEFAULT_DATA_DIR, "nsm-cni's dataDir: the records of the connections to keep alive"),
    (v) => {
      if (!v.startsWith('/')) throw new Error(`"${v}" is not an absolute path`);
    },
  ),
  connectTo: checked(str('NSM_CONNECT_TO', 'connect-to', DEFAULT_NSM_SOCKET, "nsmd's local API on this node (nsm-cni's nsmSocket)"), parseSocketUrl),
  refreshInterval: dur(
    'NSM_REFRESH_INTERVAL',
    'refresh-interval',
    '0',
    'longest time between two refreshes of a connection, 0: a third of --max-token-lifetime; sooner whenever 2/3 of the time left before a recorded expiry would pass first',
  ),
  maxTokenLifetime: dur('NSM_MAX_TOKEN_LIFETIME', 'max-token-lifetime', '10m', "lifetime each refresh asks for; nsmd caps it at its own NSM_MAX_TOKEN_LIFETIME"),
  requestTimeout: dur(
    'NSM_REQUEST_TIMEOUT',
    'request-timeout',
    '10s',
    "deadline of the work on one record (Requests, Closes); keep it below nsm-cni's requestTimeout, which is how long ADD and DEL wait for a record the refresher holds",
  ),
  logLevel: checked(str('NSM_LOG_LEVEL', 'log-level', 'INFO', 'TRACE, DEBUG, INFO, WARN or ERROR'), normalizeLevel),
  insecure: bool('NSM_INSECURE', 'insecure', false, 'development only: no mutual TLS, no path tokens (as nsm-cni\'s "insecure")'),
  workloadApi: str(
    'SPIFFE_ENDPOINT_SOCKET',
    'spiffe-endpoint-socket',
    DEFAULT_WORKLOAD_API_SOCKET,
    "SPIFFE Workload API giving the refresher its X.509-SVID: it must be nsm-cni's identity, which owns the connections",
  ),
};

export type RefresherConfig = Values<typeof refresherSettings>;

/** The interval the settings mean: a third of the asked-for lifetime unless set. */
export function refreshIntervalOf(c: Pick<RefresherConfig, 'refreshInterval' | 'maxTokenLifetime'>): number {
  return c.refreshInterval > 0 ? c.refreshInterval : c.maxTokenLifetime / 3;
}
