import { createHash } from 'node:crypto';
import { z } from 'zod';

/*
 * The two custom resources, as upstream's registry-k8s defines them: group networkservicemesh.io, version v1,
 * namespaced, spec = the registry message with its protobuf (snake_case) field names.
 */

export const GROUP = 'networkservicemesh.io';
export const VERSION = 'v1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export interface ResourceKind {
  kind: 'NetworkService' | 'NetworkServiceEndpoint';
  plural: 'networkservices' | 'networkserviceendpoints';
  /** How messages and logs name one object of this kind. */
  what: string;
}

export const SERVICES: ResourceKind = { kind: 'NetworkService', plural: 'networkservices', what: 'network service' };
export const ENDPOINTS: ResourceKind = {
  kind: 'NetworkServiceEndpoint',
  plural: 'networkserviceendpoints',
  what: 'network service endpoint',
};

/** The parts of an API object this registry reads; everything else the API server adds is carried along untouched. */
export interface ApiObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec?: unknown;
}

const apiObjectSchema = z
  .object({
    apiVersion: z.string().optional(),
    kind: z.string().optional(),
    metadata: z
      .object({
        name: z.string().min(1),
        namespace: z.string().optional(),
        resourceVersion: z.string().optional(),
        labels: z.record(z.string()).optional(),
        annotations: z.record(z.string()).optional(),
      })
      .passthrough(),
    spec: z.unknown().optional(),
  })
  .passthrough();

/** The object's metadata checked, or undefined for something that is not an API object at all. */
export function asApiObject(raw: unknown): ApiObject | undefined {
  const r = apiObjectSchema.safeParse(raw);
  return r.success ? (r.data as ApiObject) : undefined;
}

/** Kubernetes' rule for most object names (IsDNS1123Subdomain). */
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const MAX_OBJECT_NAME_LENGTH = 253;
const HASH_LENGTH = 10;

function isValidObjectName(s: string): boolean {
  return s.length <= MAX_OBJECT_NAME_LENGTH && DNS_SUBDOMAIN.test(s);
}

/**
 * The object name holding the registration `name`. A name Kubernetes accepts is used as is, so objects applied by
 * hand (`metadata.name: icmp-responder`) and objects this registry writes are the same thing. Other NSM names —
 * `icmp@my.cluster2`, `Web_1` — get a readable lowercase form plus a hash of the exact name, so names differing only
 * in case or in a replaced character never share an object; the exact name is kept in `spec.name`.
 */
export function objectNameFor(name: string): string {
  if (isValidObjectName(name)) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, HASH_LENGTH);
  const readable = name
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .split('.')
    .map((label) => label.replace(/^-+|-+$/g, ''))
    .filter((label) => label !== '')
    .join('.')
    .slice(0, MAX_OBJECT_NAME_LENGTH - HASH_LENGTH - 1)
    .replace(/[-.]+$/, '');
  return readable === '' ? `x-${hash}` : `${readable}-${hash}`;
}

/**
 * The registration name an object stands for: `spec.name` when set, else `metadata.name` (objects applied by hand
 * often leave spec.name out). Refused when the object is not where objectNameFor puts that name: two objects
 * claiming one name would make the registry's answer depend on which was read last.
 */
export function registrationNameOf(objectName: string, specName: unknown): { name: string } | { problem: string } {
  if (specName === undefined || specName === null || specName === '') return { name: objectName };
  if (typeof specName !== 'string') return { problem: `spec.name must be a string, got ${typeof specName}` };
  const expected = objectNameFor(specName);
  if (expected !== objectName) {
    return {
      problem:
        `spec.name ${JSON.stringify(specName)} belongs in an object named ${JSON.stringify(expected)}, ` +
        `not ${JSON.stringify(objectName)}; rename the object or drop spec.name`,
    };
  }
  return { name: specName };
}

/*
 * resourceVersions are opaque by contract, but every API server backed by etcd hands out etcd revisions, which are
 * comparable integers. Anything else compares as unknown (both functions say false), and callers then fall back to
 * what the API told them last.
 */
const REVISION = /^\d+$/;

/** Whether resourceVersion `a` is known to be no newer than `b`. */
export function notNewer(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined || b === undefined || !REVISION.test(a) || !REVISION.test(b)) return false;
  return BigInt(a) <= BigInt(b);
}

/** Whether resourceVersion `a` is known to be newer than `b`. */
export function isNewer(a: string | undefined, b: string | undefined): boolean {
  if (a === undefined || b === undefined || !REVISION.test(a) || !REVISION.test(b)) return false;
  return BigInt(a) > BigInt(b);
}
