import type { KeyObject } from 'node:crypto';
import {
  createWireguardBackend,
  formatEndpoint,
  generateKeyPair,
  generateKeyPairAsync,
  PortAllocator,
  type WgKeyPair,
  type WireguardBackend,
} from '../../dataplane/wireguard/index.js';
import type { LinkEnd } from '../../dataplane/types.js';
import type { DataplaneError } from '../../dataplane/veth/protocol.js';
import { resourceExhausted } from '../../util/errors.js';
import type { Logger } from '../../util/log.js';

/** Key pairs kept ready for offers: a burst beyond them makes its own on the spot. */
const SPARE_KEYS = 4;

/** WireGuard peers accept everything the connection routes; one peer per device, as upstream does. */
const ALLOWED_IPS = ['0.0.0.0/0', '::/0'];

export interface WireguardOffer {
  privateKey: KeyObject;
  publicKey: string;
  port: number;
}

/**
 * This node's WireGuard ends: keys made here and never sent anywhere (only public keys travel in the
 * mechanism), a listen port per connection from 51820 up, freed on Close, and one supervised wireguard-go
 * per end (this kernel has no WireGuard module).
 */
export class WireguardTunnels {
  private readonly ports = new PortAllocator();
  private readonly portOf = new Map<string, number>();
  private readonly spareKeys: WgKeyPair[] = [];
  private refilling = false;

  private constructor(private readonly backend: WireguardBackend) {}

  static async start(log: Logger, onDown: (connId: string) => void): Promise<WireguardTunnels> {
    const backend = createWireguardBackend({ logger: log.child({ component: 'wireguard' }) });
    const report = await backend.cleanupStale();
    if (report.killed.length) log.warn({ killed: report.killed.length }, 'stopped wireguard-go instances left by a previous nsmd');
    backend.onExit((connId, code, signal) => {
      log.warn({ conn: connId, code, signal }, 'wireguard-go exited; the connection is DOWN');
      onDown(connId);
    });
    return new WireguardTunnels(backend);
  }

  /** A key pair and port for the offer a client's nsmd sends; give it back with release() if it goes unused. */
  offer(): WireguardOffer {
    return { ...this.freshKeys(), port: this.ports.allocate() };
  }

  /** A fresh key pair for an end that keeps its port: key rotation. */
  rekeyOffer(port: number): WireguardOffer {
    return { ...this.freshKeys(), port };
  }

  /**
   * A key pair never used before. Making one costs ≈0.35 ms, and with the default mechanism order every remote
   * Request offers WireGuard beside VXLAN; so a few are made ahead on the thread pool, and each is handed out once.
   */
  private freshKeys(): WgKeyPair {
    const keys = this.spareKeys.pop() ?? generateKeyPair();
    if (!this.refilling) {
      this.refilling = true;
      void this.refill().finally(() => (this.refilling = false));
    }
    return keys;
  }

  private async refill(): Promise<void> {
    try {
      while (this.spareKeys.length < SPARE_KEYS) this.spareKeys.push(await generateKeyPairAsync());
    } catch {
      // Keys are then made on the spot, as without spares.
    }
  }

  /** Gives a running end a new key and its peer's new public key, without touching anything else. */
  rekey(connId: string, own: WireguardOffer, peer: { publicKey: string; ip: string; port: number }): Promise<void> {
    return this.backend.rekey(connId, own.privateKey, { publicKey: peer.publicKey, endpoint: formatEndpoint(peer.ip, peer.port), allowedIps: ALLOWED_IPS });
  }

  release(offer: WireguardOffer): void {
    this.ports.free(offer.port);
  }

  /** Creates this node's end; the port becomes the connection's until remove(). */
  async create(connId: string, underlayNetns: string, own: WireguardOffer, peer: { publicKey: string; ip: string; port: number }, end: LinkEnd, mtu: number): Promise<void> {
    try {
      await this.backend.create({
        connId,
        underlayNetns,
        listenPort: own.port,
        privateKey: own.privateKey,
        peer: { publicKey: peer.publicKey, endpoint: formatEndpoint(peer.ip, peer.port), allowedIps: ALLOWED_IPS },
        end,
        mtu,
      });
    } catch (e) {
      // A host limit, not a fault of this connection: the caller may retry elsewhere or once ends are closed.
      if ((e as DataplaneError).code === 'EMFILE') throw resourceExhausted((e as Error).message);
      throw e;
    }
    this.portOf.set(connId, own.port);
  }

  async remove(connId: string): Promise<void> {
    await this.backend.delete(connId);
    const port = this.portOf.get(connId);
    if (port !== undefined) this.ports.free(port);
    this.portOf.delete(connId);
  }

  close(): Promise<void> {
    return this.backend.close();
  }
}
