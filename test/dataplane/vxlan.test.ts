import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inodeUrlOf } from '../../src/dataplane/netns.js';
import { ALIAS_PREFIX, type NetnsSnapshot, type VxlanEnd } from '../../src/dataplane/types.js';
import { createNetlinkDataplane, type NetlinkDataplane } from '../../src/dataplane/veth/index.js';
import { VXLAN_OVERHEAD_V4, VXLAN_OVERHEAD_V6, VXLAN_PORT, vxlanMtu } from '../../src/dataplane/vxlan/mtu.js';
import { createNetns, deleteNetns, execIn, ping, sweepStale, tag, type Netns } from '../helpers/netns.js';
import { pingDf } from '../helpers/packets.js';
import { waitFor } from '../helpers/wait.js';

/**
 * Two "nodes" (namespaces joined by a veth underlay) with a pod namespace behind each. The VXLAN device of
 * each end lives in its pod, its UDP socket in its node.
 */
interface Site {
  n1: Netns;
  n2: Netns;
  p1: Netns;
  p2: Netns;
  ip1: string; // underlay address of n1
  ip2: string;
  u1: string; // underlay interface in n1
  u2: string;
}

let dp: NetlinkDataplane;
let v4: Site;

async function makeSite(name: string, family: 4 | 6): Promise<Site> {
  const [n1, n2, p1, p2] = (await Promise.all(['n1', 'n2', 'p1', 'p2'].map((n) => createNetns(`${name}-${n}`)))) as [Netns, Netns, Netns, Netns];
  const u1 = `${tag}u1`;
  const u2 = `${tag}u2`;
  await execIn(n1, ['ip', 'link', 'add', u1, 'type', 'veth', 'peer', 'name', u2, 'netns', n2.name]);
  const [ip1, ip2, len] = family === 4 ? ['198.18.0.1', '198.18.0.2', 30] : ['fd00:18::1', 'fd00:18::2', 64];
  // nodad: the v6 underlay is usable at once instead of after ~1 s of duplicate address detection.
  const extra = family === 6 ? ['nodad'] : [];
  await execIn(n1, ['ip', 'addr', 'add', `${ip1}/${len}`, 'dev', u1, ...extra]);
  await execIn(n2, ['ip', 'addr', 'add', `${ip2}/${len}`, 'dev', u2, ...extra]);
  await execIn(n1, ['ip', 'link', 'set', u1, 'up']);
  await execIn(n2, ['ip', 'link', 'set', u2, 'up']);
  return { n1, n2, p1, p2, ip1, ip2, u1, u2 };
}

async function dropSite(s: Site): Promise<void> {
  await Promise.all([s.n1, s.n2, s.p1, s.p2].map((n) => deleteNetns(n)));
}

/** Both ends of connection `n` over `site`: pod addresses 169.254.<n>.1/.2 (or fd00:<n>::1/::2), VNI 5000+n. */
function ends(site: Site, n: number, opts: { mtu?: number; family?: 4 | 6; vni?: number } = {}): [VxlanEnd, VxlanEnd] {
  const [a1, a2, len] = opts.family === 6 ? [`fd00:${n.toString(16)}::1`, `fd00:${n.toString(16)}::2`, 128] : [`169.254.${n}.1`, `169.254.${n}.2`, 32];
  const mtu = opts.mtu ?? 1400;
  const vni = opts.vni ?? 5000 + n;
  const common = { connId: `${tag}-conn-${n}`, vni, mtu };
  return [
    {
      ...common,
      underlayNetns: site.n1.path,
      localIp: site.ip1,
      remoteIp: site.ip2,
      end: { netns: site.p1.path, ifname: `${tag}v${n}`, addrs: [`${a1}/${len}`], routes: [{ prefix: `${a2}/${len}` }] },
    },
    {
      ...common,
      underlayNetns: site.n2.path,
      localIp: site.ip2,
      remoteIp: site.ip1,
      end: { netns: site.p2.path, ifname: `${tag}v${n}`, addrs: [`${a2}/${len}`], routes: [{ prefix: `${a1}/${len}` }] },
    },
  ];
}

