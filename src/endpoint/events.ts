import { EventEmitter } from 'node:events';
import type { Connection } from '../api/types.js';
import type { EndpointRecord } from './state.js';
import { AfterTurn } from '../util/after-turn.js';

export interface EndpointEvent {
  type: 'UPDATE' | 'DELETE';
  connection: Connection;
  record: EndpointRecord;
}

/**
 * Changes to an endpoint's connections, for its MonitorConnection stream (nsmd watches it to follow them).
 * Events go out after the current I/O turn, in order: the answer to the Request that caused one is written
 * first, so the monitor's encoding and write never sit on the Request's path.
 */
export class EndpointEvents {
  private readonly emitter = new EventEmitter();
  private readonly later = new AfterTurn();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  emit(e: EndpointEvent): void {
    this.later.push(() => this.emitter.emit('event', e));
  }

  subscribe(fn: (e: EndpointEvent) => void): () => void {
    this.emitter.on('event', fn);
    return () => this.emitter.off('event', fn);
  }

  get subscribers(): number {
    return this.emitter.listenerCount('event');
  }
}
