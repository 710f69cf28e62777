import { EventEmitter } from 'node:events';
import type { Connection, ConnectionEventType, State } from '../api/types.js';
import type { Logger } from '../util/log.js';
import { ConnectionFiles } from './connection-files.js';
import { AfterTurn } from '../util/after-turn.js';

export interface PlumbedEnd {
  inodeUrl: string;
  /** Path that opened the namespace when plumbed; re-resolved from inodeUrl after a restart. */
  netns: string;
  ifname: string;
}

/** A VXLAN tunnel's parameters as both nodes agreed them. */
export interface Tunnel {
  type: 'VXLAN' | 'WIREGUARD';
  localIp: string;
  remoteIp: string;
  /** VXLAN only. */
  vni: number;
  /** VXLAN: the UDP port of both ends; WireGuard: this end's listen port. */
  port: number;
  /** WireGuard: the peer's listen port. */
  peerPort?: number;
  /** WireGuard: when this end's key was made (ms since the epoch); a refresh after NSM_WIREGUARD_KEY_MAX_AGE rotates it. */
  keyBornAt?: number;
}

/**
 * What nsmd built on this node for a connection. `local` is the device it removes on Close: the client's
 * end (a veth pair, or a VXLAN end towards a remote endpoint), or — for a connection served to a remote node —
 * the endpoint's VXLAN end. `peer` is the veth pair's other end; `tunnel` is set for VXLAN.
 */
export interface PlumbedPath {
  mtu: number;
  local: PlumbedEnd;
  peer?: PlumbedEnd;
  tunnel?: Tunnel;
}

/** Everything nsmd must know about a live connection to refresh it, monitor it, and undo it. */
export interface ConnectionRecord {
  /** nsmd's own path segment id. */
  id: string;
  /** The caller's segment id (the client's connection id). */
  clientId: string;
  /** The connection as nsmd returns it, at nsmd's path index. */
  connection: Connection;
  endpoint: { name: string; url: string; connection: Connection };
  dataplane: PlumbedPath;
  /** Epoch ms after which nsmd closes the connection unless it is refreshed. */
  expiresAt: number;
  /** SPIFFE ID of the caller that made it: the only identity (besides admins) that may refresh or close it. */
  owner?: string;
}

export interface StoreEvent {
  type: Exclude<ConnectionEventType, 'INITIAL_STATE_TRANSFER'>;
  connection: Connection;
  record: ConnectionRecord;
}

/** nsmd's live connections, indexed for refresh and Close, published to monitors, persisted for restarts. */
export class ConnectionStore {
  private readonly byId = new Map<string, ConnectionRecord>();
  private readonly byClientId = new Map<string, string>();
  private readonly events = new EventEmitter();
  private readonly files: ConnectionFiles<ConnectionRecord> | undefined;
  /**
   * Persisting and announcing a change wait for the end of the current I/O turn, in order: the answer to
   * the Request that made the change is written first, so neither the state file nor the monitors' encoding
   * sits on the Request's path. The index itself changes at once.
   */
  private readonly later = new AfterTurn();

  /** `stateDir`: where each connection is persisted, so that a restarted nsmd can adopt or clean it up. */
  constructor(stateDir: string | undefined, log: Logger) {
    this.files = stateDir ? new ConnectionFiles(stateDir, log) : undefined;
    this.events.setMaxListeners(0);
  }

  /** Records persisted by a previous run, for the daemon to adopt or clean up. */
  async loadPersisted(): Promise<ConnectionRecord[]> {
    return this.files?.loadAll() ?? [];
  }

  get(id: string): ConnectionRecord | undefined {
    return this.byId.get(id);
  }

  idForClient(clientId: string): string | undefined {
    return this.byClientId.get(clientId);
  }

  /** Finds the record a Close or monitor refers to: by nsmd's segment, the client's id, or any id on the path. */
  lookup(conn: Connection): ConnectionRecord | undefined {
    const ids = [conn.id, ...(conn.path?.path_segments.map((s) => s.id) ?? [])];
    for (const id of ids) {
      const rec = this.byId.get(id) ?? this.byId.get(this.byClientId.get(id) ?? '');
      if (rec) return rec;
    }
    return undefined;
  }

  all(): ConnectionRecord[] {
    return [...this.byId.values()];
  }

  get size(): number {
    return this.byId.size;
  }

  put(rec: ConnectionRecord): void {
    this.byId.set(rec.id, rec);
    this.byClientId.set(rec.clientId, rec.id);
    this.later.push(() => {
      this.files?.save(rec.id, rec);
      this.emit({ type: 'UPDATE', connection: rec.connection, record: rec });
    });
  }

  setState(id: string, state: State): void {
    const rec = this.byId.get(id);
    if (!rec || rec.connection.state === state) return;
    rec.connection.state = state;
    this.later.push(() => this.emit({ type: 'UPDATE', connection: rec.connection, record: rec }));
  }

  delete(id: string): void {
    const rec = this.byId.get(id);
    if (!rec) return;
    this.byId.delete(id);
    if (this.byClientId.get(rec.clientId) === id) this.byClientId.delete(rec.clientId);
    this.later.push(() => {
      this.files?.remove(id);
      this.emit({ type: 'DELETE', connection: { ...rec.connection, state: 'DOWN' }, record: rec });
    });
  }

  subscribe(fn: (e: StoreEvent) => void): () => void {
    this.events.on('event', fn);
    return () => this.events.off('event', fn);
  }

  /** Resolves when every change made so far is on disk (and announced). */
  flush(): Promise<void> {
    this.later.run();
    return this.files?.flush() ?? Promise.resolve();
  }

  private emit(e: StoreEvent): void {
    this.events.emit('event', e);
  }
}
