import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { inspect } from 'node:util';
import { execa } from 'execa';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALIAS_PREFIX, type VxlanEnd } from '../../src/dataplane/types.js';
import { createNetlinkDataplane, type NetlinkDataplane } from '../../src/dataplane/veth/index.js';
import {
  PortAllocator,
  UapiError,
  WG_OVERHEAD_V4,
  WG_OVERHEAD_V6,
  base64KeyToHex,
  createWireguardBackend,
  formatEndpoint,
  generateKeyPair,
  hexKeyToBase64,
  keyFromBase64,
  parseEndpoint,
  privateKeyFromRaw,
  publicKeyOf,
  rawPrivateKey,
  uapiGet,
  uapiSocketPath,
  wgIfname,
  wgMtu,
  type WgKeyPair,
  type WireguardBackend,
  type WireguardEnd,
  type WireguardEndInfo,
} from '../../src/dataplane/wireguard/index.js';
import { buildSetRequest, parseGetAnswer } from '../../src/dataplane/wireguard/uapi.js';
import { OWNER_ENV, cmdlineOf, isRunning, listPids, startTimeOf } from '../../src/dataplane/wireguard/proc.js';
import { createNetns, deleteNetns, execIn, ping, sweepStale, tag, type Netns } from '../helpers/netns.js';
import { pingDf, startCapture, type Packet } from '../helpers/packets.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Two "nodes" (namespaces joined by a veth underlay, 198.18.0.0/30) with pod namespaces behind them. Each
 * node has its own backend, as each would have its own nsmd; both share the machine's /var/run/wireguard.
 */

const PREFIX = `${tag}w`; // per-run, so cleanupStale here never touches another run's instances
const IP1 = '198.18.0.1';
const IP2 = '198.18.0.2';
const U1 = `${tag}u1`;
const U2 = `${tag}u2`;

/** Everything every logger wrote, to prove the private keys never appear in it. */
const logText: string[] = [];
const logger = pino({ level: 'trace' }, { write: (s: string) => void logText.push(s) });
/** Every private key used, and every error message seen, for the same check. */
const secrets: WgKeyPair[] = [];
const errorTexts: string[] = [];
const timings: Record<string, number[]> = { createEnd: [], deleteEnd: [] };

let dp: NetlinkDataplane;
let b1: WireguardBackend;
let b2: WireguardBackend;
let n1: Netns;
let n2: Netns;
let p1: Netns;
let p2: Netns;
const ports1 = new PortAllocator();
const ports2 = new PortAllocator();

function keys(): WgKeyPair {
  const k = generateKeyPair();
  secrets.push(k);
  return k;
}

interface Pair {
  e1: WireguardEnd; // node 1, pod p1
  e2: WireguardEnd; // node 2, pod p2
  a1: string; // pod addresses
  a2: string;
  v61: string;
  v62: string;
}

function pair(n: number, opts: { mtu?: number; pod1?: Netns; pod2?: Netns } = {}): Pair {
  const k1 = keys();
  const k2 = keys();
  const port1 = ports1.allocate();
  const port2 = ports2.allocate();
  const [a1, a2, v61, v62] = [`169.254.${n}.1`, `169.254.${n}.2`, `fd00:${n.toString(16)}::1`, `fd00:${n.toString(16)}::2`];
  const connId = `${tag}-wg-${n}`;
  const mtu = opts.mtu ?? 1400;
  const common = { connId, mtu };
  return {
    a1,
    a2,
    v61,
    v62,
    e1: {
      ...common,
      underlayNetns: n1.path,
      listenPort: port1,
      privateKey: k1.privateKey,
      peer: { publicKey: k2.publicKey, endpoint: formatEndpoint(IP2, port2), allowedIps: ['0.0.0.0/0', '::/0'] },
      end: { netns: (opts.pod1 ?? p1).path, ifname: `${tag}g${n}`, addrs: [`${a1}/32`, `${v61}/128`], routes: [{ prefix: `${a2}/32` }, { prefix: `${v62}/128` }] },
    },
    e2: {
      ...common,
      underlayNetns: n2.path,
      listenPort: port2,
      privateKey: k2.privateKey,
      peer: { publicKey: k1.publicKey, endpoint: formatEndpoint(IP1, port1), allowedIps: ['0.0.0.0/0', '::/0'] },
      end: { netns: (opts.pod2 ?? p2).path, ifname: `${tag}g${n}`, addrs: [`${a2}/32`, `${v62}/128`], routes: [{ prefix: `${a1}/32` }, { prefix: `${v61}/128` }] },
    },
  };
}

