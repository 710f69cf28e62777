import { Etcd3 } from 'etcd3';
import type { NseEvent, NsEvent } from '../../src/registry/types.js';

/** Collects watcher events for later assertions. */
export function recorder<E extends NseEvent | NsEvent>() {
  const events: E[] = [];
  const name = (e: E) => ('nse' in e ? e.nse.name : e.ns.name);
  return {
    events,
    push: (e: E) => void events.push(e),
    of: (n: string) => events.filter((e) => name(e) === n),
    has: (n: string, deleted: boolean) => events.some((e) => name(e) === n && e.deleted === deleted),
  };
}

/** A plain etcd client for looking at what the registry stored, independent of the code under test. */
export function rawClient(endpoint: string): Etcd3 {
  return new Etcd3({ hosts: endpoint });
}

let seq = 0;
/** A prefix of its own per test, so tests sharing one etcd cannot see each other's records. */
export function freshPrefix(): string {
  return `/test-${process.pid}-${++seq}/`;
}
