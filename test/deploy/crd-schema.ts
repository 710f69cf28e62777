/**
 * Custom resources checked against a CustomResourceDefinition's openAPIV3Schema the way the API server treats
 * them: the schema must be structural (or the API server refuses the CRD), and an object is valid when ajv accepts
 * it under the schema with Kubernetes' extensions applied — `nullable`, `x-kubernetes-int-or-string`, and unknown
 * fields refused wherever `x-kubernetes-preserve-unknown-fields` does not keep them (strict field validation,
 * kubectl's default).
 */
import { Ajv, type ValidateFunction } from 'ajv';
import type { KubeObject } from './k8s-tools.js';

export type OpenApiSchema = Record<string, unknown> & {
  type?: string;
  properties?: Record<string, OpenApiSchema>;
  additionalProperties?: OpenApiSchema | boolean;
  items?: OpenApiSchema | OpenApiSchema[];
  nullable?: boolean;
  enum?: unknown[];
};

interface CrdVersion {
  name: string;
  served: boolean;
  storage: boolean;
  schema?: { openAPIV3Schema?: OpenApiSchema };
}
export interface Crd extends KubeObject {
  spec: {
    group: string;
    scope: 'Namespaced' | 'Cluster';
    names: { kind: string; plural: string };
    versions: CrdVersion[];
  };
}

const PRESERVE = 'x-kubernetes-preserve-unknown-fields';
const INT_OR_STRING = 'x-kubernetes-int-or-string';
// Value validations the API server allows inside anyOf/allOf/oneOf/not (no types, no defaults, no descriptions).
const JUNCTORS = ['anyOf', 'allOf', 'oneOf', 'not'];
const ANNOTATIONS = new Set(['description', 'example', 'externalDocs', 'title', 'default']);

/**
 * Why the API server would refuse this schema as non-structural (apiextensions.k8s.io/v1 requires structural
 * schemas): a node without a type, properties beside additionalProperties, additionalProperties: false (pruning
 * does that job), a list of item schemas, or types inside a junctor.
 */
export function structuralProblems(s: OpenApiSchema, path = 'openAPIV3Schema'): string[] {
  const out: string[] = [];
  if (path === 'openAPIV3Schema' && s.type !== 'object') out.push(`${path}: the root must be type: object`);
  if (!s.type && !s[INT_OR_STRING] && !s[PRESERVE]) out.push(`${path}: no type (and neither ${INT_OR_STRING} nor ${PRESERVE})`);
  if (s.properties && s.additionalProperties !== undefined) out.push(`${path}: properties and additionalProperties are mutually exclusive`);
  if (s.additionalProperties === false) out.push(`${path}: additionalProperties: false is not allowed (unknown fields are pruned)`);
  if (Array.isArray(s.items)) out.push(`${path}: items must be one schema, not a list`);
  if (s.type === 'array' && !s.items) out.push(`${path}: an array needs an items schema`);
  for (const [k, v] of Object.entries(s.properties ?? {})) out.push(...structuralProblems(v, `${path}.properties.${k}`));
  if (typeof s.additionalProperties === 'object') out.push(...structuralProblems(s.additionalProperties, `${path}.additionalProperties`));
  if (s.items && !Array.isArray(s.items)) out.push(...structuralProblems(s.items, `${path}.items`));
  for (const j of JUNCTORS) {
    const list = s[j] === undefined ? [] : Array.isArray(s[j]) ? (s[j] as OpenApiSchema[]) : [s[j] as OpenApiSchema];
    for (const sub of list) {
      for (const forbidden of ['type', 'additionalProperties', 'description', 'default', 'nullable', PRESERVE]) {
        if (sub[forbidden] !== undefined) out.push(`${path}.${j}: ${forbidden} is not allowed inside ${j}`);
      }
    }
  }
  // Under the root, metadata may only constrain name and generateName.
  if (path === 'openAPIV3Schema') {
    const meta = s.properties?.metadata;
    const extra = Object.keys(meta?.properties ?? {}).filter((k) => k !== 'name' && k !== 'generateName');
    if (extra.length > 0) out.push(`${path}.properties.metadata: only name and generateName may be constrained, not ${extra.join(', ')}`);
  }
  return out;
}

