import { z } from 'zod';
import type { Destination, Match, NetworkService } from '../api/types.js';

/*
 * Zod schemas for the three accepted NetworkService YAML forms. Each schema validates and converts straight to the
 * registry.NetworkService message shape. Leaf checks are hand-written so every message says what is accepted.
 */

export const API_VERSION_V1 = 'networkservicemesh.io/v1';
export const API_VERSION_V1ALPHA1 = 'networkservicemesh.io/v1alpha1';
export const KIND = 'NetworkService';
export const PAYLOADS = ['IP', 'ETHERNET'] as const;
/**
 * Upstream leaves payload empty when unset. Our data plane carries IP (L3) only, and the talk's examples say IP,
 * so a missing payload means IP.
 */
export const DEFAULT_PAYLOAD = 'IP';
/** The Kubernetes label-value limit; selector values, templates included, are held to it. */
export const MAX_LABEL_VALUE_LENGTH = 63;
/** Label keys follow Kubernetes qualified names: an optional DNS prefix (≤253) and '/', then a name (≤63). */
export const MAX_LABEL_KEY_NAME_LENGTH = 63;
export const MAX_NAME_LENGTH = 253;
export const MAX_WEIGHT = 2 ** 32 - 1;

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_KEY_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

class Problem {
  constructor(readonly message: string) {}
}

/** YAML words for what was found, so messages speak the user's language rather than JavaScript's. */
export function describe(v: unknown): string {
  if (v === undefined) return 'nothing (the field is missing)';
  if (v === null) return 'an empty value';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  return `the ${typeof v} ${String(v)}`;
}

function leaf<T>(check: (v: unknown) => T | Problem): z.ZodType<T, z.ZodTypeDef, unknown> {
  return z.unknown().transform((v, ctx) => {
    const r = check(v);
    if (r instanceof Problem) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: r.message });
      return z.NEVER;
    }
    return r;
  });
}

function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const nameSchema = leaf((v) => {
  const accepted =
    `expected a DNS-1123 name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, ` +
    `at most ${MAX_NAME_LENGTH} characters), optionally followed by @domain`;
  if (typeof v !== 'string') return new Problem(`${accepted}; got ${describe(v)}`);
  const at = v.indexOf('@');
  const parts = at === -1 ? [v] : [v.slice(0, at), v.slice(at + 1)];
  const ok = parts.every((p) => p.length <= MAX_NAME_LENGTH && DNS_SUBDOMAIN.test(p));
  return ok ? v : new Problem(`${accepted}; got ${JSON.stringify(v)}`);
});

const payloadSchema = leaf((v) => {
  if (v === undefined || v === null) return DEFAULT_PAYLOAD;
  if (typeof v === 'string' && (PAYLOADS as readonly string[]).includes(v)) return v;
  return new Problem(`expected ${PAYLOADS.join(' or ')} (or leave it out for ${DEFAULT_PAYLOAD}); got ${describe(v)}`);
});

function labelKeyProblem(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const prefix = slash === -1 ? undefined : key.slice(0, slash);
  const name = slash === -1 ? key : key.slice(slash + 1);
  if (prefix !== undefined && !(prefix.length <= MAX_NAME_LENGTH && DNS_SUBDOMAIN.test(prefix))) {
    return `label key prefix ${JSON.stringify(prefix)} must be a DNS-1123 subdomain`;
  }
  if (name.length === 0 || name.length > MAX_LABEL_KEY_NAME_LENGTH || !LABEL_KEY_NAME.test(name)) {
    return (
      `label key ${JSON.stringify(key)} is not a valid key: expected [prefix/]name where name is 1-` +
      `${MAX_LABEL_KEY_NAME_LENGTH} letters, digits, '-', '_' or '.', starting and ending with a letter or digit`
    );
  }
  return undefined;
}

