import { STATUS_CODES } from 'node:http';
import {
  ApiException,
  Observable,
  type ConfigurationOptions,
  type CustomObjectsApi,
  type ObservableMiddleware,
} from '@kubernetes/client-node';
import { MeshError, status } from '../../util/errors.js';
import { GROUP, VERSION, type ResourceKind } from './resources.js';

/** A failed Kubernetes API call, with the gRPC status a registry caller should see and the API's own reason. */
export class K8sRegistryError extends MeshError {
  override name = 'K8sRegistryError';
  constructor(
    code: status,
    message: string,
    /** HTTP status from the API server; undefined when it did not answer. */
    readonly httpStatus?: number,
  ) {
    super(code, message);
  }
}

export interface ListResult {
  items: unknown[];
  resourceVersion: string;
}

/** Objects per list page: keeps every response small whatever the registry size, as kubectl and informers do. */
const PAGE = 500;
/** A paged list whose continue token expired (410) is started over, at most this many times. */
const LIST_RESTARTS = 3;

/** Outcome of a conditional delete: gone (now or already), or kept because it changed since it was read. */
export type DeleteOutcome = 'deleted' | 'absent' | 'changed';

/**
 * The custom-object calls the registry makes, each with its own deadline, in one namespace. Failures become
 * K8sRegistryErrors naming the API server, the call and the API's message.
 */
export class CrdClient {
  constructor(
    private readonly api: CustomObjectsApi,
    readonly server: string,
    readonly namespace: string,
    private readonly timeoutMs: number,
  ) {}

  path(kind: ResourceKind): string {
    return `/apis/${GROUP}/${VERSION}/namespaces/${encodeURIComponent(this.namespace)}/${kind.plural}`;
  }

  /** Every object of `kind`, paged; all pages belong to the first page's snapshot (the API server guarantees it). */
  async list(kind: ResourceKind): Promise<ListResult> {
    for (let attempt = 1; ; attempt++) {
      const items: unknown[] = [];
      let token: string | undefined;
      let resourceVersion: string | undefined;
      try {
        do {
          const page = (await this.call(`list ${kind.plural}`, (o) =>
            this.api.listNamespacedCustomObject({ ...this.where(kind), limit: PAGE, _continue: token }, o),
          )) as { items?: unknown[]; metadata?: { resourceVersion?: string; continue?: string } };
          items.push(...(page.items ?? []));
          resourceVersion ??= page.metadata?.resourceVersion;
          token = page.metadata?.continue || undefined;
        } while (token);
      } catch (err) {
        if (token && err instanceof K8sRegistryError && err.httpStatus === 410 && attempt < LIST_RESTARTS) continue;
        throw err;
      }
      if (!resourceVersion) {
        throw new K8sRegistryError(status.UNAVAILABLE, `Kubernetes API at ${this.server}: list ${kind.plural} returned no resourceVersion`);
      }
      return { items, resourceVersion };
    }
  }

  /** The object, or undefined when there is none. */
  async get(kind: ResourceKind, name: string): Promise<unknown> {
    try {
      return await this.call(`get ${kind.plural}/${name}`, (o) => this.api.getNamespacedCustomObject({ ...this.where(kind), name }, o));
    } catch (err) {
      if (err instanceof K8sRegistryError && err.httpStatus === 404) return undefined;
      throw err;
    }
  }

  create(kind: ResourceKind, body: object): Promise<unknown> {
    return this.call(`create ${kind.plural}`, (o) => this.api.createNamespacedCustomObject({ ...this.where(kind), body }, o));
  }

  /** Replaces the object; the body's metadata.resourceVersion makes it conditional (409 when it changed). */
  replace(kind: ResourceKind, name: string, body: object): Promise<unknown> {
    return this.call(`replace ${kind.plural}/${name}`, (o) =>
      this.api.replaceNamespacedCustomObject({ ...this.where(kind), name, body }, o),
    );
  }

