import type { ClientReadableStream } from '@grpc/grpc-js';
import { ApiClient } from '../api/grpc.js';
import type { ConnectionEvent } from '../api/types.js';
import type { Transport } from '../identity/transport.js';
import { messageOf, status, statusOf } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { ConnectionRecord, ConnectionStore } from './connection-store.js';

const RETRY_MS = 1000;

/**
 * Watches the next hop of every connection this nsmd has — the nsmd of another node, or a local endpoint —
 * so that failures there reach this node's monitors: a connection the peer reports DOWN is DOWN here; one
 * the peer deleted (its endpoint went away, it expired there, an endpoint ended it) is closed here too; and
 * when the peer itself stops answering — the stream breaks — every connection through it is reported DOWN
 * at once, then the stream is retried while any connection still goes there. A peer that does not serve
 * MonitorConnection is not watched.
 */
export class PeerMonitor {
  private readonly peers = new Map<string, { client: ApiClient<'connection.MonitorConnection'>; stream?: ClientReadableStream<ConnectionEvent>; retry?: NodeJS.Timeout; lost?: boolean }>();
  /** Peers that answered UNIMPLEMENTED: they cannot report, and asking again on every Request is waste. */
  private readonly unwatchable = new Set<string>();
  private stopped = false;

  constructor(
    private readonly store: ConnectionStore,
    private readonly transport: Transport,
    private readonly closeLocally: (rec: ConnectionRecord, reason: string) => Promise<void>,
    private readonly log: Logger,
  ) {
    store.subscribe((e) => {
      if (e.type === 'UPDATE') this.ensure(e.record.endpoint.url);
    });
  }

  private ensure(url: string): void {
    if (this.stopped || this.peers.has(url) || this.unwatchable.has(url)) return;
    this.peers.set(url, { client: new ApiClient('connection.MonitorConnection', url, this.transport) });
    this.open(url);
  }

  private through(url: string): ConnectionRecord[] {
    return this.store.all().filter((r) => r.endpoint.url === url);
  }

  private open(url: string): void {
    const peer = this.peers.get(url);
    if (!peer || this.stopped) return;
    const stream = peer.client.stream('MonitorConnections', {});
    peer.stream = stream;
    stream.on('data', (e: ConnectionEvent) => {
      peer.lost = false;
      this.onEvent(e);
    });
    const broken = (why: string) => {
      if (peer.stream !== stream || this.stopped) return;
      peer.stream = undefined;
      const affected = this.through(url);
      if (affected.length === 0) {
        peer.client.close();
        this.peers.delete(url);
        return;
      }
      // Said once per outage, not on every retry.
      if (!peer.lost) this.log.warn({ peer: url, connections: affected.length, err: why }, 'lost the monitor stream of a peer; its connections are DOWN');
      peer.lost = true;
      for (const rec of affected) this.store.setState(rec.id, 'DOWN');
      peer.retry = setTimeout(() => this.open(url), RETRY_MS);
    };
    stream.on('error', (e: unknown) => {
      if (statusOf(e) === status.UNIMPLEMENTED && peer.stream === stream) {
        this.unwatchable.add(url);
        peer.stream = undefined;
        peer.client.close();
        this.peers.delete(url);
        return;
      }
      broken(messageOf(e));
    });
    stream.on('end', () => broken('stream ended'));
  }

  private onEvent(e: ConnectionEvent): void {
    for (const conn of Object.values(e.connections)) {
      // The segment before the peer's own is ours; a path through this nsmd twice (a passthrough endpoint) has two of ours.
      const segs = conn.path?.path_segments ?? [];
      const rec = this.store.get(segs[(conn.path?.index ?? 0) - 1]?.id ?? '') ?? segs.map((s) => this.store.get(s.id)).find((r) => r !== undefined);
      if (!rec) continue;
      if (e.type === 'DELETE') {
        this.closeLocally(rec, 'closed by the next hop').catch((err: unknown) => this.log.warn({ conn: rec.id, err: messageOf(err) }, 'close after peer delete failed'));
      } else {
        this.store.setState(rec.id, conn.state === 'DOWN' ? 'DOWN' : 'UP');
      }
    }
  }

  stop(): void {
    this.stopped = true;
    for (const p of this.peers.values()) {
      clearTimeout(p.retry);
      p.stream?.cancel();
      p.client.close();
    }
    this.peers.clear();
  }
}