/** map<string,string>; an empty or missing map is {}, as proto3 decodes it. */
const labelMap = z.unknown().transform((v, ctx): Record<string, string> => {
  if (v === undefined || v === null) return {};
  if (!isMapping(v)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `expected a map of string to string, got ${describe(v)}` });
    return z.NEVER;
  }
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(v)) {
    const keyProblem = labelKeyProblem(key);
    if (keyProblem) ctx.addIssue({ code: z.ZodIssueCode.custom, path: [key], message: keyProblem });
    if (typeof value !== 'string') {
      const quoteHint =
        typeof value === 'number' || typeof value === 'boolean' ? ` (quote it: "${String(value)}")` : '';
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: [key],
        message: `expected a string value, got ${describe(value)}${quoteHint}`,
      });
    } else if (value.length > MAX_LABEL_VALUE_LENGTH) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: [key],
        message: `label value is ${value.length} characters; at most ${MAX_LABEL_VALUE_LENGTH} are accepted`,
      });
    } else {
      out[key] = value;
    }
  }
  return out;
});

const weightSchema = leaf((v) => {
  if (v === undefined || v === null) return 0;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= MAX_WEIGHT) return v;
  return new Problem(`expected a whole number from 0 to ${MAX_WEIGHT}; got ${describe(v)}`);
});

const booleanSchema = leaf((v) => {
  if (v === undefined || v === null) return false;
  if (typeof v === 'boolean') return v;
  return new Problem(`expected true or false; got ${describe(v)}`);
});

/** A key that v0.2 YAML carried for readability only (`- match:` / `- destination:`), ignored by upstream too. */
const ignoredNote = leaf((v) => {
  if (v === undefined || v === null || typeof v === 'string') return undefined;
  return new Problem(`expected an empty value or a string (it is ignored); got ${describe(v)}`);
});

function literal<T extends string>(value: T, otherwise: string) {
  return leaf((v) =>
    v === value ? value : new Problem(`expected ${JSON.stringify(value)}${otherwise}; got ${describe(v)}`),
  );
}

function snakeToCamel(s: string): string {
  return s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}
