import type { Logger } from 'pino';
import type { SyncTarget } from './resource-sync.js';
import { asApiObject, isNewer, notNewer, type ApiObject, type ResourceKind } from './resources.js';
import type { Checked } from './spec-fields.js';

/** What this process knows about one object of a kind. */
export interface IndexEntry<T> {
  resourceVersion: string;
  /** False for a tombstone: deleted here, the watch's DELETED event not seen yet. */
  exists: boolean;
  /** The registration it holds; undefined when it could not be read (or for a tombstone). */
  message?: T;
  /** Labels and annotations others (kubectl, GitOps tools) put on the object: kept when this registry replaces it. */
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface IndexOutput<T> {
  convert(obj: ApiObject): Checked<T>;
  /** The object holds `message` now (new, changed or unchanged). */
  present(objectName: string, message: T, entry: IndexEntry<T>): void;
  /** The object is gone, or holds nothing readable. */
  absent(objectName: string): void;
}

/**
 * One kind's objects as this process last saw them, fed by the list/watch (ResourceSync) and by this registry's own
 * writes, so a registration is visible here as soon as its write returns rather than when the watch echoes it.
 *
 * Both sources race, so an event is ignored when it is not newer than what is already known (resourceVersions
 * compared as etcd revisions, see notNewer): a slow watch must not roll an object back to the version before our
 * write, nor bring back an object we just deleted.
 */
export class ObjectIndex<T> implements SyncTarget {
  private readonly entries = new Map<string, IndexEntry<T>>();
  /** Object name → the resourceVersion last warned about, so an unreadable object is reported once per version. */
  private readonly warned = new Map<string, string>();

  constructor(
    readonly kind: ResourceKind,
    private readonly output: IndexOutput<T>,
    private readonly logger: Logger,
  ) {}

  /** The object as known here (undefined: none, or deleted here). */
  get(objectName: string): IndexEntry<T> | undefined {
    const e = this.entries.get(objectName);
    return e?.exists ? e : undefined;
  }

  reset(items: unknown[], resourceVersion: string): void {
    const listed = new Set<string>();
    for (const raw of items) {
      const name = this.apply('ADDED', raw);
      if (name) listed.add(name);
    }
    for (const [name, entry] of [...this.entries]) {
      // Written by us after the list was taken: the list cannot know about it yet.
      if (listed.has(name) || isNewer(entry.resourceVersion, resourceVersion)) continue;
      this.entries.delete(name);
      if (entry.exists) this.output.absent(name);
    }
  }

  event(type: 'ADDED' | 'MODIFIED' | 'DELETED', raw: unknown): void {
    this.apply(type, raw);
  }

  /** Records the object a create or replace returned; gives back the registration it now holds. */
  written(raw: unknown): T {
    const name = this.apply('MODIFIED', raw);
    const message = name ? this.entries.get(name)?.message : undefined;
    if (message === undefined) throw new Error(`the API server returned an unreadable ${this.kind.kind} object`);
    return structuredClone(message);
  }

  /** Records a delete made here. */
  deleted(objectName: string): void {
    const entry = this.entries.get(objectName);
    if (!entry?.exists) return;
    this.entries.set(objectName, { resourceVersion: entry.resourceVersion, exists: false });
    this.output.absent(objectName);
  }

  /** Applies one object; returns its name, or undefined when it is not an API object. */
  private apply(type: 'ADDED' | 'MODIFIED' | 'DELETED', raw: unknown): string | undefined {
    const obj = asApiObject(raw);
    if (!obj) {
      this.logger.warn({ kind: this.kind.plural }, 'ignoring a watch or list item that is not an API object');
      return undefined;
    }
    const name = obj.metadata.name;
    const rv = obj.metadata.resourceVersion ?? '';
    const known = this.entries.get(name);
    if (known && notNewer(rv, known.resourceVersion)) return name;

    if (type === 'DELETED') {
      this.entries.delete(name);
      this.warned.delete(name);
      if (known?.exists) this.output.absent(name);
      return name;
    }
    const meta = { labels: obj.metadata.labels, annotations: obj.metadata.annotations };
    const converted = this.output.convert(obj);
    if ('problem' in converted) {
      if (this.warned.get(name) !== rv) {
        this.warned.set(name, rv);
        this.logger.warn({ kind: this.kind.plural, object: name, resourceVersion: rv, problem: converted.problem }, `ignoring unreadable ${this.kind.kind} object`);
      }
      this.entries.set(name, { resourceVersion: rv, exists: true, ...meta });
      this.output.absent(name);
      return name;
    }
    this.warned.delete(name);
    const entry: IndexEntry<T> = { resourceVersion: rv, exists: true, message: converted.ok, ...meta };
    this.entries.set(name, entry);
    this.output.present(name, converted.ok, entry);
    return name;
  }
}
