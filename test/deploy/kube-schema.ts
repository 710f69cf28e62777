/**
 * Validation of built-in Kubernetes objects, as an API server with strict field validation (kubectl's default)
 * would do it, without one:
 *  - kubernetes-models: the Kubernetes OpenAPI schema per apiVersion/kind (types, required fields, enums);
 *  - unknown fields: those schemas allow extra properties, so a misspelt field (`hostNetwrok: true`) would pass.
 *    The typed models of @kubernetes/client-node list every field of every type, which is enough to refuse them.
 */
import * as k8s from '@kubernetes/client-node';
import * as kubernetesModels from 'kubernetes-models';
import type { KubeObject } from './k8s-tools.js';

interface Attribute {
  name: string;
  baseName: string;
  type: string;
}
type ModelClass = { getAttributeTypeMap(): Attribute[] };
interface Validatable {
  validate(): void;
}
type ModelConstructor = new (data: unknown) => Validatable;

const models = k8s as unknown as Record<string, ModelClass | undefined>;

/**
 * kubernetes-models' class for an apiVersion and kind: the core group's v1 is `v1.Pod`, others are
 * `<group in camelCase>.<version>.<Kind>` (rbac.authorization.k8s.io/v1 → rbacAuthorizationK8sIo.v1.Role).
 */
function modelFor(apiVersion: string, kind: string): ModelConstructor | undefined {
  const [group, version] = apiVersion.includes('/') ? (apiVersion.split('/') as [string, string]) : ['', apiVersion];
  const key = group === '' ? version : group.split('.').map((p, i) => (i === 0 ? p : p[0]!.toUpperCase() + p.slice(1))).join('');
  const groupModels = (kubernetesModels as unknown as Record<string, Record<string, unknown> | undefined>)[key];
  const versionModels = (group === '' ? groupModels : groupModels?.[version]) as Record<string, unknown> | undefined;
  return versionModels?.[kind] as ModelConstructor | undefined;
}

/** `V1DaemonSet` for apps/v1 DaemonSet: client-node's class naming. */
function clientNodeClass(apiVersion: string, kind: string): string {
  const version = apiVersion.split('/').pop()!;
  return `${version[0]!.toUpperCase()}${version.slice(1)}${kind}`;
}

export function isBuiltin(o: Pick<KubeObject, 'apiVersion'>): boolean {
  const group = o.apiVersion.includes('/') ? o.apiVersion.split('/')[0]! : '';
  return group === '' || !group.includes('.') || group.endsWith('.k8s.io');
}

function unknownFields(value: unknown, type: string, path: string, out: string[]): void {
  if (value === null || value === undefined) return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, array[1]!, `${path}[${i}]`, out));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (typeof value === 'object') for (const [k, v] of Object.entries(value)) unknownFields(v, map[1]!, `${path}.${k}`, out);
    return;
  }
  const cls = models[type];
  if (!cls || typeof value !== 'object' || Array.isArray(value)) return;
  const attrs = new Map(cls.getAttributeTypeMap().map((a) => [a.baseName, a]));
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    const a = attrs.get(key);
    if (!a) {
      out.push(`${path}.${key}: unknown field (${type} has ${[...attrs.keys()].join(', ')})`);
      continue;
    }
    // A CRD's schema nodes hold further schema nodes under fields the model types as `any`.
    const nested =
      type === 'V1JSONSchemaProps' && (key === 'items' || key === 'additionalProperties') && typeof v === 'object' && !Array.isArray(v)
        ? 'V1JSONSchemaProps'
        : a.type;
    unknownFields(v, nested, `${path}.${key}`, out);
  }
}

/** Every problem the Kubernetes schema finds in a built-in object; empty when it is valid. */
export async function builtinProblems(o: KubeObject): Promise<string[]> {
  const where = `${o.kind} ${o.metadata.namespace ? `${o.metadata.namespace}/` : ''}${o.metadata.name}`;
  const Model = modelFor(o.apiVersion, o.kind);
  if (!Model) return [`${where}: ${o.apiVersion} ${o.kind} is not a Kubernetes kind kubernetes-models knows`];
  const problems: string[] = [];
  try {
    new Model(o).validate();
  } catch (e) {
    problems.push(`${where}: ${(e as Error).message}`);
  }
  const cls = clientNodeClass(o.apiVersion, o.kind);
  if (!models[cls]) return [...problems, `${where}: @kubernetes/client-node has no model ${cls}`];
  const unknown: string[] = [];
  unknownFields(o, cls, '', unknown);
  return [...problems, ...unknown.map((u) => `${where}: ${u.slice(1)}`)];
}
