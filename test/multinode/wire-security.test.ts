/**
 * What the underlay carries for mesh-built remote connections: WireGuard hides the payload where VXLAN shows
 * it, both tunnels carry exactly-MTU packets with DF set and refuse one byte more locally, and WireGuard private
 * keys never cross the wire between the two nsmds.
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { ApiClient } from '../../src/api/grpc.js';
import type { Connection, DeepPartial, NetworkServiceRequest } from '../../src/api/types.js';
import { inodeUrlOf } from '../../src/dataplane/netns.js';
import { vxlanMtu } from '../../src/dataplane/vxlan/mtu.js';
import { privateKeyFromRaw, publicKeyOf } from '../../src/dataplane/wireguard/keys.js';
import { uapiSocketPath } from '../../src/dataplane/wireguard/uapi.js';
import { signOwnSegment } from '../../src/identity/outgoing.js';
import type { Transport } from '../../src/identity/transport.js';
import { ids, testTransport } from '../helpers/identity.js';
import { startIcmpResponder } from '../helpers/mesh.js';
import { createNetns, execIn, tag, type Netns } from '../helpers/netns.js';
import { createUnderlay, startEtcdIn, startNsmdOnNode, type Underlay } from '../helpers/nodes.js';
import { pingDf, startCapture, type Packet } from '../helpers/packets.js';

interface Mesh {
  ul: Underlay;
  pod: Netns;
  ns: ApiClient<'networkservice.NetworkService'>;
  /** Undefined on the insecure mesh: no identities, plaintext gRPC. */
  me?: Transport;
  service: string;
}

const meshes: Mesh[] = [];

async function startMesh(id: string, insecure: boolean): Promise<Mesh> {
  const ul = await createUnderlay(2, { id });
  const etcd = await startEtcdIn(ul);
  const a = await startNsmdOnNode(ul.nodes[0]!, { registryUrl: etcd.url, insecure });
  const b = await startNsmdOnNode(ul.nodes[1]!, { registryUrl: etcd.url, insecure });
  const service = `${tag}-${id}svc`;
  await startIcmpResponder(await createNetns(`${id}nse`), { name: `${tag}-${id}nse`, connectTo: b.url, services: [service], cidr: '169.254.70.0/24', insecure });
  const me = insecure ? undefined : await testTransport(ids.pod(`${tag}-${id}client`));
  const mesh = { ul, pod: await createNetns(`${id}pod`), ns: new ApiClient('networkservice.NetworkService', a.url, me), service, ...(me ? { me } : {}) };
  meshes.push(mesh);
  return mesh;
}

let secure: Mesh;
let plain: Mesh;

beforeAll(async () => {
  [secure, plain] = await Promise.all([startMesh('s', false), startMesh('k', true)]);
}, 90_000);

afterAll(async () => {
  for (const m of meshes) {
    m.ns.close();
    await m.ul.cleanup();
  }
});

async function request(m: Mesh, id: string, ifname: string, encrypted: boolean): Promise<Connection> {
  const r: DeepPartial<NetworkServiceRequest> = {
    connection: {
      id,
      network_service: m.service,
      ...(encrypted ? { labels: { encryption: 'required' } } : {}),
      path: { index: 0, path_segments: [{ name: 'client', id }] },
    },
    mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: ifname, inodeURL: inodeUrlOf(m.pod.path) } }],
  };
  const metadata = m.me ? await signOwnSegment(m.me, m.ns, r.connection!, 60_000, 5000) : undefined;
  return m.ns.unary('Request', r, { timeoutMs: 20_000, ...(metadata ? { metadata } : {}) });
}

const dstOf = (c: Connection) => c.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!;
/** Kinds of the links in the pod namespace: `vxlan` for a VXLAN connection, `tun` for wireguard-go's. */
const podLinkKinds = async (m: Mesh) =>
  (JSON.parse((await execa('ip', ['-n', m.pod.name, '-j', '-d', 'link', 'show'])).stdout) as { linkinfo?: { info_kind: string } }[])
    .map((l) => l.linkinfo?.info_kind)
    .filter(Boolean)
    .sort();

/** wireguard-go interfaces running inside a node namespace, by the interface name on their command line. */
async function wireguardIfnamesIn(node: Netns): Promise<string[]> {
  const pids = (await execa('ip', ['netns', 'pids', node.name])).stdout.split('\n').filter(Boolean);
  const out: string[] = [];
  for (const p of pids) {
    const argv = (await execa('cat', [`/proc/${p}/cmdline`], { reject: false })).stdout.split('\0').filter(Boolean);
    if (/wireguard-go$/.test(argv[0] ?? '')) out.push(argv[argv.length - 1]!);
  }
  return out;
}