async function timed<T>(bucket: string, f: () => Promise<T>): Promise<T> {
  const t0 = performance.now();
  const v = await f();
  timings[bucket]?.push(performance.now() - t0);
  return v;
}

/**
 * Responder first, as upstream's flow has it (the server end exists before the client learns its key):
 * the second end's first handshake then meets a configured peer. Created the other way round, or at the
 * very same moment, the first handshake can wait out WireGuard's 5 s REKEY_TIMEOUT.
 */
async function connect(p: Pair): Promise<[WireguardEndInfo, WireguardEndInfo]> {
  const i2 = await timed('createEnd', () => b2.create(p.e2));
  const i1 = await timed('createEnd', () => b1.create(p.e1));
  return [i1, i2];
}

async function disconnect(p: Pair): Promise<void> {
  // Only real deletions go into the timings; an end that already died makes delete a no-op.
  for (const [b, e] of [[b1, p.e1], [b2, p.e2]] as const) {
    if ((await b.list()).some((x) => x.connId === e.connId)) await timed('deleteEnd', () => b.delete(e.connId));
    else await b.delete(e.connId);
  }
  ports1.free(p.e1.listenPort);
  ports2.free(p.e2.listenPort);
}

async function stdoutOf(ns: Netns, cmd: string[]): Promise<string> {
  return String((await execIn(ns, cmd)).stdout);
}

async function udpListeners(ns: Netns, port: number): Promise<number> {
  const out = await stdoutOf(ns, ['ss', '-Hlun', 'sport', '=', `:${port}`]);
  return out.split('\n').filter((l) => l.trim() !== '').length;
}

/** IPv4 fragments the namespace's stack has created (outer WireGuard packets are IPv4 here). */
async function fragCreates(ns: Netns): Promise<number> {
  const lines = (await stdoutOf(ns, ['cat', '/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Ip:'));
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf('FragCreates')]);
}

/** wireguard-go processes (by command line) running a given interface name. */
function wgProcesses(ifname: string): number[] {
  return listPids().filter((pid) => {
    const argv = cmdlineOf(pid);
    return !!argv && /wireguard-go$/.test(argv[0] ?? '') && argv[argv.length - 1] === ifname;
  });
}

beforeAll(async () => {
  await sweepStale();
  [n1, n2, p1, p2] = (await Promise.all(['n1', 'n2', 'p1', 'p2'].map((n) => createNetns(`wg-${n}`)))) as [Netns, Netns, Netns, Netns];
  await execIn(n1, ['ip', 'link', 'add', U1, 'type', 'veth', 'peer', 'name', U2, 'netns', n2.name]);
  await execIn(n1, ['ip', 'addr', 'add', `${IP1}/30`, 'dev', U1]);
  await execIn(n2, ['ip', 'addr', 'add', `${IP2}/30`, 'dev', U2]);
  await execIn(n1, ['ip', 'link', 'set', U1, 'up']);
  await execIn(n2, ['ip', 'link', 'set', U2, 'up']);
  dp = await createNetlinkDataplane({ logger });
  b1 = createWireguardBackend({ logger: logger.child({ node: 'n1' }), namePrefix: PREFIX });
  b2 = createWireguardBackend({ logger: logger.child({ node: 'n2' }), namePrefix: PREFIX });
});

afterAll(async () => {
  await Promise.allSettled([b1?.close(), b2?.close()]);
  await dp?.close();
  const stats = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length ? `n=${s.length} min=${s[0]!.toFixed(1)} median=${s[Math.floor(s.length / 2)]!.toFixed(1)} max=${s[s.length - 1]!.toFixed(1)} ms` : 'n=0';
  };
  console.info(`wireguard end create: ${stats(timings.createEnd!)}; delete: ${stats(timings.deleteEnd!)}`);
});

