/**
 * Which network services a pod asks for: its own annotation, else its namespace's. Values are parsed with the
 * client's own parser (src/client/nsurl.ts), so the webhook refuses exactly what nsc would fail on later —
 * at `kubectl apply` time, with the reason, instead of in an init container's log.
 */
import { ACCEPTED_FORMS, NsUrlError, parseNsUrlList, type NsUrl } from '../../client/nsurl.js';

/** The seed's (and v0.2's) key: a comma list of service[@domain][/ifname][?labels]. */
export const SEED_ANNOTATION = 'ns.networkservicemesh.io';
/** Upstream v1's key: a comma list of kernel://service[@domain][/ifname][?labels]. */
export const V1_ANNOTATION = 'networkservicemesh.io';
export const SERVICE_ANNOTATIONS = [SEED_ANNOTATION, V1_ANNOTATION] as const;

/** Interfaces every pod already has: nsmd would refuse to create a second one with the name. */
const RESERVED_IFNAMES = new Set(['lo', 'eth0']);

export interface RequestedServices {
  /** Where the list came from, for messages and logs: `pod annotation ns.networkservicemesh.io`. */
  source: string;
  /** The annotation's value as written: nsc reads either form, so it is passed on unchanged. */
  value: string;
  services: NsUrl[];
}

/** An annotation the webhook cannot act on; the message says what is wrong and what is accepted. */
export class AnnotationError extends Error {}

/**
 * The requested services, or undefined when neither the pod nor its namespace asks for any. The pod's annotation
 * wins over the namespace's, so one pod can opt for other services than its namespace's default.
 */
export async function requestedServices(
  podAnnotations: Readonly<Record<string, string>>,
  namespaceAnnotations: () => Promise<Readonly<Record<string, string>>>,
): Promise<RequestedServices | undefined> {
  const found = pick(podAnnotations, 'pod') ?? pick(await namespaceAnnotations(), 'namespace');
  return found && parse(found);
}

function pick(annotations: Readonly<Record<string, string>>, owner: string): { source: string; value: string } | undefined {
  const present = SERVICE_ANNOTATIONS.filter((k) => Object.hasOwn(annotations, k));
  if (present.length === 2 && annotations[SEED_ANNOTATION]!.trim() !== annotations[V1_ANNOTATION]!.trim()) {
    throw new AnnotationError(
      `the ${owner} has both ${SEED_ANNOTATION} and ${V1_ANNOTATION} annotations with different values; keep one of them`,
    );
  }
  const key = present[0];
  return key === undefined ? undefined : { source: `${owner} annotation ${key}`, value: annotations[key]!.trim() };
}

function parse({ source, value }: { source: string; value: string }): RequestedServices {
  // Checked here rather than left to parseNsUrlList, whose message speaks of nsc's environment variable.
  if (value.split(',').every((entry) => entry.trim() === '')) {
    throw new AnnotationError(`${source} is empty; write a comma separated list of ${ACCEPTED_FORMS}, or remove the annotation`);
  }
  let services: NsUrl[];
  try {
    services = parseNsUrlList(value);
  } catch (e) {
    if (!(e instanceof NsUrlError)) throw e;
    throw new AnnotationError(`${source}: ${e.message}`);
  }
  const seen = new Set<string>();
  for (const s of services) {
    if (s.ifname === undefined) continue;
    if (RESERVED_IFNAMES.has(s.ifname)) {
      throw new AnnotationError(
        `${source}: interface name "${s.ifname}" is already taken in every pod (the loopback or the primary network); choose another, or leave it out to get a generated one; accepted forms: ${ACCEPTED_FORMS}`,
      );
    }
    if (seen.has(s.ifname)) {
      throw new AnnotationError(`${source}: interface name "${s.ifname}" is asked for twice; give each service its own; accepted forms: ${ACCEPTED_FORMS}`);
    }
    seen.add(s.ifname);
  }
  return { source, value, services };
}