/** The device's own private key, hex, as wireguard-go's UAPI reports it (only root on this node can ask). */
function privateKeyOf(ifname: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(uapiSocketPath(ifname));
    let text = '';
    s.setTimeout(2000, () => s.destroy(new Error(`UAPI ${ifname}: no answer`)));
    s.on('data', (d) => {
      text += d.toString();
      if (text.endsWith('\n\n')) s.end();
    });
    s.on('error', reject);
    s.on('close', () => {
      const m = /^private_key=([0-9a-f]{64})$/m.exec(text);
      if (m) resolve(m[1]!);
      else reject(new Error(`UAPI ${ifname}: no private_key in ${JSON.stringify(text.slice(0, 80))}`));
    });
    s.write('get=1\n\n');
  });
}

describe('the underlay between two nodes', () => {
  it('never shows a WireGuard connection\'s payload, while the same bytes are readable over VXLAN', async () => {
    const wg = await request(secure, `${tag}-m1`, `${tag}mw`, true);
    const vx = await request(secure, `${tag}-m2`, `${tag}mv`, false);
    expect(await podLinkKinds(secure)).toEqual(['tun', 'vxlan']);
    const marker = randomBytes(16);
    const node0 = secure.ul.nodes[0]!;
    const cap = await startCapture(secure.ul.underlay, node0.bridgePort, ['udp']);
    let packets: Packet[];
    try {
      for (const c of [wg, vx]) {
        await execIn(secure.pod, ['ping', '-4', '-c', '3', '-i', '0.2', '-W', '2', '-s', '120', '-p', marker.toString('hex'), dstOf(c)]);
      }
    } finally {
      packets = await cap.stop();
    }
    const isVx = (k: Packet) => k.udp?.dport === 4789;
    const hasMarker = (k: Packet) => k.raw.includes(marker);
    const wgData = packets.filter((k) => k.udp && !isVx(k) && k.udp.payload.length >= 120);
    // Echo requests and replies of the WireGuard connection crossed, big enough to hold the marker, never showing it.
    expect(wgData.length).toBeGreaterThanOrEqual(6);
    expect(wgData.filter(hasMarker)).toHaveLength(0);
    expect(packets.filter((k) => isVx(k) && hasMarker(k)).length).toBeGreaterThanOrEqual(6);
    expect(packets.filter(hasMarker).every(isVx)).toBe(true);
    for (const c of [wg, vx]) await secure.ns.unary('Close', c, { timeoutMs: 10_000 });
  });

  it.each([
    ['WireGuard', true, 1500 - 60],
    ['VXLAN', false, vxlanMtu(1500, '198.18.0.1')],
  ] as const)('delivers a DF ping of exactly the MTU over %s and refuses one byte more locally', async (what, encrypted, mtu) => {
    const c = await request(secure, `${tag}-mtu${what}`, `${tag}t${encrypted ? 'w' : 'v'}`, encrypted);
    expect(c.context!.MTU).toBe(mtu);
    // v4: 20 bytes of IP and 8 of ICMP around the payload.
    expect((await pingDf(secure.pod, dstOf(c), mtu - 28)).ok).toBe(true);
    const over = await pingDf(secure.pod, dstOf(c), mtu - 27);
    expect(over.ok).toBe(false);
    expect(over.out).toMatch(new RegExp(`message too long.*mtu=${mtu}`, 's'));
    await secure.ns.unary('Close', c, { timeoutMs: 10_000 });
  });

  it('carries public keys between the nsmds and never a private key (plaintext gRPC, so the capture reads the messages)', async () => {
    const node0 = plain.ul.nodes[0]!;
    const cap = await startCapture(plain.ul.underlay, node0.bridgePort, ['tcp', 'port', '5001']);
    let packets: Packet[];
    let c: Connection;
    let keys: string[];
    try {
      c = await request(plain, `${tag}-k1`, `${tag}kw`, true);
      const ifnames = [...(await wireguardIfnamesIn(plain.ul.nodes[0]!)), ...(await wireguardIfnamesIn(plain.ul.nodes[1]!))];
      expect(ifnames).toHaveLength(2);
      keys = await Promise.all(ifnames.map(privateKeyOf));
    } finally {
      packets = await cap.stop();
    }
    const wire = Buffer.concat(packets.filter((k) => k.tcp).map((k) => k.tcp!.payload));
    for (const hex of keys) {
      const raw = Buffer.from(hex, 'hex');
      // The capture does hold the node-to-node Request and its answer: each device's public key travels, in the
      // base64 form upstream uses.
      expect(wire.includes(Buffer.from(publicKeyOf(privateKeyFromRaw(raw))))).toBe(true);
      for (const form of [raw, Buffer.from(hex), Buffer.from(raw.toString('base64')), Buffer.from(raw.toString('base64url'))]) {
        expect(wire.includes(form)).toBe(false);
      }
    }
    await plain.ns.unary('Close', c, { timeoutMs: 10_000 });
  });
});
