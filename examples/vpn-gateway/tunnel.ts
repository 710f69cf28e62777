import { readFile } from 'node:fs/promises';
import { createWireguardBackend, keyFromBase64 } from '../../src/dataplane/wireguard/index.js';
import { replaceNftTable } from '../../src/endpoint/index.js';
import type { Logger } from '../../src/util/log.js';
import type { VpnGatewayConfig } from './config.js';

export const VPN_TABLE = 'nsmesh_vpn';
const TUNNEL_ID = 'vpn-gateway-tunnel';

export interface Tunnel {
  close(): Promise<void>;
}

/**
 * The gateway's side of the intranet: a WireGuard link to the intranet's VPN concentrator (wireguard-go, as
 * this kernel has no WireGuard module, supervised by this process and dying with it), routes to the intranet
 * prefixes through it, and nftables that forward only what mesh clients send into the tunnel (and replies),
 * source-translated to the gateway's tunnel address — the intranet needs no routes back to mesh addresses,
 * which change with every connection.
 */
export async function openTunnel(cfg: VpnGatewayConfig, clientIfPrefix: string, log: Logger, onLost: (why: string) => void): Promise<Tunnel> {
  const t = cfg.tunnel;
  let key: Buffer;
  try {
    key = keyFromBase64((await readFile(t.privateKeyFile, 'utf8')).trim());
  } catch (e) {
    throw new Error(`tunnel private key ${t.privateKeyFile}: ${(e as Error).message}`);
  }
  const backend = createWireguardBackend({ logger: log.child({ component: 'wireguard' }), namePrefix: 'nsmvpn' });
  await backend.cleanupStale();
  // wireguard-go and its UDP socket stay here, in the gateway's namespace, and so does the device.
  const here = `/proc/${process.pid}/ns/net`;
  try {
    await backend.create({
      connId: TUNNEL_ID,
      underlayNetns: here,
      listenPort: t.listenPort,
      privateKey: key,
      peer: { publicKey: t.peer.publicKey, endpoint: t.peer.endpoint, allowedIps: t.peer.allowedIps ?? cfg.intranetPrefixes },
      end: { netns: here, ifname: t.interface, addrs: [t.address], routes: cfg.intranetPrefixes.map((prefix) => ({ prefix })) },
      mtu: t.mtu,
    });
  } finally {
    key.fill(0);
  }
  backend.onExit((_id, code, signal) => onLost(`wireguard-go exited (${signal ?? `code ${code}`})`));
  await replaceNftTable(
    'inet',
    VPN_TABLE,
    [
      '  chain forward {',
      '    type filter hook forward priority filter; policy drop;',
      '    ct state established,related accept',
      `    iifname "${clientIfPrefix}*" oifname "${t.interface}" accept`,
      '  }',
      '  chain postrouting {',
      '    type nat hook postrouting priority srcnat; policy accept;',
      `    oifname "${t.interface}" masquerade`,
      '  }',
      '',
    ].join('\n'),
  );
  log.info({ interface: t.interface, address: t.address, peer: t.peer.endpoint, intranet: cfg.intranetPrefixes }, 'tunnel to the intranet up');
  return { close: () => backend.close() };
}