/** The same schema in plain JSON Schema, with Kubernetes' extensions turned into what they mean. */
export function toJsonSchema(s: OpenApiSchema): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) {
    if (k.startsWith('x-kubernetes-') || k === 'nullable' || ANNOTATIONS.has(k)) continue;
    if (k === 'properties') {
      out.properties = Object.fromEntries(Object.entries(v as Record<string, OpenApiSchema>).map(([p, ps]) => [p, toJsonSchema(ps)]));
    } else if ((k === 'additionalProperties' || k === 'items' || k === 'not') && typeof v === 'object') {
      out[k] = toJsonSchema(v as OpenApiSchema);
    } else if (k === 'anyOf' || k === 'allOf' || k === 'oneOf') {
      out[k] = (v as OpenApiSchema[]).map(toJsonSchema);
    } else {
      out[k] = v;
    }
  }
  if (s[INT_OR_STRING]) out.anyOf = [{ type: 'integer' }, { type: 'string' }];
  if (s.nullable && s.type) {
    out.type = [s.type, 'null'];
    if (s.enum) out.enum = [...s.enum, null];
  }
  if (s.type === 'object' && s.properties && s.additionalProperties === undefined && !s[PRESERVE]) out.additionalProperties = false;
  return out;
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/i;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export function newAjv(): Ajv {
  // strict: false because Kubernetes schemas carry keywords JSON Schema does not define (stripped above, but
  // third-party schemas keep `format`s ajv does not know); every format this project uses is defined here.
  return new Ajv({
    allErrors: true,
    strict: false,
    formats: { 'date-time': (v: string) => RFC3339.test(v) && !Number.isNaN(Date.parse(v)) },
  });
}

/** Validators for every served version of the given CRDs, keyed "group/version Kind". */
export class CustomResourceSchemas {
  private readonly validators = new Map<string, { crd: Crd; validate: ValidateFunction }>();

  constructor(crds: Crd[]) {
    const ajv = newAjv();
    for (const crd of crds) {
      for (const v of crd.spec.versions) {
        if (!v.served || !v.schema?.openAPIV3Schema) continue;
        this.validators.set(`${crd.spec.group}/${v.name} ${crd.spec.names.kind}`, {
          crd,
          validate: ajv.compile(toJsonSchema(v.schema.openAPIV3Schema)),
        });
      }
    }
  }

  knows(o: Pick<KubeObject, 'apiVersion' | 'kind'>): boolean {
    return this.validators.has(`${o.apiVersion} ${o.kind}`);
  }

  /** Problems with `o` under its CRD (schema, scope, name); empty when the API server would accept it. */
  problems(o: KubeObject): string[] {
    const where = `${o.kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
    const entry = this.validators.get(`${o.apiVersion} ${o.kind}`);
    if (!entry) return [`${where}: no CRD serves ${o.apiVersion} ${o.kind}`];
    const out: string[] = [];
    if (!DNS_SUBDOMAIN.test(o.metadata.name) || o.metadata.name.length > 253) out.push(`${where}: metadata.name is not a DNS subdomain`);
    if (entry.crd.spec.scope === 'Cluster' && o.metadata.namespace) out.push(`${where}: ${o.kind} is cluster-scoped but has a namespace`);
    if (!entry.validate(o)) {
      for (const e of entry.validate.errors ?? []) {
        const extra = e.keyword === 'additionalProperties' ? ` "${String(e.params.additionalProperty)}"` : '';
        out.push(`${where}: ${e.instancePath || '/'} ${e.message ?? e.keyword}${extra}`);
      }
    }
    return out;
  }
}