describe('wireguard keys, numbers and UAPI encoding', () => {
  it('makes X25519 key pairs that agree with wg(8), and never serialises a private key', async () => {
    const k = generateKeyPair();
    expect(publicKeyOf(k.privateKey)).toBe(k.publicKey);
    const raw = rawPrivateKey(k.privateKey);
    expect(raw).toHaveLength(32);
    const r = await execa('wg', ['pubkey'], { input: `${raw.toString('base64')}\n` });
    expect(String(r.stdout).trim()).toBe(k.publicKey);
    expect(publicKeyOf(raw)).toBe(k.publicKey);
    expect(publicKeyOf(privateKeyFromRaw(raw))).toBe(k.publicKey);
    // A key from wg genkey works the other way round too.
    const wgPriv = String((await execa('wg', ['genkey'])).stdout).trim();
    const wgPub = String((await execa('wg', ['pubkey'], { input: `${wgPriv}\n` })).stdout).trim();
    expect(publicKeyOf(keyFromBase64(wgPriv))).toBe(wgPub);

    const hex = raw.toString('hex');
    const b64 = raw.toString('base64');
    for (const text of [JSON.stringify({ k: k.privateKey }), JSON.stringify(k), inspect(k, { depth: 5 }), String(k.privateKey)]) {
      expect(text).not.toContain(hex);
      expect(text).not.toContain(b64);
    }
    expect(JSON.stringify(k.privateKey)).toBe('{}');

    expect(hexKeyToBase64(base64KeyToHex(k.publicKey))).toBe(k.publicKey);
    expect(base64KeyToHex(k.publicKey)).toMatch(/^[0-9a-f]{64}$/);
    for (const bad of ['', 'abc', k.publicKey.slice(0, 43), `${k.publicKey.slice(0, 42)}B=`, `${k.publicKey}\n`]) {
      expect(() => keyFromBase64(bad)).toThrow(/44 characters/);
    }
  });

  it('computes the MTU with upstream overheads', () => {
    expect(WG_OVERHEAD_V4).toBe(60);
    expect(WG_OVERHEAD_V6).toBe(80);
    expect(wgMtu(1500, IP1)).toBe(1440);
    expect(wgMtu(1500, 'fd00:18::1')).toBe(1420);
    expect(() => wgMtu(1500, 'nope')).toThrow(/invalid underlay/);
  });

  it('allocates ports from 51820, never one twice while in use', () => {
    const a = new PortAllocator({ first: 51820, last: 51823 });
    expect([a.allocate(), a.allocate(), a.allocate()]).toEqual([51820, 51821, 51822]);
    expect(a.free(51821)).toBe(true);
    expect(a.free(51821)).toBe(false);
    // Next-fit: the freed port comes back only after the rest of the range.
    expect(a.allocate()).toBe(51823);
    expect(a.allocate()).toBe(51821);
    expect(() => a.allocate()).toThrow(expect.objectContaining({ code: 'EADDRNOTAVAIL' }));
    expect(() => a.reserve(51820)).toThrow(expect.objectContaining({ code: 'EADDRINUSE' }));
    a.free(51822);
    a.reserve(51822);
    expect(a.inUse).toBe(4);
    expect(() => new PortAllocator({ first: 0 })).toThrow();
    const seen = new Set<number>();
    const b = new PortAllocator();
    for (let i = 0; i < 1000; i++) seen.add(b.allocate());
    expect(seen.size).toBe(1000);
    expect(Math.min(...seen)).toBe(51820);
  });

  it('encodes set requests exactly and refuses values that could inject lines', () => {
    const raw = Buffer.from(Array.from({ length: 32 }, (_, i) => i + 1));
    const peer = generateKeyPair().publicKey;
    const req = buildSetRequest({
      privateKey: raw,
      listenPort: 51820,
      replacePeers: true,
      peers: [{ publicKey: peer, endpoint: '198.18.0.2:51821', persistentKeepaliveInterval: 10, replaceAllowedIps: true, allowedIps: ['0.0.0.0/0', '::/0'] }],
    });
    expect(req.toString()).toBe(
      `set=1\nprivate_key=${raw.toString('hex')}\nlisten_port=51820\nreplace_peers=true\npublic_key=${base64KeyToHex(peer)}\n` +
        'endpoint=198.18.0.2:51821\npersistent_keepalive_interval=10\nreplace_allowed_ips=true\nallowed_ip=0.0.0.0/0\nallowed_ip=::/0\n\n',
    );
    // The caller's key buffer is left as it was; only the copies are zeroed.
    expect(raw[0]).toBe(1);
    const inject = `198.18.0.2:51821\nprivate_key=${'00'.repeat(32)}`;
    expect(() => buildSetRequest({ peers: [{ publicKey: peer, endpoint: inject }] })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => buildSetRequest({ peers: [{ publicKey: peer, allowedIps: ['10.0.0.0/8\nremove=true'] }] })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => buildSetRequest({ listenPort: 70000 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(parseEndpoint('[fd00:18::2]:51820')).toEqual({ ip: 'fd00:18::2', port: 51820, family: 6 });
    expect(formatEndpoint('fd00:18:0::2', 51820)).toBe('[fd00:18::2]:51820');
    expect(() => parseEndpoint('fd00:18::2:51820')).toThrow();
    expect(() => parseEndpoint('198.18.0.2')).toThrow();
  });

  it('parses get answers, dropping the private key, and reports errno as a typed error', async () => {
    const peerHex = 'ab'.repeat(32);
    const answer =
      `private_key=${'11'.repeat(32)}\nlisten_port=51820\npublic_key=${peerHex}\npreshared_key=${'00'.repeat(32)}\nprotocol_version=1\n` +
      'endpoint=198.18.0.2:51821\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=500000000\ntx_bytes=92\nrx_bytes=148\n' +
      'persistent_keepalive_interval=10\nallowed_ip=0.0.0.0/0\nallowed_ip=::/0\nerrno=0\n\n';
    const dev = parseGetAnswer(answer);
    expect(dev).toEqual({
      listenPort: 51820,
      fwmark: undefined,
      peers: [
        {
          publicKey: Buffer.from(peerHex, 'hex').toString('base64'),
          endpoint: '198.18.0.2:51821',
          lastHandshake: new Date(1700000000500),
          rxBytes: 148,
          txBytes: 92,
          persistentKeepaliveInterval: 10,
          allowedIps: ['0.0.0.0/0', '::/0'],
          protocolVersion: 1,
        },
      ],
    });
    expect(JSON.stringify(dev)).not.toContain('11'.repeat(32));
    expect(parseGetAnswer(`public_key=${peerHex}\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\nerrno=0\n\n`).peers[0]!.lastHandshake).toBeUndefined();
    let err: unknown;
    try {
      parseGetAnswer('errno=-22\n\n', 'x');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UapiError);
    expect(err).toMatchObject({ code: 'EINVAL', errno: -22 });
    await expect(uapiGet(`${PREFIX}none`)).rejects.toMatchObject({ name: 'UapiError', code: 'ENOENT' });
  });

  it('derives node-side names that are unique per underlay namespace and connection', async () => {
    const a = wgIfname('c1', n1.path, PREFIX);
    expect(a).toMatch(new RegExp(`^${PREFIX}[0-9a-f]+$`));
    expect(a).toHaveLength(15);
    expect(wgIfname('c1', n1.path, PREFIX)).toBe(a);
    expect(wgIfname('c1', n2.path, PREFIX)).not.toBe(a);
    expect(wgIfname('c2', n1.path, PREFIX)).not.toBe(a);
    expect(b1.ifnameFor('c1', n1.path)).toBe(a);
    expect(() => wgIfname('c1', n1.path, 'Bad-Prefix')).toThrow(/prefix/);
  });
});

describe('wireguard-go data plane', () => {
  it('connects two pods across nodes: ping both ways over v4 and v6, handshake visible in get', async () => {
    const p = pair(1);
    const [i1, i2] = await connect(p);
    expect(i1).toMatchObject({ connId: p.e1.connId, podIfname: `${tag}g1`, netns: p1.path, underlayNetns: n1.path, state: 'up', listenPort: p.e1.listenPort });
    expect(i1.ifname).toBe(b1.ifnameFor(p.e1.connId, n1.path));
    expect(i1.ifname).not.toBe(i2.ifname);

    expect(await ping(p1, p.a2)).toBe(true);
    expect(await ping(p2, p.a1)).toBe(true);
    expect(await ping(p1, p.v62)).toBe(true);
    expect(await ping(p2, p.v61)).toBe(true);

    const d1 = await b1.get(p.e1.connId);
    expect(d1.listenPort).toBe(p.e1.listenPort);
    expect(d1.peers).toHaveLength(1);
    const peer = d1.peers[0]!;
    expect(peer).toMatchObject({
      publicKey: p.e1.peer.publicKey,
      endpoint: `${IP2}:${p.e2.listenPort}`,
      persistentKeepaliveInterval: 10,
      allowedIps: expect.arrayContaining(['0.0.0.0/0', '::/0']),
    });
    expect(peer.lastHandshake).toBeInstanceOf(Date);
    expect(Math.abs(peer.lastHandshake!.getTime() - Date.now())).toBeLessThan(60_000);
    expect(peer.rxBytes).toBeGreaterThan(0);
    expect(peer.txBytes).toBeGreaterThan(0);
    const d2 = await uapiGet(i2.ifname);
    expect(d2.peers[0]!.publicKey).toBe(p.e2.peer.publicKey);
    expect(d2.peers[0]!.lastHandshake).toBeInstanceOf(Date);

    // The TUN sits in the pod with the connection's alias, MTU and addresses; nothing is left in the node.
    const link = (await dp.snapshot(p1.path)).links.find((l) => l.ifname === `${tag}g1`);
    expect(link).toMatchObject({ kind: 'tun', alias: `${ALIAS_PREFIX}${p.e1.connId}`, mtu: 1400, up: true });
    expect([...link!.addrs].sort()).toEqual([`${p.a1}/32`, `${p.v61}/128`].sort());
    expect(await dp.linkExists(n1.path, i1.ifname)).toBe(false);
    expect(await dp.linkExists(n1.path, `${tag}g1`)).toBe(false);
    // wireguard-go and its UDP socket live in the node namespace, not in the pod.
    expect(readlinkSync(`/proc/${i1.pid}/ns/net`)).toBe(`net:[${statSync(n1.path).ino}]`);
    expect(await udpListeners(n1, p.e1.listenPort)).toBeGreaterThan(0);
    expect(await udpListeners(p1, p.e1.listenPort)).toBe(0);
    expect(existsSync(uapiSocketPath(i1.ifname))).toBe(true);
    expect((await b1.list()).map((x) => x.connId)).toEqual([p.e1.connId]);

    await disconnect(p);
  });

  it('encrypts: a marker sent through WireGuard never appears on the underlay, the same marker over VXLAN does', async () => {
    const p = pair(2);
    await connect(p);
    const vx: [VxlanEnd, VxlanEnd] = [
      {
        connId: `${tag}-vx`,
        underlayNetns: n1.path,
        localIp: IP1,
        remoteIp: IP2,
        vni: 7002,
        mtu: 1400,
        end: { netns: p1.path, ifname: `${tag}x2`, addrs: ['169.254.72.1/32'], routes: [{ prefix: '169.254.72.2/32' }] },
      },
      {
        connId: `${tag}-vx`,
        underlayNetns: n2.path,
        localIp: IP2,
        remoteIp: IP1,
        vni: 7002,
        mtu: 1400,
        end: { netns: p2.path, ifname: `${tag}x2`, addrs: ['169.254.72.2/32'], routes: [{ prefix: '169.254.72.1/32' }] },
      },
    ];
    await Promise.all(vx.map((e) => dp.createVxlan(e)));

    const marker = randomBytes(16);
    const wgPorts = new Set([p.e1.listenPort, p.e2.listenPort]);
    const isWg = (k: Packet) => !!k.udp && (wgPorts.has(k.udp.sport) || wgPorts.has(k.udp.dport));
    const isVx = (k: Packet) => !!k.udp && k.udp.dport === 4789;
    const hasMarker = (k: Packet) => k.raw.includes(marker);
    const cap = await startCapture(n1, U1, ['udp']);
    let packets: Packet[];
    try {
      const pingMarked = (from: Netns, addr: string) =>
        execIn(from, ['ping', '-4', '-c', '3', '-i', '0.2', '-W', '2', '-s', '120', '-p', marker.toString('hex'), addr]);
      await pingMarked(p1, p.a2);
      await waitFor('the WireGuard packets in the capture', () => cap.packets().filter(isWg).length >= 6, 10_000);
      await pingMarked(p1, '169.254.72.2');
      await waitFor('the VXLAN packets in the capture', () => cap.packets().filter((k) => isVx(k) && hasMarker(k)).length >= 6, 10_000);
    } finally {
      packets = await cap.stop();
    }
    const wg = packets.filter(isWg);
    expect(wg.length).toBeGreaterThanOrEqual(6);
    // The marked pings did cross as WireGuard data: packets big enough to hold them, none showing the marker.
    expect(wg.filter((k) => k.udp!.payload.length >= 120).length).toBeGreaterThanOrEqual(6);
    expect(wg.filter(hasMarker)).toHaveLength(0);
    // Over VXLAN the same bytes are there to read: requests and replies.
    expect(packets.filter((k) => isVx(k) && hasMarker(k)).length).toBeGreaterThanOrEqual(6);
    // And nothing but VXLAN ever showed it.
    expect(packets.filter(hasMarker).every(isVx)).toBe(true);

    await Promise.all(vx.map((e) => dp.deleteVxlan({ netns: e.end.netns, ifname: e.end.ifname })));
    await disconnect(p);
  });

  it('carries exactly MTU-sized packets with DF set, refuses one byte more, and never fragments the outer packets', async () => {
    const mtu = wgMtu(await dp.underlayMtu(n1.path, IP1), IP1);
    expect(mtu).toBe(1440);
    const p = pair(3, { mtu });
    await connect(p);
    expect(await ping(p1, p.a2)).toBe(true);
    const frag = [await fragCreates(n1), await fragCreates(n2)];
    // v4: 20 IP + 8 ICMP around the payload; v6: 40 + 8.
    expect((await pingDf(p1, p.a2, mtu - 28)).ok).toBe(true);
    expect((await pingDf(p2, p.a1, mtu - 28)).ok).toBe(true);
    expect((await pingDf(p1, p.v62, mtu - 48)).ok).toBe(true);
    const over = await pingDf(p1, p.a2, mtu - 27);
    expect(over.ok).toBe(false);
    expect(over.out).toContain(`mtu=${mtu}`);
    expect((await pingDf(p1, p.v62, mtu - 47)).ok).toBe(false);
    // wireguard-go knew the MTU, so its padding kept every outer packet within the underlay's 1500.
    expect([await fragCreates(n1), await fragCreates(n2)]).toEqual(frag);
    await disconnect(p);
  });

  it('reports a wireguard-go killed with SIGKILL through onExit and leaves nothing behind', async () => {
    const exits: Array<{ connId: string; code: number | null; signal: string | null }> = [];
    const off = b1.onExit((connId, code, signal) => exits.push({ connId, code, signal }));
    const p = pair(4);
    const [i1] = await connect(p);
    expect(await ping(p1, p.a2)).toBe(true);
    process.kill(i1.pid!, 'SIGKILL');
    const ev = await waitFor('onExit for the killed end', () => exits.find((x) => x.connId === p.e1.connId), 5000);
    expect(ev).toEqual({ connId: p.e1.connId, code: null, signal: 'SIGKILL' });
    // By the time onExit runs, device, socket and bookkeeping are gone.
    expect(await dp.linkExists(p1.path, `${tag}g4`)).toBe(false);
    expect(existsSync(uapiSocketPath(i1.ifname))).toBe(false);
    expect(await b1.list()).toEqual([]);
    expect(isRunning(i1.pid!)).toBe(false);
    await expect(b1.get(p.e1.connId)).rejects.toMatchObject({ code: 'ENOENT' });
    // Deleting it afterwards is a no-op, and the connection can be made again at once (name and port free).
    await b1.delete(p.e1.connId);
    await timed('createEnd', () => b1.create(p.e1));
    expect(await waitFor('ping after re-creating the killed end', () => ping(p1, p.a2), 15_000)).toBe(true);
    expect(exits).toHaveLength(1);
    off();
    await disconnect(p);
  });

  it('reports the end as gone when its pod namespace is deleted', async () => {
    const pod = await createNetns('wg-p5');
    const exits: string[] = [];
    const off = b1.onExit((connId) => exits.push(connId));
    const p = pair(5, { pod1: pod });
    const [i1] = await connect(p);
    expect(await ping(pod, p.a2)).toBe(true);
    await deleteNetns(pod);
    // The TUN dies with the namespace; wireguard-go notices on its next read and exits.
    await waitFor('onExit after the pod namespace went away', () => exits.includes(p.e1.connId), 10_000);
    expect(isRunning(i1.pid!)).toBe(false);
    expect(existsSync(uapiSocketPath(i1.ifname))).toBe(false);
    off();
    await disconnect(p);
  });

  it('delete leaves no process, socket, device or UDP socket, and is idempotent; close stops everything', async () => {
    const p = pair(6);
    const [i1, i2] = await connect(p);
    expect(await ping(p1, p.a2)).toBe(true);
    await timed('deleteEnd', () => b1.delete(p.e1.connId));
    expect(isRunning(i1.pid!)).toBe(false);
    expect(wgProcesses(i1.ifname)).toEqual([]);
    expect(existsSync(uapiSocketPath(i1.ifname))).toBe(false);
    expect(await dp.linkExists(p1.path, `${tag}g6`)).toBe(false);
    expect(await udpListeners(n1, p.e1.listenPort)).toBe(0);
    await b1.delete(p.e1.connId);
    await b1.delete(i1.ifname);
    // By node-side name works too.
    await timed('deleteEnd', () => b2.delete(i2.ifname));
    expect(isRunning(i2.pid!)).toBe(false);
    expect(await dp.linkExists(p2.path, `${tag}g6`)).toBe(false);
    ports1.free(p.e1.listenPort);
    ports2.free(p.e2.listenPort);

    // A delete issued while create is still running waits for it, then removes the end.
    const q = pair(7);
    const creating = b1.create(q.e1);
    const deleting = b1.delete(q.e1.connId);
    const qi = await creating;
    await deleting;
    expect(isRunning(qi.pid!)).toBe(false);
    expect(await b1.list()).toEqual([]);
    ports1.free(q.e1.listenPort);
    ports2.free(q.e2.listenPort);

    const b3 = createWireguardBackend({ logger: logger.child({ node: 'n1-b3' }), namePrefix: PREFIX });
    const r1 = pair(8);
    const r2 = pair(9);
    const infos = await Promise.all([b3.create(r1.e1), b3.create(r2.e1)]);
    await b3.close();
    for (const info of infos) {
      expect(isRunning(info.pid!)).toBe(false);
      expect(existsSync(uapiSocketPath(info.ifname))).toBe(false);
      expect(await dp.linkExists(p1.path, info.podIfname)).toBe(false);
    }
    await expect(b3.create(pair(10).e1)).rejects.toMatchObject({ code: 'ECLOSED' });
  });

  it('creation is all or nothing', async () => {
    const leftovers = async (ifname: string, podIfname: string) => ({
      processes: wgProcesses(ifname),
      socket: existsSync(uapiSocketPath(ifname)),
      inNode: await dp.linkExists(n1.path, ifname),
      inPod: await dp.linkExists(p1.path, podIfname),
      inPodUnrenamed: await dp.linkExists(p1.path, ifname),
      listed: (await b1.list()).length,
    });
    const none = (podIfname: string) => ({ processes: [], socket: false, inNode: false, inPod: podIfname === `${tag}busy`, inPodUnrenamed: false, listed: 0 });

    // The pod already has a device of that name: the move's rename fails after the TUN got into the pod.
    await execIn(p1, ['ip', 'link', 'add', `${tag}busy`, 'type', 'veth', 'peer', 'name', `${tag}busz`]);
    const busy = pair(11);
    busy.e1.end.ifname = `${tag}busy`;
    const err = await b1.create(busy.e1).catch((e: Error) => e);
    errorTexts.push(String((err as Error).message));
    expect(err).toMatchObject({ name: 'DataplaneError', code: 'EEXIST' });
    const ifname = b1.ifnameFor(busy.e1.connId, n1.path);
    expect(await leftovers(ifname, `${tag}busy`)).toEqual(none(`${tag}busy`));
    expect((await dp.snapshot(p1.path)).links.find((l) => l.ifname === `${tag}busy`)?.kind).toBe('veth');

    // The pod namespace does not exist.
    const gone = pair(12);
    gone.e1.end.netns = `/var/run/netns/${tag}-no-such-netns`;
    const err2 = await b1.create(gone.e1).catch((e: Error) => e);
    errorTexts.push(String((err2 as Error).message));
    expect(err2).toMatchObject({ code: 'ENOENT', message: expect.stringContaining('does not exist') });
    expect(await leftovers(b1.ifnameFor(gone.e1.connId, n1.path), `${tag}g12`)).toEqual(none(`${tag}g12`));

    // The listen port is taken in the node: wireguard-go refuses it, over the UAPI (errno -98) when the device
    // was already up at configuration time, else when it comes up (seen in its log); EADDRINUSE either way.
    const first = pair(13);
    await b1.create(first.e1);
    const clash = pair(14);
    clash.e1.listenPort = first.e1.listenPort;
    const tClash = performance.now();
    const err3 = await b1.create(clash.e1).catch((e: Error) => e);
    errorTexts.push(String((err3 as Error).message));
    expect(err3).toMatchObject({ code: 'EADDRINUSE' });
    expect(performance.now() - tClash).toBeLessThan(3000);
    expect(wgProcesses(b1.ifnameFor(clash.e1.connId, n1.path))).toEqual([]);

    // Same connection twice, and a bad spec: refused before anything starts.
    await expect(b1.create(first.e1)).rejects.toMatchObject({ code: 'EEXIST' });
    const bad = pair(15);
    await expect(b1.create({ ...bad.e1, peer: { ...bad.e1.peer, publicKey: 'not-a-key' } })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(b1.create({ ...bad.e1, peer: { ...bad.e1.peer, endpoint: `${IP2}:1\nlisten_port=1` } })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(b1.create({ ...bad.e1, ifname: 'wg0' })).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(b1.create({ ...bad.e1, privateKey: Buffer.alloc(31) })).rejects.toMatchObject({ code: 'EINVAL' });
    await b1.delete(first.e1.connId);
    expect(await b1.list()).toEqual([]);
    await execIn(p1, ['ip', 'link', 'del', `${tag}busy`]);
  });

  it('cleanupStale kills instances of a dead nsmd, spares a live one, removes stale sockets', async () => {
    const start = (name: string, owner: string | undefined): ChildProcess =>
      spawn('nsenter', [`--net=${n1.path}`, '--', 'wireguard-go', '-f', `${PREFIX}${name}`], {
        stdio: 'ignore',
        env: { PATH: process.env.PATH, WG_PROCESS_FOREGROUND: '1', ...(owner ? { [OWNER_ENV]: owner } : {}) },
      });
    const exited = (c: ChildProcess) => new Promise<void>((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve() : c.once('exit', () => resolve())));
    // pid_max is at most 2^22, so this owner cannot be running.
    const dead = start('dead1', '4194304:1');
    const live = start('live1', `${process.ppid}:${startTimeOf(process.ppid)}`);
    const unmarked = start('nomark', undefined);
    const killed = start('stale1', '4194304:1');
    try {
      await waitFor('the four UAPI sockets', () => ['dead1', 'live1', 'nomark', 'stale1'].every((n) => existsSync(uapiSocketPath(`${PREFIX}${n}`))), 10_000);
      killed.kill('SIGKILL');
      await exited(killed);
      expect(existsSync(uapiSocketPath(`${PREFIX}stale1`))).toBe(true);

      const report = await b1.cleanupStale();
      expect(report.killed).toEqual([{ pid: dead.pid, ifname: `${PREFIX}dead1` }]);
      expect(report.spared).toEqual([{ pid: live.pid, ifname: `${PREFIX}live1` }]);
      expect(report.removedSockets).toEqual([`${PREFIX}stale1`]);
      await exited(dead);
      expect(existsSync(uapiSocketPath(`${PREFIX}dead1`))).toBe(false);
      expect(isRunning(live.pid!)).toBe(true);
      expect(isRunning(unmarked.pid!)).toBe(true);
      expect(existsSync(uapiSocketPath(`${PREFIX}live1`))).toBe(true);
      // Nothing of ours is left for a second pass.
      expect(await b1.cleanupStale()).toEqual({ killed: [], spared: [{ pid: live.pid, ifname: `${PREFIX}live1` }], removedSockets: [] });
    } finally {
      for (const c of [dead, live, unmarked, killed]) c.kill('SIGTERM');
      await Promise.all([dead, live, unmarked, killed].map(exited));
      for (const n of ['dead1', 'live1', 'nomark', 'stale1']) rmSync(uapiSocketPath(`${PREFIX}${n}`), { force: true });
    }
  });

  it('never writes a private key to the logs or into an error', () => {
    const all = `${logText.join('')}\n${errorTexts.join('\n')}`;
    // The capture is real: wireguard-go's own output and the backend's records are in it.
    expect(all).toContain('wireguard end created');
    expect(all).toContain('UAPI: Updating private key');
    expect(secrets.length).toBeGreaterThanOrEqual(20);
    for (const k of secrets) {
      const raw = rawPrivateKey(k.privateKey);
      expect(all).not.toContain(raw.toString('hex'));
      expect(all).not.toContain(raw.toString('base64'));
      expect(all).not.toContain(raw.toString('base64url'));
      raw.fill(0);
    }
  });
});
