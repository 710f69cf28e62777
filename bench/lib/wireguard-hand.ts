/**
 * A point-to-point wireguard-go link built the way an operator would by hand: `wg genkey`, wireguard-go in the
 * node namespace (so its UDP socket stays on the node), `wg set`, then the TUN moved into the pod namespace with
 * its MTU, address and route. The baseline for what a mesh-built WireGuard connection carries.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { UAPI_DIR } from '../../src/dataplane/wireguard/uapi.js';
import { Child } from './child.js';
import type { Cleanups } from './cleanup.js';
import type { BenchNamespaces, Netns } from './netns.js';
import type { UnderlayHost } from './underlay.js';
import { FatalError, waitFor } from './wait.js';

const run = promisify(execFile);

export interface HandWireguardEnd {
  node: UnderlayHost;
  pod: Netns;
  ifname: string;
  addr: string;
  listenPort: number;
}

async function keyPair(dir: string, name: string): Promise<{ privateFile: string; publicKey: string }> {
  const privateKey = (await run('wg', ['genkey'])).stdout.trim();
  const privateFile = path.join(dir, `${name}.key`);
  fs.writeFileSync(privateFile, `${privateKey}\n`, { mode: 0o600 });
  const pub = await new Promise<string>((resolve, reject) => {
    const p = execFile('wg', ['pubkey'], (err, stdout) => (err ? reject(err) : resolve(stdout.trim())));
    p.stdin!.end(`${privateKey}\n`);
  });
  return { privateFile, publicKey: pub };
}

export async function createHandWireguard(nss: BenchNamespaces, cleanups: Cleanups, dir: string, mtu: number, a: HandWireguardEnd, b: HandWireguardEnd): Promise<void> {
  const keys = [await keyPair(dir, a.ifname), await keyPair(dir, b.ifname)] as const;
  const ends = [a, b] as const;
  for (const [i, me] of ends.entries()) {
    const peer = ends[1 - i]!;
    const child = new Child(`wireguard-go ${me.ifname}`, 'ip', ['netns', 'exec', me.node.name, 'wireguard-go', '-f', me.ifname], { WG_PROCESS_FOREGROUND: '1' });
    nss.adopt(child.proc.pid);
    cleanups.push(async () => {
      await child.stop();
      fs.rmSync(path.join(UAPI_DIR, `${me.ifname}.sock`), { force: true });
    });
    await waitFor(`wireguard-go ${me.ifname} to serve its UAPI socket`, () => {
      if (!child.running) throw new FatalError(`wireguard-go ${me.ifname} exited:\n${child.tail()}`);
      return fs.existsSync(path.join(UAPI_DIR, `${me.ifname}.sock`));
    }, 10_000);
    await run('ip', ['netns', 'exec', me.node.name, 'wg', 'set', me.ifname,
      'private-key', keys[i]!.privateFile, 'listen-port', String(me.listenPort),
      'peer', keys[1 - i]!.publicKey, 'endpoint', `${peer.node.ip}:${peer.listenPort}`, 'allowed-ips', `${peer.addr}/32`, 'persistent-keepalive', '10']);
    await run('ip', ['-n', me.node.name, 'link', 'set', me.ifname, 'mtu', String(mtu)]);
    await run('ip', ['-n', me.node.name, 'link', 'set', me.ifname, 'netns', me.pod.name]);
    await run('ip', ['-n', me.pod.name, 'addr', 'add', `${me.addr}/32`, 'dev', me.ifname]);
    await run('ip', ['-n', me.pod.name, 'link', 'set', me.ifname, 'up']);
    await run('ip', ['-n', me.pod.name, 'route', 'add', `${peer.addr}/32`, 'dev', me.ifname]);
  }
}

/** MTU and kind of every non-loopback link in a namespace, by name. */
export async function linkMtus(ns: Netns): Promise<Map<string, { mtu: number; kind: string | undefined }>> {
  const { stdout } = await run('ip', ['-d', '-j', '-n', ns.name, 'link', 'show']);
  const links = JSON.parse(stdout || '[]') as { ifname: string; mtu: number; linkinfo?: { info_kind?: string } }[];
  return new Map(links.filter((l) => l.ifname !== 'lo').map((l) => [l.ifname, { mtu: l.mtu, kind: l.linkinfo?.info_kind }]));
}