function peerAddr(e: VxlanEnd): string {
  return e.end.routes[0]!.prefix.split('/')[0]!;
}

async function connect(pair: [VxlanEnd, VxlanEnd]): Promise<void> {
  await Promise.all(pair.map((e) => dp.createVxlan(e)));
}

async function disconnect(pair: [VxlanEnd, VxlanEnd]): Promise<void> {
  await Promise.all(pair.map((e) => dp.deleteVxlan({ netns: e.end.netns, ifname: e.end.ifname })));
}

function ours(s: NetnsSnapshot) {
  return {
    links: s.links.filter((l) => l.ifname.startsWith(tag)),
    routes: s.routes.filter((r) => r.ifname?.startsWith(tag)),
  };
}

function vxlans(s: NetnsSnapshot) {
  return s.links.filter((l) => l.kind === 'vxlan');
}

async function stdoutOf(ns: Netns, cmd: string[]): Promise<string> {
  return String((await execIn(ns, cmd)).stdout);
}

/** UDP sockets bound to `port` in a namespace. */
async function udpListeners(ns: Netns, port: number): Promise<string[]> {
  const out = await stdoutOf(ns, ['ss', '-Hlun', 'sport', '=', `:${port}`]);
  return out.split('\n').filter((l) => l.trim() !== '');
}

