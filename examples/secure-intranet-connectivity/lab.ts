/**
 * A stand-in corporate network on one machine, for the demo, the tests and the benchmark of the seed's
 * example: the VPN gateway's uplink to a VPN concentrator (a namespace running the other end of the
 * WireGuard tunnel), and behind the concentrator an intranet host serving TCP. The namespaces are made by
 * the caller (each has its own naming and clean-up); this builds what goes in them.
 *
 *   gateway ns                         corp ns (concentrator)                      host ns
 *   uplink0 198.18.250.1/30 ──veth── wan0 198.18.250.2/30
 *   wg tunnel 198.18.251.1  ══════════ wg-mesh 198.18.251.2
 *                                      lan0 198.19.10.1/24 ──────────veth──────── eth0 198.19.10.10/24
 */
import { chmod, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { createWireguardBackend, generateKeyPair, rawPrivateKey, type WireguardBackend } from '../../src/dataplane/wireguard/index.js';
import { waitFor } from '../../src/util/wait-for.js';

export const INTRANET = {
  prefix: '198.19.10.0/24',
  host: '198.19.10.10',
  gatewayUplink: '198.18.250.1',
  concentrator: '198.18.250.2',
  gatewayTunnel: '198.18.251.1',
  concentratorTunnel: '198.18.251.2',
  wgPort: 51820,
} as const;

export interface Intranet {
  /** nse-vpn-gateway's NSM_VPN_CONFIG, with its private key beside it. */
  gatewayConfig: string;
  /** Stops the concentrator's wireguard-go (the namespaces are the caller's). */
  close(): Promise<void>;
}

async function ip(ns: string, args: string[]): Promise<void> {
  await execa('ip', ['-n', ns, ...args]);
}

/** A veth pair with each end born in its namespace, addressed and up. */
async function link(a: { ns: string; ifname: string; addr: string }, b: { ns: string; ifname: string; addr: string }): Promise<void> {
  await ip(a.ns, ['link', 'add', a.ifname, 'type', 'veth', 'peer', 'name', b.ifname, 'netns', b.ns]);
  for (const end of [a, b]) {
    await ip(end.ns, ['addr', 'add', end.addr, 'dev', end.ifname]);
    await ip(end.ns, ['link', 'set', end.ifname, 'up']);
  }
}

/**
 * Builds the corporate side for a VPN gateway that will run in `gatewayNs`: uplink, concentrator with its
 * WireGuard end (keys made here; the gateway's private key is written to `dir` for its config), intranet host.
 * `extraPrefixes` are handed to clients besides the intranet's (a benchmark adds the gateway's own address).
 */
export async function buildIntranet(o: { gatewayNs: string; corpNs: string; hostNs: string; dir: string; extraPrefixes?: string[] }): Promise<Intranet> {
  await link({ ns: o.gatewayNs, ifname: 'uplink0', addr: `${INTRANET.gatewayUplink}/30` }, { ns: o.corpNs, ifname: 'wan0', addr: `${INTRANET.concentrator}/30` });
  await link({ ns: o.corpNs, ifname: 'lan0', addr: '198.19.10.1/24' }, { ns: o.hostNs, ifname: 'eth0', addr: `${INTRANET.host}/24` });
  await ip(o.hostNs, ['route', 'add', 'default', 'via', '198.19.10.1']);
  await execa('ip', ['netns', 'exec', o.corpNs, 'tee', '/proc/sys/net/ipv4/ip_forward'], { input: '1\n' });

  const gateway = generateKeyPair();
  const corp = generateKeyPair();
  const keyFile = path.join(o.dir, 'vpn-gateway.key');
  const raw = rawPrivateKey(gateway.privateKey);
  try {
    await writeFile(keyFile, `${raw.toString('base64')}\n`, { mode: 0o600 });
  } finally {
    raw.fill(0);
  }
  await chmod(keyFile, 0o600);

  const backend: WireguardBackend = createWireguardBackend({ namePrefix: 'nsmcorp' });
  const corpNs = `/var/run/netns/${o.corpNs}`;
  try {
    await backend.create({
      connId: 'intranet-concentrator',
      underlayNetns: corpNs,
      listenPort: INTRANET.wgPort,
      privateKey: corp.privateKey,
      // The gateway source-translates mesh traffic to its tunnel address: that is all that comes through.
      peer: { publicKey: gateway.publicKey, endpoint: `${INTRANET.gatewayUplink}:${INTRANET.wgPort}`, allowedIps: [`${INTRANET.gatewayTunnel}/32`] },
      end: { netns: corpNs, ifname: 'wg-mesh', addrs: [`${INTRANET.concentratorTunnel}/32`], routes: [{ prefix: `${INTRANET.gatewayTunnel}/32` }] },
      mtu: 1420,
    });
  } catch (e) {
    await backend.close();
    throw e;
  }

  const gatewayConfig = path.join(o.dir, 'vpn-gateway.yaml');
  await writeFile(
    gatewayConfig,
    [
      'tunnel:',
      '  interface: wg-intranet',
      `  address: ${INTRANET.gatewayTunnel}/32`,
      `  listenPort: ${INTRANET.wgPort}`,
      '  privateKeyFile: vpn-gateway.key',
      '  peer:',
      `    publicKey: ${corp.publicKey}`,
      `    endpoint: ${INTRANET.concentrator}:${INTRANET.wgPort}`,
      // The concentrator's own address too: its ICMP errors (a hop of a traceroute, "fragmentation needed") come from it.
      `    allowedIps: [${INTRANET.prefix}, ${INTRANET.concentratorTunnel}/32]`,
      'intranetPrefixes:',
      ...[INTRANET.prefix, ...(o.extraPrefixes ?? [])].map((p) => `  - ${p}`),
      '',
    ].join('\n'),
  );
  return { gatewayConfig, close: () => backend.close() };
}

export interface TcpService {
  stop(): Promise<void>;
}

const SERVICE_SCRIPT = `
const net = require('node:net');
const [addr, ...ports] = process.argv.slice(1);
let left = ports.length;
for (const port of ports) {
  net.createServer((s) => { s.on('error', () => {}); s.end('intranet ' + port + '\\n'); })
    .listen(Number(port), addr, () => { if (--left === 0) console.log('ready'); });
}`;

/** A tiny TCP service in `ns`: answers "intranet <port>" on each port, then closes. Resolves once it listens. */
export async function startTcpService(ns: string, addr: string, ports: number[]): Promise<TcpService> {
  const proc: ResultPromise = execa('ip', ['netns', 'exec', ns, process.execPath, '-e', SERVICE_SCRIPT, addr, ...ports.map(String)], { reject: false });
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  await waitFor(`the TCP service in ${ns} to listen on ${addr}:${ports.join(',')}`, () => {
    if (proc.exitCode !== null) throw new Error(`it exited: ${String(proc.stderr ?? '')}`);
    return out.includes('ready');
  });
  return {
    async stop() {
      proc.kill('SIGTERM');
      await proc;
    },
  };
}

export interface ProbeResult {
  ok: boolean;
  /** The service's answer, or why the connection failed (a timeout, when a firewall drops it). */
  detail: string;
}

const PROBE_SCRIPT = `
const net = require('node:net');
const [addr, port, ms] = process.argv.slice(1);
const s = net.connect({ host: addr, port: Number(port) });
let got = '';
const t = setTimeout(() => { console.log('ERR timed out after ' + ms + ' ms'); process.exit(1); }, Number(ms));
s.on('data', (d) => (got += d));
s.on('end', () => { clearTimeout(t); console.log('OK ' + got.trim()); process.exit(0); });
s.on('error', (e) => { clearTimeout(t); console.log('ERR ' + e.code); process.exit(1); });`;

/** Connects from `ns` to addr:port and reads the answer, with a deadline. */
export async function tcpProbe(ns: string, addr: string, port: number, timeoutMs = 2000): Promise<ProbeResult> {
  const r = await execa('ip', ['netns', 'exec', ns, process.execPath, '-e', PROBE_SCRIPT, addr, String(port), String(timeoutMs)], {
    reject: false,
    timeout: timeoutMs + 5000,
  });
  const line = String(r.stdout).trim();
  return { ok: r.exitCode === 0 && line.startsWith('OK '), detail: line.replace(/^(OK|ERR) /, '') || String(r.stderr).trim() };
}
