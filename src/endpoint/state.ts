import type { Connection } from '../api/types.js';
import type { BaseCloseState, BaseRequestState } from '../chain/types.js';

/** What an endpoint remembers of a connection it serves. */
export interface EndpointRecord {
  id: string;
  connection: Connection;
  expiresAt: number;
  /** SPIFFE ID of the nsmd that made it. */
  owner?: string;
}

export interface EndpointRequestState extends BaseRequestState {
  /** The live record when this Request refreshes a connection. */
  existing?: EndpointRecord;
  /** When the connection lapses unless refreshed. */
  expiresAt?: number;
}

export interface EndpointCloseState extends BaseCloseState {
  readonly record: EndpointRecord;
}
