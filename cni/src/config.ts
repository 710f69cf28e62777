/**
 * The plugin's two inputs, checked at the edge: the CNI_* environment and the network configuration on
 * stdin. Every problem becomes a CNI error with the spec's code and a message naming the field to fix.
 */
import { z } from 'zod';
import { ifnameProblem } from '../../src/api/validate.js';
import { DEFAULT_WORKLOAD_API_SOCKET } from '../../src/identity/workload-client.js';
import { DEFAULT_NSM_SOCKET } from '../../src/nsmd/config.js';
import { parseSocketUrl } from '../../src/api/grpc.js';
import { parseDuration } from '../../src/util/duration.js';
import { normalizeLevel } from '../../src/util/log.js';
import { CniCode, CniError } from './errors.js';
import { checkVersion } from './version.js';

export type Command = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';
const COMMANDS: readonly string[] = ['ADD', 'DEL', 'CHECK', 'VERSION'];

export const DEFAULT_DATA_DIR = '/var/lib/cni/nsm';

/** The spec's rule for container ids and network names. */
const SPEC_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
/** Keeps `cni-<id>-<ifname>-<i>` within nsmd's 253-character connection ids. */
const MAX_CONTAINER_ID = 200;

export interface CniEnv {
  command: Exclude<Command, 'VERSION'>;
  containerId: string;
  /** Absent only on DEL, where the runtime may have lost the namespace already. */
  netns: string | undefined;
  ifname: string;
  /** CNI_ARGS as key → value; unknown keys are ignored, as runtimes pass several (K8S_POD_INFRA_CONTAINER_ID…). */
  args: Map<string, string>;
}

const invalidEnv = (msg: string) => new CniError(CniCode.INVALID_ENV, msg);

/** CNI_COMMAND alone, so that VERSION needs nothing else. */
export function commandOf(env: NodeJS.ProcessEnv): Command {
  const c = env.CNI_COMMAND;
  if (!c) throw invalidEnv('CNI_COMMAND is not set: nsm-cni is a CNI plugin, run by a container runtime with CNI_COMMAND=ADD|DEL|CHECK|VERSION');
  if (!COMMANDS.includes(c)) throw invalidEnv(`CNI_COMMAND "${c}" is not one of ${COMMANDS.join(', ')}`);
  return c as Command;
}

export function parseEnv(command: CniEnv['command'], env: NodeJS.ProcessEnv): CniEnv {
  const containerId = env.CNI_CONTAINERID ?? '';
  if (!containerId) throw invalidEnv('CNI_CONTAINERID is not set');
  if (!SPEC_ID.test(containerId) || containerId.length > MAX_CONTAINER_ID) {
    throw invalidEnv(`CNI_CONTAINERID "${containerId.slice(0, 80)}" must be 1 to ${MAX_CONTAINER_ID} letters, digits, "_", "." or "-", starting with a letter or digit`);
  }
  const ifname = env.CNI_IFNAME ?? '';
  if (!ifname) throw invalidEnv('CNI_IFNAME is not set');
  const problem = ifnameProblem(ifname);
  if (problem) throw invalidEnv(`CNI_IFNAME "${ifname}" is not a valid interface name: ${problem}`);
  const netns = env.CNI_NETNS || undefined;
  if (!netns && command !== 'DEL') throw invalidEnv(`CNI_NETNS is not set: ${command} needs the path of the container's network namespace`);
  if (netns && !netns.startsWith('/')) throw invalidEnv(`CNI_NETNS "${netns}" is not an absolute path (e.g. /var/run/netns/<name> or /proc/<pid>/ns/net)`);
  return { command, containerId, netns, ifname, args: parseCniArgs(env.CNI_ARGS ?? '') };
}

/** `K1=V1;K2=V2`; values may contain "=" (network service URLs carry query strings). */
export function parseCniArgs(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const pair of text.split(';')) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw invalidEnv(`CNI_ARGS entry "${pair}" is not KEY=VALUE (entries are separated by ";")`);
    out.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return out;
}

