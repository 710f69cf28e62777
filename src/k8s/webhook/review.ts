/**
 * AdmissionReview (admission.k8s.io/v1) in, AdmissionReview out: decides for one pod whether to inject, skip or
 * deny, and answers with the JSON Patch. Input is checked at this edge; a body that is not a v1 AdmissionReview
 * is a BadReview (HTTP 400), never a guess.
 */
import { z } from 'zod';
import type { Logger } from '../../util/log.js';
import { AnnotationError, requestedServices } from './annotation.js';
import type { ExclusionConfig, InjectionConfig } from './config.js';
import { INJECTED_ANNOTATION, InjectionConflict, injectionPatch } from './inject.js';
import type { AddOperation } from './json-patch.js';
import type { NamespaceInfo, NamespaceLookup } from './namespaces.js';

export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';

/** A request body that is not an AdmissionReview the webhook can answer. */
export class BadReview extends Error {}

const stringMap = z
  .record(z.string())
  .nullish()
  .transform((v) => v ?? undefined);
// null and a missing list mean the same to Kubernetes; to JSON Patch both mean "add the whole list".
const namedList = z
  .array(z.object({ name: z.string() }).passthrough())
  .nullish()
  .transform((v) => v ?? undefined);

const podSchema = z.object({
  metadata: z
    .object({
      name: z.string().optional(),
      generateName: z.string().optional(),
      namespace: z.string().optional(),
      annotations: stringMap,
      labels: stringMap,
    })
    .passthrough(),
  spec: z
    .object({
      containers: z.array(z.object({ name: z.string() }).passthrough()).min(1),
      initContainers: namedList,
      volumes: namedList,
      hostNetwork: z.boolean().nullish(),
    })
    .passthrough(),
});

const reviewSchema = z.object({
  apiVersion: z.string(),
  kind: z.literal('AdmissionReview'),
  request: z
    .object({
      uid: z.string().min(1),
      kind: z.object({ group: z.string(), version: z.string(), kind: z.string() }),
      operation: z.string(),
      namespace: z.string().optional(),
      object: z.unknown(),
    })
    .passthrough(),
});

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  patchType?: 'JSONPatch';
  /** Base64 of the JSON Patch array. */
  patch?: string;
  status?: { status: 'Failure'; code: number; reason: string; message: string };
}

export interface AdmissionReviewOut {
  apiVersion: typeof ADMISSION_API_VERSION;
  kind: 'AdmissionReview';
  response: AdmissionResponse;
}

export interface MutatorOptions {
  injection: InjectionConfig;
  exclusion: ExclusionConfig;
  namespaces: NamespaceLookup;
  log: Logger;
}

type Decision = { allow: true; why: string; patch?: AddOperation[] } | { allow: false; message: string };

function zodMessage(e: z.ZodError): string {
  return e.issues.map((i) => `${i.path.join('.') || '(top level)'}: ${i.message}`).join('; ');
}

export class Mutator {
  constructor(private readonly o: MutatorOptions) {}

  /** Answers one review; throws BadReview for a body that is not one, and any other error when a lookup fails. */
  async review(body: unknown): Promise<AdmissionReviewOut> {
    const parsed = reviewSchema.safeParse(body);
    if (!parsed.success) throw new BadReview(`not an AdmissionReview: ${zodMessage(parsed.error)}`);
    if (parsed.data.apiVersion !== ADMISSION_API_VERSION) {
      throw new BadReview(
        `AdmissionReview ${parsed.data.apiVersion} is not served; list ${ADMISSION_API_VERSION.split('/')[1]} in the webhook's admissionReviewVersions`,
      );
    }
    const req = parsed.data.request;
    const started = process.hrtime.bigint();
    const decision = await this.decide(req);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    const fields = { uid: req.uid, namespace: req.namespace, ms };
    if (decision.allow) this.o.log.info({ ...fields, patched: !!decision.patch }, decision.why);
    else this.o.log.info({ ...fields, reason: decision.message }, 'denied');
    return { apiVersion: ADMISSION_API_VERSION, kind: 'AdmissionReview', response: toResponse(req.uid, decision) };
  }

  private async decide(req: z.infer<typeof reviewSchema>['request']): Promise<Decision> {
    const { group, version, kind } = req.kind;
    // Pods' containers cannot change after creation, so CREATE is the only moment to inject.
    if (group !== '' || version !== 'v1' || kind !== 'Pod' || req.operation !== 'CREATE') {
      return { allow: true, why: `not a pod creation (${kind} ${req.operation}): nothing to do` };
    }
    const podParsed = podSchema.safeParse(req.object);
    if (!podParsed.success) throw new BadReview(`request.object is not a Pod: ${zodMessage(podParsed.error)}`);
    const pod = podParsed.data;
    const podName = pod.metadata.name || `${pod.metadata.generateName ?? ''}<generated>`;
    if (pod.metadata.annotations?.[INJECTED_ANNOTATION] === 'true') return { allow: true, why: `pod ${podName} is already injected` };

    const nsName = req.namespace || pod.metadata.namespace || 'default';
    if (this.o.exclusion.namespaces.has(nsName)) return { allow: true, why: `namespace ${nsName} is excluded by name` };
    let nsInfo: Promise<NamespaceInfo | undefined> | undefined;
    const namespace = () => (nsInfo ??= this.o.namespaces.get(nsName));
    const selector = this.o.exclusion.selector;
    if (selector && selector.matches((await namespace())?.labels ?? {})) {
      return { allow: true, why: `namespace ${nsName} is excluded by the selector ${selector.text}` };
    }

    let wanted;
    try {
      wanted = await requestedServices(pod.metadata.annotations ?? {}, async () => (await namespace())?.annotations ?? {});
    } catch (e) {
      if (e instanceof AnnotationError) return { allow: false, message: `pod ${podName} in namespace ${nsName}: ${e.message}` };
      throw e;
    }
    if (!wanted) return { allow: true, why: `pod ${podName} asks for no network service` };
    if (pod.spec.hostNetwork) {
      return {
        allow: false,
        message: `pod ${podName} in namespace ${nsName} uses hostNetwork, so its interfaces would be the node's; network services (${wanted.source}) need a pod network namespace: remove hostNetwork or the annotation`,
      };
    }
    try {
      const patch = injectionPatch(pod, wanted.value, this.o.injection);
      return { allow: true, why: `pod ${podName}: injected nsc for ${wanted.source}="${wanted.value}"`, patch };
    } catch (e) {
      if (e instanceof InjectionConflict) return { allow: false, message: `pod ${podName} in namespace ${nsName}: ${e.message}` };
      throw e;
    }
  }
}

function toResponse(uid: string, d: Decision): AdmissionResponse {
  if (!d.allow) return { uid, allowed: false, status: { status: 'Failure', code: 400, reason: 'BadRequest', message: d.message } };
  if (!d.patch || d.patch.length === 0) return { uid, allowed: true };
  return { uid, allowed: true, patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(d.patch)).toString('base64') };
}