/** Datagrams the namespace's UDP stack has taken in (vxlan's encap hook counts its packets here). */
async function udpInDatagrams(ns: Netns, family: 4 | 6): Promise<number> {
  if (family === 6) {
    const out = await stdoutOf(ns, ['cat', '/proc/net/snmp6']);
    const m = /^Udp6InDatagrams\s+(\d+)/m.exec(out);
    return Number(m?.[1] ?? NaN);
  }
  const lines = (await stdoutOf(ns, ['cat', '/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Udp:'));
  const names = lines[0]!.split(/\s+/);
  const values = lines[1]!.split(/\s+/);
  return Number(values[names.indexOf('InDatagrams')]);
}

beforeAll(async () => {
  await sweepStale();
  [dp, v4] = await Promise.all([createNetlinkDataplane(), makeSite('v4', 4)]);
});

afterAll(async () => {
  await dp?.close();
});

describe('vxlan data plane', () => {
  it('connects two pods on different nodes; the socket is in the node, the device in the pod', async () => {
    const mtu = vxlanMtu(await dp.underlayMtu(v4.n1.path, v4.ip1), v4.ip1);
    expect(mtu).toBe(1500 - VXLAN_OVERHEAD_V4);
    const pair = ends(v4, 1, { mtu });
    const inBefore = await udpInDatagrams(v4.n2, 4);
    await connect(pair);

    expect(await ping(v4.p1, '169.254.1.2')).toBe(true);
    expect(await ping(v4.p2, '169.254.1.1')).toBe(true);

    const s1 = ours(await dp.snapshot(v4.p1.path));
    expect(s1.links).toEqual([
      { ifname: `${tag}v1`, index: expect.any(Number), kind: 'vxlan', alias: `${ALIAS_PREFIX}${tag}-conn-1`, mtu, up: true, addrs: ['169.254.1.1/32'] },
    ]);
    expect(s1.routes).toEqual([{ prefix: '169.254.1.2/32', via: undefined, ifname: `${tag}v1` }]);
    const s2 = ours(await dp.snapshot(v4.p2.path));
    expect(s2.links.map((l) => [l.ifname, l.kind, l.alias, l.mtu, l.up, l.addrs])).toEqual([
      [`${tag}v1`, 'vxlan', `${ALIAS_PREFIX}${tag}-conn-1`, mtu, true, ['169.254.1.2/32']],
    ]);
    // Nothing of the tunnel shows up as a device in the nodes.
    expect(vxlans(await dp.snapshot(v4.n1.path))).toEqual([]);

    // The kernel's view: static remote, no learning, IANA port, link net = the node.
    const detail = await stdoutOf(v4.p1, ['ip', '-d', 'link', 'show', `${tag}v1`]);
    expect(detail).toContain(`link-netns ${v4.n1.name}`);
    expect(detail).toMatch(new RegExp(`vxlan id 5001 remote ${v4.ip2} local ${v4.ip1} .*dstport ${VXLAN_PORT} nolearning`));
    // The UDP socket lives in the node namespace, and the tunnel's packets arrive there.
    expect(await udpListeners(v4.n1, VXLAN_PORT)).toHaveLength(1);
    expect(await udpListeners(v4.p1, VXLAN_PORT)).toEqual([]);
    expect(await udpInDatagrams(v4.n2, 4)).toBeGreaterThan(inBefore);

    // L3 over an L2 tunnel still resolves the peer's MAC: ARP crossed the VXLAN to the default remote.
    const peerMac = JSON.parse(await stdoutOf(v4.p2, ['ip', '-j', 'link', 'show', `${tag}v1`]))[0].address as string;
    const neigh = JSON.parse(await stdoutOf(v4.p1, ['ip', '-j', 'neigh', 'show', 'dev', `${tag}v1`])) as Array<{ dst: string; lladdr?: string }>;
    expect(neigh).toEqual([expect.objectContaining({ dst: '169.254.1.2', lladdr: peerMac })]);
    // And the FDB holds only the static default destination: nothing was learned from the traffic.
    const fdb = JSON.parse(await stdoutOf(v4.p1, ['bridge', '-j', 'fdb', 'show', 'dev', `${tag}v1`])) as Array<{ mac: string; dst?: string }>;
    expect(fdb).toEqual([expect.objectContaining({ mac: '00:00:00:00:00:00', dst: v4.ip2 })]);

    await disconnect(pair);
  });

  it('carries exactly MTU-sized packets with DF set and refuses one byte more', async () => {
    const mtu = vxlanMtu(await dp.underlayMtu(v4.n1.path, v4.ip2), v4.ip2);
    const pair = ends(v4, 2, { mtu });
    await connect(pair);
    // 20 bytes IPv4 + 8 bytes ICMP header around the payload.
    expect((await pingDf(v4.p1, '169.254.2.2', mtu - 28)).ok).toBe(true);
    expect((await pingDf(v4.p2, '169.254.2.1', mtu - 28)).ok).toBe(true);
    const over = await pingDf(v4.p1, '169.254.2.2', mtu - 27);
    expect(over.ok).toBe(false);
    expect(over.out).toContain(`mtu=${mtu}`);
    await disconnect(pair);
  });

  it('deletes both ends completely, idempotently, and the node releases the port', async () => {
    const pair = ends(v4, 3);
    await connect(pair);
    expect(await ping(v4.p1, peerAddr(pair[0]))).toBe(true);
    expect(await udpListeners(v4.n1, VXLAN_PORT)).toHaveLength(1);
    await disconnect(pair);
    for (const ns of [v4.p1, v4.p2]) expect(ours(await dp.snapshot(ns.path))).toEqual({ links: [], routes: [] });
    for (const ns of [v4.n1, v4.n2]) {
      const s = ours(await dp.snapshot(ns.path));
      // Only the test's own underlay veth is left in a node.
      expect(s.links.map((l) => l.kind)).toEqual(['veth']);
      expect(await udpListeners(ns, VXLAN_PORT)).toEqual([]);
    }
    // Idempotent: missing device, missing namespace (path and inode URL).
    await disconnect(pair);
    await dp.deleteVxlan({ netns: `/var/run/netns/${tag}-no-such-ns`, ifname: `${tag}v3` });
    await dp.deleteVxlan({ netns: 'inode://1/1', ifname: `${tag}v3` });
  });

  it('runs two connections with different VNIs between the same nodes at once', async () => {
    const a = ends(v4, 4);
    const b = ends(v4, 5);
    // inode:// URLs are accepted for both namespaces, as everywhere else in the data plane.
    for (const e of b) {
      e.underlayNetns = inodeUrlOf(e.underlayNetns);
      e.end.netns = inodeUrlOf(e.end.netns);
    }
    await Promise.all([connect(a), connect(b)]);
    const results = await Promise.all([ping(v4.p1, '169.254.4.2'), ping(v4.p1, '169.254.5.2'), ping(v4.p2, '169.254.4.1'), ping(v4.p2, '169.254.5.1')]);
    expect(results).toEqual([true, true, true, true]);
    expect(vxlans(await dp.snapshot(v4.p1.path)).map((l) => l.ifname).sort()).toEqual([`${tag}v4`, `${tag}v5`]);
    // Both tunnels share the node's one socket on the port.
    expect(await udpListeners(v4.n1, VXLAN_PORT)).toHaveLength(1);
    // Tearing one down leaves the other working.
    await disconnect(a);
    expect(await ping(v4.p1, '169.254.5.2')).toBe(true);
    await disconnect(b);
  });

  it('refuses a VNI already in use in the underlay namespace with EEXIST and leaves nothing behind', async () => {
    const first = ends(v4, 6);
    await connect(first);
    const before = await Promise.all([v4.p1, v4.p2, v4.n1, v4.n2].map((n) => dp.snapshot(n.path)));

    // Same VNI, same nodes, another device name: the kernel keys devices on (VNI, port, family) per
    // underlay namespace, whatever the addresses, and says EEXIST.
    const again = ends(v4, 7, { vni: first[0].vni });
    const err = await dp.createVxlan(again[0]).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EEXIST', message: expect.stringContaining(`VNI ${first[0].vni} is already used`) });
    // Even towards another peer: the local and remote addresses do not tell the devices apart.
    const otherPeer = { ...again[0], remoteIp: '198.18.0.3' };
    await expect(dp.createVxlan(otherPeer)).rejects.toMatchObject({ code: 'EEXIST' });
    // A name already taken in the pod is EEXIST too, and said so.
    const sameName = ends(v4, 8);
    sameName[0].end.ifname = first[0].end.ifname;
    await expect(dp.createVxlan(sameName[0])).rejects.toMatchObject({ code: 'EEXIST', message: expect.stringContaining(`interface ${first[0].end.ifname} already exists`) });
    expect(await Promise.all([v4.p1, v4.p2, v4.n1, v4.n2].map((n) => dp.snapshot(n.path)))).toEqual(before);
    // The first tunnel is unharmed.
    expect(await ping(v4.p1, peerAddr(first[0]))).toBe(true);

    // The same VNI on another port is a different tunnel as far as the kernel is concerned.
    const otherPort = { ...again[0], port: VXLAN_PORT + 1 };
    await dp.createVxlan(otherPort);
    expect(await dp.linkExists(v4.p1.path, otherPort.end.ifname)).toBe(true);
    await dp.deleteVxlan(otherPort.end);
    await disconnect(first);
  });

  it('is all or nothing: a failing route removes the device it had already made', async () => {
    const before = await dp.snapshot(v4.p1.path);
    const [e] = ends(v4, 9);
    e.end.routes.push({ prefix: e.end.routes[0]!.prefix });
    await expect(dp.createVxlan(e)).rejects.toMatchObject({ code: 'EEXIST', message: expect.stringMatching(/add route .* EEXIST/) });
    expect(await dp.snapshot(v4.p1.path)).toEqual(before);
    // The VNI is free again.
    const [ok] = ends(v4, 9);
    await dp.createVxlan(ok);
    await dp.deleteVxlan(ok.end);
  });

  it('rejects a missing namespace or a bad spec cleanly', async () => {
    const before = await Promise.all([v4.p1, v4.n1].map((n) => dp.snapshot(n.path)));
    const [e] = ends(v4, 10);
    await expect(dp.createVxlan({ ...e, underlayNetns: `/var/run/netns/${tag}-no-such-node` })).rejects.toMatchObject({
      code: 'ENOENT',
      message: expect.stringContaining('no-such-node'),
    });
    await expect(dp.createVxlan({ ...e, underlayNetns: 'inode://1/1' })).rejects.toMatchObject({ code: 'ENETNSNOTFOUND' });
    await expect(dp.createVxlan({ ...e, end: { ...e.end, netns: `/var/run/netns/${tag}-no-such-pod` } })).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(dp.createVxlan({ ...e, underlayNetns: '/etc/hostname' })).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining('not a network namespace') });
    // An address the node does not own would make the tunnel a silent black hole.
    await expect(dp.createVxlan({ ...e, localIp: '198.18.0.9' })).rejects.toMatchObject({ code: 'EADDRNOTAVAIL', message: expect.stringContaining('198.18.0.9') });
    await expect(dp.createVxlan({ ...e, localIp: v4.ip2 })).rejects.toMatchObject({ code: 'EADDRNOTAVAIL' });
    const bad: Array<Partial<VxlanEnd>> = [
      { vni: 0 },
      { vni: 1 << 24 },
      { vni: 1.5 },
      { port: 0 },
      { mtu: 10 },
      { remoteIp: 'fd00:18::2' },
      { remoteIp: '239.1.1.1' },
      { localIp: '198.18.0.300' },
      { connId: '' },
    ];
    for (const b of bad) await expect(dp.createVxlan({ ...e, ...b }), JSON.stringify(b)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(await Promise.all([v4.p1, v4.n1].map((n) => dp.snapshot(n.path)))).toEqual(before);
  });

  it('underlayMtu follows the device that holds or routes the address', async () => {
    expect(await dp.underlayMtu(v4.n1.path, v4.ip1)).toBe(1500); // local address: the device holding it, not lo
    expect(await dp.underlayMtu(v4.n1.path, v4.ip2)).toBe(1500); // remote: the device routing to it
    await execIn(v4.n1, ['ip', 'link', 'set', v4.u1, 'mtu', '9000']);
    try {
      expect(await dp.underlayMtu(v4.n1.path, v4.ip1)).toBe(9000);
      expect(await dp.underlayMtu(v4.n1.path, v4.ip2)).toBe(9000);
      expect(vxlanMtu(9000, v4.ip1)).toBe(8946);
      // A route's own MTU caps the device's.
      await execIn(v4.n1, ['ip', 'route', 'add', '198.19.0.0/24', 'via', v4.ip2, 'mtu', '1400']);
      expect(await dp.underlayMtu(v4.n1.path, '198.19.0.7')).toBe(1400);
    } finally {
      await execIn(v4.n1, ['ip', 'route', 'del', '198.19.0.0/24'], { reject: false });
      await execIn(v4.n1, ['ip', 'link', 'set', v4.u1, 'mtu', '1500']);
    }
    expect(await dp.underlayMtu(v4.n1.path, v4.ip1)).toBe(1500);
    await expect(dp.underlayMtu(v4.n1.path, '198.19.9.9')).rejects.toMatchObject({ code: 'ENETUNREACH' });
    await expect(dp.underlayMtu(v4.n1.path, 'nope')).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(dp.underlayMtu(`/var/run/netns/${tag}-no-such-node`, v4.ip1)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('sweep removes tunnel devices of connections that are gone', async () => {
    const pair = ends(v4, 11);
    await connect(pair);
    expect(await dp.sweep(v4.p1.path, () => true)).toEqual([]);
    expect(await dp.sweep(v4.p1.path, (id) => id !== pair[0].connId)).toEqual([pair[0].end.ifname]);
    expect(vxlans(await dp.snapshot(v4.p1.path))).toEqual([]);
    await disconnect(pair);
  });

  it('works over an IPv6 underlay (fd00::/8), with IPv6 between the pods', async () => {
    const v6 = await makeSite('v6', 6);
    try {
      const underlay = await dp.underlayMtu(v6.n1.path, v6.ip2);
      const mtu = vxlanMtu(underlay, v6.ip2);
      expect(mtu).toBe(1500 - VXLAN_OVERHEAD_V6);
      const pair = ends(v6, 12, { mtu, family: 6 });
      const inBefore = await udpInDatagrams(v6.n2, 6);
      await connect(pair);
      expect(await ping(v6.p1, 'fd00:c::2')).toBe(true);
      expect(await ping(v6.p2, 'fd00:c::1')).toBe(true);
      expect(await udpInDatagrams(v6.n2, 6)).toBeGreaterThan(inBefore);
      const detail = await stdoutOf(v6.p1, ['ip', '-d', 'link', 'show', `${tag}v12`]);
      expect(detail).toMatch(new RegExp(`vxlan id 5012 remote ${v6.ip2} local ${v6.ip1} .*dstport ${VXLAN_PORT} nolearning`));
      // Neighbour discovery crossed the tunnel (its multicast goes to the default remote).
      const neigh = JSON.parse(await stdoutOf(v6.p1, ['ip', '-j', '-6', 'neigh', 'show', 'dev', `${tag}v12`])) as Array<{ dst: string; lladdr?: string }>;
      expect(neigh.some((n) => n.dst === 'fd00:c::2' && n.lladdr)).toBe(true);
      // 40 bytes IPv6 + 8 bytes ICMPv6 header.
      expect((await pingDf(v6.p1, 'fd00:c::2', mtu - 48)).ok).toBe(true);
      expect((await pingDf(v6.p1, 'fd00:c::2', mtu - 47)).ok).toBe(false);
      await disconnect(pair);
      expect(ours(await dp.snapshot(v6.p1.path)).links).toEqual([]);
      expect(await udpListeners(v6.n1, VXLAN_PORT)).toEqual([]);
    } finally {
      await dropSite(v6);
    }
  });

  it('is gone with the underlay namespace: deleting a node removes its tunnel devices from the pods', async () => {
    const site = await makeSite('gone', 4);
    try {
      const pair = ends(site, 13);
      await connect(pair);
      expect(await ping(site.p1, peerAddr(pair[0]))).toBe(true);
      await deleteNetns(site.n1);
      // The kernel destroys a node's tunnels asynchronously once the namespace is released.
      await waitFor('tunnel device to go with its underlay', async () => !(await dp.linkExists(site.p1.path, pair[0].end.ifname)), 10_000);
    } finally {
      await dropSite(site);
    }
  });
});

describe('vxlan creation cost', () => {
  it('measures sequential createVxlan and deleteVxlan', async () => {
    const site = await makeSite('bench', 4);
    try {
      const n = 50;
      const warm = ends(site, 200);
      await dp.createVxlan(warm[0]); // opens both sockets
      const specs = Array.from({ length: n }, (_, i) => ends(site, 1 + i, { vni: 20000 + i })[0]);
      let t = performance.now();
      for (const s of specs) await dp.createVxlan(s);
      const createMs = (performance.now() - t) / n;
      t = performance.now();
      for (const s of specs) await dp.deleteVxlan(s.end);
      const deleteMs = (performance.now() - t) / n;
      console.log(`sequential createVxlan ${createMs.toFixed(2)} ms, deleteVxlan ${deleteMs.toFixed(2)} ms`);
      expect(vxlans(await dp.snapshot(site.p1.path)).map((l) => l.ifname)).toEqual([warm[0].end.ifname]);
    } finally {
      await dropSite(site);
    }
  });
});

describe('vxlan at scale', () => {
  it('creates 50 tunnels (100 ends) concurrently and deletes them in kernel batches', async () => {
    const site = await makeSite('many', 4);
    try {
      const n = 50;
      const pairs = Array.from({ length: n }, (_, i) => ends(site, 100 + i));
      let t = performance.now();
      await Promise.all(pairs.map((p) => connect(p)));
      console.log(`${2 * n} concurrent createVxlan: ${(performance.now() - t).toFixed(0)} ms`);
      for (const ns of [site.p1, site.p2]) {
        const links = vxlans(await dp.snapshot(ns.path));
        expect(links).toHaveLength(n);
        expect(links.every((l) => l.up && l.mtu === 1400 && l.addrs.length === 1 && l.alias?.startsWith(ALIAS_PREFIX))).toBe(true);
      }
      expect(await ping(site.p1, peerAddr(pairs[n - 1]![0]))).toBe(true);
      t = performance.now();
      await Promise.all(pairs.map((p) => disconnect(p)));
      const took = performance.now() - t;
      console.log(`${2 * n} concurrent deleteVxlan: ${took.toFixed(0)} ms`);
      // One by one this is ~100 x 19 ms.
      expect(took).toBeLessThan(1000);
      for (const ns of [site.p1, site.p2]) expect(vxlans(await dp.snapshot(ns.path))).toEqual([]);
    } finally {
      await dropSite(site);
    }
  });
});