function camelToSnake(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** Suggests the accepted key a typo most likely meant: the other case style, or route/routes. */
function hintFor(key: string, accepted: readonly string[]): string {
  const singularPlural = key.endsWith('s') ? key.slice(0, -1) : `${key}s`;
  const guess = [snakeToCamel(key), camelToSnake(key), singularPlural].find((g) => g !== key && accepted.includes(g));
  if (!guess) return '';
  const style =
    guess.includes('_') || key.includes('_')
      ? ` (${API_VERSION_V1} uses snake_case keys; ${API_VERSION_V1ALPHA1} uses camelCase and "route")`
      : '';
  return `; did you mean "${guess}"?${style}`;
}

/** An object that rejects unknown keys, naming the accepted ones; nothing is silently dropped. */
function strictObject<S extends z.ZodRawShape>(shape: S, what: string) {
  const accepted = Object.keys(shape);
  return z
    .object(shape, {
      errorMap: (issue, ctx) => {
        if (issue.code === z.ZodIssueCode.invalid_type) {
          return { message: `expected ${what} (a mapping with ${accepted.join(', ')}), got ${describe(ctx.data)}` };
        }
        if (issue.code === z.ZodIssueCode.unrecognized_keys) {
          const keys = issue.keys.map((k) => JSON.stringify(k)).join(', ');
          const hint = issue.keys.length === 1 ? hintFor(issue.keys[0]!, accepted) : '';
          return { message: `unknown field ${keys} in ${what}; accepted: ${accepted.join(', ')}${hint}` };
        }
        return { message: ctx.defaultError };
      },
    })
    .strict();
}

/** A list; an empty or missing list is [], as proto3 decodes it. */
function list<T extends z.ZodTypeAny>(item: T, what: string) {
  return z
    .array(item, { errorMap: (_issue, ctx) => ({ message: `expected a list of ${what}, got ${describe(ctx.data)}` }) })
    .nullish()
    .transform((v): z.output<T>[] => v ?? []);
}

// ---- v1 (networkservicemesh.io/v1 CRD spec and the bare form): snake_case proto names ----

const v1Destination = strictObject(
  { destination_selector: labelMap, weight: weightSchema },
  'a route (destination)',
).transform((d): Destination => ({ destination_selector: d.destination_selector, weight: d.weight }));

const v1Metadata = strictObject({ labels: labelMap }, 'match metadata')
  .nullish()
  // Presence matters: a match with metadata and no routes accepts any endpoint, so null stays null.
  .transform((m) => (m ? { labels: m.labels } : null));

const v1Match = strictObject(
  {
    source_selector: labelMap,
    routes: list(v1Destination, 'routes'),
    fallthrough: booleanSchema,
    metadata: v1Metadata,
  },
  'a match',
).transform(
  (m): Match => ({
    source_selector: m.source_selector,
    routes: m.routes,
    fallthrough: m.fallthrough,
    metadata: m.metadata,
  }),
);

/** registry-k8s stores the whole registry.NetworkService as the spec, so a spec may repeat the name. */
const specName = leaf((v) => {
  if (v === undefined || v === null) return undefined;
  return typeof v === 'string' ? v : new Problem(`expected a string; got ${describe(v)}`);
});

const v1Spec = strictObject(
  { name: specName, payload: payloadSchema, matches: list(v1Match, 'matches') },
  'a NetworkService spec',
);

const k8sMetadata = z
  .object(
    { name: nameSchema },
    {
      errorMap: (issue, ctx) =>
        issue.code === z.ZodIssueCode.invalid_type
          ? { message: `expected object metadata (a mapping with name), got ${describe(ctx.data)}` }
          : { message: ctx.defaultError },
    },
  )
  // Kubernetes metadata carries namespace, labels, annotations and more; none of it matters here.
  .passthrough();

const apiVersionOtherwise = ` or ${JSON.stringify(API_VERSION_V1ALPHA1)}`;

export const v1Document = strictObject(
  {
    apiVersion: literal(API_VERSION_V1, apiVersionOtherwise),
    kind: literal(KIND, ''),
    metadata: k8sMetadata,
    spec: v1Spec.nullish(),
    status: z.unknown(),
  },
  'a NetworkService object',
)
  .superRefine((d, ctx) => {
    const name = d.spec?.name;
    if (name !== undefined && name !== '' && name !== d.metadata.name) {
      const expected = JSON.stringify(d.metadata.name);
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['spec', 'name'],
        message: `must equal metadata.name ${expected} or be left out; got ${JSON.stringify(name)}`,
      });
    }
  })
  .transform(
    (d): NetworkService => ({
      name: d.metadata.name,
      payload: d.spec?.payload ?? DEFAULT_PAYLOAD,
      matches: d.spec?.matches ?? [],
      path_ids: [],
    }),
  );

export const bareDocument = strictObject(
  { name: nameSchema, payload: payloadSchema, matches: list(v1Match, 'matches') },
  'a NetworkService',
).transform((d): NetworkService => ({ name: d.name, payload: d.payload, matches: d.matches, path_ids: [] }));

// ---- v0.2 (networkservicemesh.io/v1alpha1): camelCase, `route` in the singular ----

const v02Destination = strictObject(
  { destination: ignoredNote, destinationSelector: labelMap, weight: weightSchema },
  'a route (destination)',
).transform((d): Destination => ({ destination_selector: d.destinationSelector, weight: d.weight }));

const v02Match = strictObject(
  { match: ignoredNote, sourceSelector: labelMap, route: list(v02Destination, 'routes') },
  'a match',
).transform(
  (m): Match => ({
    source_selector: m.sourceSelector,
    routes: m.route,
    // v0.2 had no fallthrough flag and always moved on to the next match when no endpoint fitted.
    fallthrough: true,
    metadata: null,
  }),
);

const v02Spec = strictObject({ payload: payloadSchema, matches: list(v02Match, 'matches') }, 'a NetworkService spec');

export const v1alpha1Document = strictObject(
  {
    apiVersion: literal(API_VERSION_V1ALPHA1, ` or ${JSON.stringify(API_VERSION_V1)}`),
    kind: literal(KIND, ''),
    metadata: k8sMetadata,
    spec: v02Spec.nullish(),
    status: z.unknown(),
  },
  'a NetworkService object',
).transform(
  (d): NetworkService => ({
    name: d.metadata.name,
    payload: d.spec?.payload ?? DEFAULT_PAYLOAD,
    matches: d.spec?.matches ?? [],
    path_ids: [],
  }),
);
