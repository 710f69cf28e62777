/**
 * One entry point that validates any rendered object the way a cluster with the mesh's CRDs, cert-manager and
 * spire-controller-manager would: built-in kinds against the Kubernetes schema (unknown fields refused), the mesh's
 * CRDs for structural schemas, their custom resources against those schemas, and third-party resources against
 * the transcribed schemas.
 */
import { CustomResourceSchemas, structuralProblems, type Crd } from './crd-schema.js';
import type { KubeObject } from './k8s-tools.js';
import { builtinProblems, isBuiltin } from './kube-schema.js';
import { ThirdPartySchemas } from './third-party-schemas.js';

export function crdsOf(objects: KubeObject[]): Crd[] {
  return objects.filter((o): o is Crd => o.apiVersion === 'apiextensions.k8s.io/v1' && o.kind === 'CustomResourceDefinition');
}

/** What the API server would refuse in a CRD beyond its own schema: names that disagree, a non-structural schema. */
export function crdProblems(crd: Crd): string[] {
  const out: string[] = [];
  const { group, names, versions } = crd.spec;
  if (crd.metadata.name !== `${names.plural}.${group}`) out.push(`${crd.metadata.name}: name must be ${names.plural}.${group}`);
  const storage = versions.filter((v) => v.storage);
  if (storage.length !== 1) out.push(`${crd.metadata.name}: ${storage.length} storage versions, need exactly one`);
  for (const v of versions) {
    const schema = v.schema?.openAPIV3Schema;
    if (!schema) {
      out.push(`${crd.metadata.name} ${v.name}: no openAPIV3Schema (apiextensions.k8s.io/v1 requires one)`);
      continue;
    }
    out.push(...structuralProblems(schema).map((p) => `${crd.metadata.name} ${v.name}: ${p}`));
  }
  return out;
}

export class ObjectValidator {
  private readonly custom: CustomResourceSchemas;
  private readonly thirdParty = new ThirdPartySchemas();

  constructor(crds: Crd[]) {
    this.custom = new CustomResourceSchemas(crds);
  }

  async problems(o: KubeObject): Promise<string[]> {
    if (isBuiltin(o)) {
      const problems = await builtinProblems(o);
      if (o.kind === 'CustomResourceDefinition') problems.push(...crdProblems(o as Crd));
      return problems;
    }
    if (this.custom.knows(o)) return this.custom.problems(o);
    if (this.thirdParty.knows(o)) return this.thirdParty.problems(o);
    return [`${o.apiVersion} ${o.kind} ${o.metadata.name}: no schema to validate it against`];
  }

  async allProblems(objects: KubeObject[]): Promise<string[]> {
    return (await Promise.all(objects.map((o) => this.problems(o)))).flat();
  }
}