const duration = (dflt: string) =>
  z
    .string()
    .default(dflt)
    .transform((s, ctx) => {
      try {
        return parseDuration(s);
      } catch (e) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
        return z.NEVER;
      }
    });

/** Turns a checker that throws into zod issues carrying its message. */
function refineWith(check: (s: string) => unknown) {
  return (s: string, ctx: z.RefinementCtx) => {
    try {
      check(s);
    } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
    }
  };
}

const servicesValue = z.union([z.string(), z.array(z.string())]).transform((v) => (Array.isArray(v) ? v.join(',') : v));

/** The part of a previous plugin's result this plugin reads; everything else in it is passed on untouched. */
const prevResultSchema = z
  .object({
    cniVersion: z.string().optional(),
    interfaces: z.array(z.object({ name: z.string(), mac: z.string().optional(), sandbox: z.string().optional() }).passthrough()).optional(),
    ips: z.array(z.object({ address: z.string(), gateway: z.string().optional(), interface: z.number().int().optional() }).passthrough()).optional(),
    routes: z.array(z.object({ dst: z.string(), gw: z.string().optional() }).passthrough()).optional(),
    dns: z.object({}).passthrough().optional(),
  })
  .passthrough();
export type PrevResult = z.infer<typeof prevResultSchema>;

const netConfSchema = z
  .object({
    cniVersion: z.string(),
    name: z.string().regex(SPEC_ID, 'a network name is letters, digits, "_", "." or "-", starting with a letter or digit'),
    type: z.string().min(1),
    /** nsmd's local API on this node. */
    nsmSocket: z.string().default(DEFAULT_NSM_SOCKET).superRefine(refineWith(parseSocketUrl)),
    /** Where the connections of each attachment are remembered between ADD and DEL. */
    dataDir: z.string().startsWith('/', 'dataDir must be an absolute path').default(DEFAULT_DATA_DIR),
    /** Development only: no mutual TLS to nsmd, no path tokens. */
    insecure: z.boolean().default(false),
    /** SPIFFE Workload API giving the plugin its X.509-SVID. */
    spiffeEndpointSocket: z.string().default(DEFAULT_WORKLOAD_API_SOCKET),
    requestTimeout: duration('15s'),
    /** DEL is best effort: a node whose nsmd is gone must not hold up pod deletion. */
    closeTimeout: duration('3s'),
    maxTokenLifetime: duration('10m'),
    logLevel: z.string().default('WARN').superRefine(refineWith(normalizeLevel)),
    /** Kubeconfig to read the pod's annotation with, when neither runtimeConfig nor CNI_ARGS name services. */
    kubeconfig: z.string().optional(),
    runtimeConfig: z.object({ networkServices: servicesValue.optional() }).passthrough().optional(),
    prevResult: prevResultSchema.optional(),
  })
  .passthrough();
export type NetConf = z.infer<typeof netConfSchema>;

/** The version to answer in when the configuration cannot be read far enough to know it. */
export function versionOf(stdin: string): string | undefined {
  try {
    const v = (JSON.parse(stdin) as { cniVersion?: unknown }).cniVersion;
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

export function parseNetConf(stdin: string): NetConf {
  let doc: unknown;
  try {
    doc = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(CniCode.DECODING_FAILURE, `network configuration on stdin is not JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new CniError(CniCode.DECODING_FAILURE, 'network configuration on stdin must be a JSON object');
  }
  const version = (doc as { cniVersion?: unknown }).cniVersion;
  if (version === undefined) throw new CniError(CniCode.INVALID_CONFIG, 'network configuration has no "cniVersion" (e.g. "1.0.0")');
  if (typeof version !== 'string') throw new CniError(CniCode.INVALID_CONFIG, '"cniVersion" must be a string such as "1.0.0"');
  checkVersion(version);
  if ('ipam' in doc) {
    throw new CniError(CniCode.UNSUPPORTED_FIELD, 'nsm-cni takes no "ipam": the addresses of its interfaces come from the network service endpoint');
  }
  const r = netConfSchema.safeParse(doc);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ');
    throw new CniError(CniCode.INVALID_CONFIG, `invalid network configuration: ${issues}`);
  }
  return r.data;
}
