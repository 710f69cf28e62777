import type { Connection, NetworkServiceEndpoint } from '../../api/types.js';
import type { BaseCloseState, BaseRequestState } from '../../chain/types.js';
import type { ConnectionRecord, PlumbedEnd } from '../connection-store.js';

/** What nsmd's Request chain fills in as it goes; each field names the element that sets it. */
export interface NsmdRequestState extends BaseRequestState {
  /** begin: the live record when this Request is a refresh. */
  existing?: ConnectionRecord;
  /** expire: when the connection lapses unless refreshed. */
  expiresAt?: number;
  /** client-mechanism: the client's namespace and interface. */
  clientEnd?: PlumbedEnd;
  /** client-mechanism: MTU of the veth pair. */
  mtu?: number;
  /** discover: endpoints eligible for this Request, in selection order. */
  candidates?: NetworkServiceEndpoint[];
  /** select: the endpoint being tried. */
  endpoint?: NetworkServiceEndpoint;
  /** connect: the connection as the endpoint returned it. */
  endpointConnection?: Connection;
  /** plumb: the endpoint's namespace and interface. */
  endpointEnd?: PlumbedEnd;
}

export interface NsmdCloseState extends BaseCloseState {
  readonly record: ConnectionRecord;
}
