import { EventEmitter } from 'node:events';
import type { Connection } from '../api/types.js';
import type { EndpointRecord } from './state.js';

export interface EndpointEvent {
  type: 'UPDATE' | 'DELETE';
  connection: Connection;
  record: EndpointRecord;
}

/** Changes to an endpoint's connections, for its MonitorConnection stream (nsmd watches it to follow them). */
export class EndpointEvents {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  emit(e: EndpointEvent): void {
    this.emitter.emit('event', e);
  }

  subscribe(fn: (e: EndpointEvent) => void): () => void {
    this.emitter.on('event', fn);
    return () => this.emitter.off('event', fn);
  }

  get subscribers(): number {
    return this.emitter.listenerCount('event');
  }
}