  /**
   * Deletes the object; with `resourceVersion`, only if it is still that version, so a cleanup racing a refresh by
   * another nsmd never removes the refreshed registration.
   */
  async delete(kind: ResourceKind, name: string, resourceVersion?: string): Promise<DeleteOutcome> {
    try {
      await this.call(`delete ${kind.plural}/${name}`, (o) =>
        this.api.deleteNamespacedCustomObject(
          { ...this.where(kind), name, ...(resourceVersion ? { body: { preconditions: { resourceVersion } } } : {}) },
          o,
        ),
      );
      return 'deleted';
    } catch (err) {
      if (err instanceof K8sRegistryError && err.httpStatus === 404) return 'absent';
      if (err instanceof K8sRegistryError && err.httpStatus === 409 && resourceVersion) return 'changed';
      throw err;
    }
  }

  private where(kind: ResourceKind) {
    return { group: GROUP, version: VERSION, namespace: this.namespace, plural: kind.plural };
  }

  private async call<T>(what: string, fn: (options: ConfigurationOptions<ObservableMiddleware>) => Promise<T>): Promise<T> {
    try {
      return await fn(withDeadline(this.timeoutMs));
    } catch (err) {
      throw this.wrap(what, err);
    }
  }

  wrap(what: string, err: unknown): K8sRegistryError {
    if (err instanceof K8sRegistryError) return err;
    if (err instanceof ApiException) {
      const code = Number(err.code);
      // The generated client drops the body of some answers (401, 403): the HTTP reason phrase stands in.
      const reason = apiReason(err.body) || STATUS_CODES[code] || '';
      const message = `Kubernetes API at ${this.server}: ${what} failed: ${code}${reason ? ` ${reason}` : ''}`;
      return new K8sRegistryError(grpcStatusOf(code), hintFor(code, message, this.namespace), code);
    }
    if (err instanceof Error && err.name === 'AbortError') {
      return new K8sRegistryError(status.UNAVAILABLE, `Kubernetes API at ${this.server} did not answer within ${this.timeoutMs} ms (${what})`);
    }
    const detail = err instanceof Error ? err.message : String(err);
    return new K8sRegistryError(status.UNAVAILABLE, `Kubernetes API at ${this.server} unreachable: ${detail} (${what})`);
  }
}

/** Per-call options that abort the HTTP request (body included) after `ms`. */
function withDeadline(ms: number): ConfigurationOptions<ObservableMiddleware> {
  return {
    middleware: [
      {
        pre: (ctx) => {
          ctx.setSignal(AbortSignal.timeout(ms));
          return new Observable(Promise.resolve(ctx));
        },
        post: (res) => new Observable(Promise.resolve(res)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

/** `Reason: message` from a Status body (a string of JSON, as the generated client hands it over). */
function apiReason(body: unknown): string {
  let parsed = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      return body.slice(0, 300);
    }
  }
  if (typeof parsed !== 'object' || parsed === null) return '';
  const s = parsed as { reason?: unknown; message?: unknown };
  return [s.reason, s.message].filter((x) => typeof x === 'string' && x !== '').join(': ');
}

function grpcStatusOf(http: number): status {
  if (http === 400 || http === 422) return status.INVALID_ARGUMENT;
  if (http === 404 || http === 401 || http === 403) return status.FAILED_PRECONDITION;
  if (http === 409) return status.ABORTED;
  if (http === 410) return status.OUT_OF_RANGE;
  return status.UNAVAILABLE;
}

/** What an operator does about the errors a misconfigured deployment produces. */
function hintFor(http: number, message: string, namespace: string): string {
  if (http === 401) return `${message}; nsmd's credentials were rejected (check its kubeconfig or service account token)`;
  if (http === 403) {
    return `${message}; nsmd's service account needs get, list, watch, create, update and delete on networkservices and networkserviceendpoints.networkservicemesh.io in namespace ${namespace}`;
  }
  if (http === 404) {
    return `${message}; is namespace ${namespace} there and are the networkservicemesh.io CRDs installed (kubectl get crd networkservices.networkservicemesh.io)?`;
  }
  return message;
}
