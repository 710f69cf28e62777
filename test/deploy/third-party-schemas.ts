/**
 * Schemas of the third-party custom resources the chart renders: cert-manager's Issuer and Certificate
 * (cert-manager.io/v1) and spire-controller-manager's ClusterSPIFFEID (spire.spiffe.io/v1alpha1). Their CRDs are
 * not available here, so these are transcribed by hand from the projects' published field lists — only the fields
 * those APIs define, unknown fields refused — and are a check of spelling, types and required fields, not a copy
 * of the real CRDs.
 */
import type { ValidateFunction } from 'ajv';
import { newAjv } from './crd-schema.js';
import type { KubeObject } from './k8s-tools.js';

type Schema = Record<string, unknown>;

const str: Schema = { type: 'string' };
const strings: Schema = { type: 'array', items: str };
const bool: Schema = { type: 'boolean' };
/** A Go time.Duration / metav1.Duration string: 1h, 90m, 2160h0m0s. */
const duration: Schema = { type: 'string', pattern: '^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$' };

function object(properties: Record<string, Schema>, required: string[] = []): Schema {
  return { type: 'object', properties, required, additionalProperties: false };
}

const labelSelector = object({
  matchLabels: { type: 'object', additionalProperties: str },
  matchExpressions: {
    type: 'array',
    items: object(
      { key: str, operator: { enum: ['In', 'NotIn', 'Exists', 'DoesNotExist'] }, values: strings },
      ['key', 'operator'],
    ),
  },
});

const metadata: Schema = { type: 'object', required: ['name'] };

function resource(apiVersion: string, kind: string, spec: Schema, namespaced: boolean): Schema {
  return {
    type: 'object',
    properties: {
      apiVersion: { const: apiVersion },
      kind: { const: kind },
      metadata: namespaced ? { ...metadata, required: ['name', 'namespace'] } : { ...metadata, not: { required: ['namespace'] } },
      spec,
    },
    required: ['apiVersion', 'kind', 'metadata', 'spec'],
    additionalProperties: false,
  };
}

// spire-controller-manager api/v1alpha1 ClusterSPIFFEIDSpec (cluster-scoped).
const clusterSpiffeIdSpec = object(
  {
    spiffeIDTemplate: str,
    ttl: duration,
    jwtTtl: duration,
    dnsNameTemplates: strings,
    workloadSelectorTemplates: strings,
    federatesWith: strings,
    namespaceSelector: labelSelector,
    podSelector: labelSelector,
    admin: bool,
    downstream: bool,
    autoPopulateDNSNames: bool,
    className: str,
    fallback: bool,
    hint: str,
  },
  ['spiffeIDTemplate'],
);

// cert-manager.io/v1 key usages, as the Certificate API enumerates them.
const KEY_USAGES = [
  'signing', 'digital signature', 'content commitment', 'key encipherment', 'key agreement', 'data encipherment',
  'cert sign', 'crl sign', 'encipher only', 'decipher only', 'any', 'server auth', 'client auth', 'code signing',
  'email protection', 's/mime', 'ipsec end system', 'ipsec tunnel', 'ipsec user', 'timestamping', 'ocsp signing',
  'microsoft sgc', 'netscape sgc',
];

const certificateSpec = object(
  {
    secretName: str,
    issuerRef: object({ name: str, kind: str, group: str }, ['name']),
    commonName: str,
    dnsNames: strings,
    ipAddresses: strings,
    uris: strings,
    emailAddresses: strings,
    duration,
    renewBefore: duration,
    isCA: bool,
    usages: { type: 'array', items: { enum: KEY_USAGES } },
    privateKey: object({
      algorithm: { enum: ['RSA', 'ECDSA', 'Ed25519'] },
      size: { type: 'integer' },
      encoding: { enum: ['PKCS1', 'PKCS8'] },
      rotationPolicy: { enum: ['Never', 'Always'] },
    }),
    revisionHistoryLimit: { type: 'integer', minimum: 1 },
    secretTemplate: object({ annotations: { type: 'object', additionalProperties: str }, labels: { type: 'object', additionalProperties: str } }),
  },
  ['secretName', 'issuerRef'],
);

// One issuer type per Issuer; this chart uses selfSigned, and ca is the other in-cluster one.
const issuerSpec: Schema = {
  ...object({ selfSigned: object({ crlDistributionPoints: strings }), ca: object({ secretName: str }, ['secretName']) }),
  minProperties: 1,
  maxProperties: 1,
};

export class ThirdPartySchemas {
  private readonly validators = new Map<string, ValidateFunction>();

  constructor() {
    const ajv = newAjv();
    const add = (apiVersion: string, kind: string, spec: Schema, namespaced: boolean) =>
      this.validators.set(`${apiVersion} ${kind}`, ajv.compile(resource(apiVersion, kind, spec, namespaced)));
    add('spire.spiffe.io/v1alpha1', 'ClusterSPIFFEID', clusterSpiffeIdSpec, false);
    add('cert-manager.io/v1', 'Certificate', certificateSpec, true);
    add('cert-manager.io/v1', 'Issuer', issuerSpec, true);
  }

  knows(o: Pick<KubeObject, 'apiVersion' | 'kind'>): boolean {
    return this.validators.has(`${o.apiVersion} ${o.kind}`);
  }

  problems(o: KubeObject): string[] {
    const v = this.validators.get(`${o.apiVersion} ${o.kind}`);
    const where = `${o.kind} ${o.metadata.name}`;
    if (!v) return [`${where}: no schema for ${o.apiVersion} ${o.kind}`];
    if (v(o)) return [];
    return (v.errors ?? []).map((e) => {
      const extra = e.keyword === 'additionalProperties' ? ` "${String(e.params.additionalProperty)}"` : '';
      return `${where}: ${e.instancePath || '/'} ${e.message ?? e.keyword}${extra}`;
    });
  }
}
