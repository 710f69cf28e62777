import { monitorEventLoopDelay } from 'node:perf_hooks';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BadInodeUrlError, NetnsNotFoundError, inodeUrlOf, parseInodeUrl, resolveInodeUrl } from '../../src/dataplane/netns.js';
import { ALIAS_PREFIX, type NetnsSnapshot, type VethSpec } from '../../src/dataplane/types.js';
import { createNetlinkDataplane, type NetlinkDataplane } from '../../src/dataplane/veth/index.js';
import { TS_HOOKS } from '../../src/dataplane/veth/spawn.js';
import { createNetns, deleteNetns, execIn, ping, sweepStale, tag, type Netns } from '../helpers/netns.js';
import { waitFor } from '../helpers/wait.js';

let dp: NetlinkDataplane;
let a: Netns;
let b: Netns;

beforeAll(async () => {
  await sweepStale();
  [a, b] = await Promise.all([createNetns('a'), createNetns('b')]);
  dp = await createNetlinkDataplane();
});

afterAll(async () => {
  await dp?.close();
});

function pair(n: number, opts: { family?: 4 | 6; clientNs?: Netns; endpointNs?: Netns } = {}): VethSpec {
  const cNs = opts.clientNs ?? a;
  const eNs = opts.endpointNs ?? b;
  const hi = Math.floor(n / 250);
  const lo = n % 250;
  const [cAddr, eAddr, len] =
    opts.family === 6 ? [`fd00:${n.toString(16)}::1`, `fd00:${n.toString(16)}::2`, 128] : [`169.254.${hi + 100}.${lo + 1}`, `169.254.${hi}.${lo + 1}`, 32];
  return {
    connId: `${tag}-conn-${n}`,
    mtu: 1400,
    client: { netns: cNs.path, ifname: `${tag}c${n}`, addrs: [`${cAddr}/${len}`], routes: [{ prefix: `${eAddr}/${len}` }] },
    endpoint: { netns: eNs.path, ifname: `${tag}e${n}`, addrs: [`${eAddr}/${len}`], routes: [{ prefix: `${cAddr}/${len}` }] },
  };
}

function ours(s: NetnsSnapshot) {
  return {
    links: s.links.filter((l) => l.ifname.startsWith(tag)),
    routes: s.routes.filter((r) => r.ifname?.startsWith(tag)),
  };
}

describe('netns identity', () => {
  it('inodeUrlOf gives upstream inode://dev/ino and resolves back to the same namespace', async () => {
    const url = inodeUrlOf(a.path);
    expect(url).toMatch(/^inode:\/\/\d+\/\d+$/);
    expect(inodeUrlOf(a.path)).not.toBe(inodeUrlOf(b.path));
    expect(inodeUrlOf('/proc/thread-self/ns/net')).toBe(inodeUrlOf('/proc/self/ns/net'));
    const path = await resolveInodeUrl(url);
    expect(inodeUrlOf(path)).toBe(url);
    // A cache hit is re-validated and still answers.
    expect(await resolveInodeUrl(url)).toBe(path);
    const self = inodeUrlOf('/proc/self/ns/net');
    expect(inodeUrlOf(await resolveInodeUrl(self))).toBe(self);
  });

  it('rejects malformed URLs with BadInodeUrlError', () => {
    for (const bad of ['', 'file:///var/run/netns/x', 'inode://', 'inode://4', 'inode://4/', 'inode://a/1', 'inode://4/1/2', 'inode://-4/1', 'inode:4/1']) {
      expect(() => parseInodeUrl(bad), bad).toThrow(BadInodeUrlError);
    }
    expect(() => parseInodeUrl('inode:/x')).toThrow(/expected inode:\/\/<dev>\/<ino>/);
    expect(parseInodeUrl('inode://4/4026531840')).toEqual({ dev: '4', ino: '4026531840' });
  });

  it('throws NetnsNotFoundError for an inode nothing has, and after the namespace is deleted', async () => {
    await expect(resolveInodeUrl('inode://1/1')).rejects.toBeInstanceOf(NetnsNotFoundError);
    await expect(resolveInodeUrl('inode://x/1')).rejects.toBeInstanceOf(BadInodeUrlError);
    const gone = await createNetns('gone');
    const url = inodeUrlOf(gone.path);
    expect(await resolveInodeUrl(url)).toBe(gone.path);
    await deleteNetns(gone);
    await expect(resolveInodeUrl(url)).rejects.toMatchObject({ code: 'ENETNSNOTFOUND' });
  });
});

describe('netlink dataplane', () => {
  it('creates a v4 pair that pings both ways, snapshots it, and deletes it completely', async () => {
    const spec = pair(1);
    spec.client.routes.push({ prefix: '198.18.7.0/24', via: '169.254.0.2' });
    await dp.createVeth(spec);

    expect(await ping(a, '169.254.0.2')).toBe(true);
    expect(await ping(b, '169.254.100.2')).toBe(true);

    const sa = ours(await dp.snapshot(a.path));
    expect(sa.links).toEqual([
      { ifname: `${tag}c1`, index: expect.any(Number), kind: 'veth', alias: `${ALIAS_PREFIX}${tag}-conn-1`, mtu: 1400, up: true, addrs: ['169.254.100.2/32'] },
    ]);
    expect(sa.routes).toEqual(
      expect.arrayContaining([
        { prefix: '169.254.0.2/32', via: undefined, ifname: `${tag}c1` },
        { prefix: '198.18.7.0/24', via: '169.254.0.2', ifname: `${tag}c1` },
      ]),
    );
    expect(sa.routes).toHaveLength(2);
    const sb = ours(await dp.snapshot(b.path));
    expect(sb.links).toEqual([
      { ifname: `${tag}e1`, index: expect.any(Number), kind: 'veth', alias: `${ALIAS_PREFIX}${tag}-conn-1`, mtu: 1400, up: true, addrs: ['169.254.0.2/32'] },
    ]);
    expect(sb.routes).toEqual([{ prefix: '169.254.100.2/32', via: undefined, ifname: `${tag}e1` }]);
    // The kernel agrees with the snapshot.
    const ipOut = (await execIn(a, ['ip', '-d', 'link', 'show', `${tag}c1`])).stdout;
    expect(ipOut).toContain('veth');
    expect(ipOut).toContain(`alias ${ALIAS_PREFIX}${tag}-conn-1`);
    expect(await dp.linkExists(a.path, `${tag}c1`)).toBe(true);

    await dp.deleteVeth({ netns: a.path, ifname: `${tag}c1` });
    expect(ours(await dp.snapshot(a.path))).toEqual({ links: [], routes: [] });
    expect(ours(await dp.snapshot(b.path))).toEqual({ links: [], routes: [] });
    expect(await dp.linkExists(a.path, `${tag}c1`)).toBe(false);
    expect(await dp.linkExists(b.path, `${tag}e1`)).toBe(false);
    // Idempotent: missing link, missing namespace.
    await dp.deleteVeth({ netns: a.path, ifname: `${tag}c1` });
    await dp.deleteVeth({ netns: b.path, ifname: `${tag}e1` });
    await dp.deleteVeth({ netns: `/var/run/netns/${tag}-no-such-ns`, ifname: `${tag}c1` });
    await dp.deleteVeth({ netns: 'inode://1/1', ifname: `${tag}c1` });
    expect(await dp.linkExists(`/var/run/netns/${tag}-no-such-ns`, 'lo')).toBe(false);
  });

  it('creates a v6 pair (nodad) that pings both ways', async () => {
    const spec = pair(2, { family: 6 });
    spec.client.routes.push({ prefix: 'fd00:99::/64', via: 'fd00:2::2' });
    await dp.createVeth(spec);
    expect(await ping(a, 'fd00:2::2')).toBe(true);
    expect(await ping(b, 'fd00:2::1')).toBe(true);
    const sa = ours(await dp.snapshot(a.path));
    expect(sa.links.map((l) => [l.ifname, l.addrs, l.mtu, l.up])).toEqual([[`${tag}c2`, ['fd00:2::1/128'], 1400, true]]);
    expect(sa.routes).toEqual(
      expect.arrayContaining([
        { prefix: 'fd00:2::2/128', via: undefined, ifname: `${tag}c2` },
        { prefix: 'fd00:99::/64', via: 'fd00:2::2', ifname: `${tag}c2` },
      ]),
    );
    expect(sa.routes.some((r) => r.prefix.startsWith('fe80'))).toBe(false);
    const addrShow = (await execIn(a, ['ip', '-6', 'addr', 'show', 'dev', `${tag}c2`])).stdout;
    // nodad: usable at once, no 'tentative' phase (the kernel's own fe80 address may still be tentative).
    expect(addrShow).toMatch(/inet6 fd00:2::1\/128 scope global nodad\s*$/m);
    await dp.deleteVeth({ netns: b.path, ifname: `${tag}e2` });
    expect(ours(await dp.snapshot(a.path)).links).toEqual([]);
  });

  it('accepts inode:// URLs wherever it takes a namespace', async () => {
    const spec = pair(3);
    spec.client.netns = inodeUrlOf(a.path);
    spec.endpoint.netns = inodeUrlOf(b.path);
    await dp.createVeth(spec);
    expect(await dp.linkExists(inodeUrlOf(b.path), `${tag}e3`)).toBe(true);
    await dp.deleteVeth({ netns: inodeUrlOf(a.path), ifname: `${tag}c3` });
    expect(await dp.linkExists(b.path, `${tag}e3`)).toBe(false);
  });

  it('rejects a name collision with EEXIST and leaves the kernel untouched', async () => {
    await execIn(a, ['ip', 'link', 'add', `${tag}x0`, 'type', 'veth', 'peer', 'name', `${tag}x1`]);
    const before = [await dp.snapshot(a.path), await dp.snapshot(b.path)];

    const clash = pair(4);
    clash.client.ifname = `${tag}x0`;
    await expect(dp.createVeth(clash)).rejects.toMatchObject({ code: 'EEXIST', message: expect.stringContaining('EEXIST') });

    // Same for the peer's name in the endpoint namespace: the pair is created atomically.
    await execIn(b, ['ip', 'link', 'add', `${tag}y0`, 'type', 'veth', 'peer', 'name', `${tag}y1`]);
    const before2 = [await dp.snapshot(a.path), await dp.snapshot(b.path)];
    const peerClash = pair(5);
    peerClash.endpoint.ifname = `${tag}y0`;
    const err = await dp.createVeth(peerClash).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({ code: 'EEXIST' });
    expect([await dp.snapshot(a.path), await dp.snapshot(b.path)]).toEqual(before2);
    expect(before2[0]).toEqual(before[0]);

    await execIn(a, ['ip', 'link', 'del', `${tag}x0`]);
    await execIn(b, ['ip', 'link', 'del', `${tag}y0`]);
  });

  it('rejects a bad namespace path with a clear error', async () => {
    const missing = pair(6);
    missing.endpoint.netns = `/var/run/netns/${tag}-does-not-exist`;
    await expect(dp.createVeth(missing)).rejects.toMatchObject({ code: 'ENOENT', message: expect.stringContaining('does-not-exist') });
    const notNs = pair(7);
    notNs.client.netns = '/etc/hostname';
    await expect(dp.createVeth(notNs)).rejects.toMatchObject({ code: 'EINVAL', message: expect.stringContaining('not a network namespace') });
    await expect(dp.snapshot(`/var/run/netns/${tag}-does-not-exist`)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(ours(await dp.snapshot(a.path)).links).toEqual([]);
    expect(ours(await dp.snapshot(b.path)).links).toEqual([]);
  });

  it('is all or nothing: a failing route removes the pair it had already made', async () => {
    const before = [await dp.snapshot(a.path), await dp.snapshot(b.path)];
    const dup = pair(8);
    // The second identical route is refused by the kernel after the pair, alias and addresses exist.
    dup.endpoint.routes.push({ prefix: dup.endpoint.routes[0]!.prefix });
    await expect(dp.createVeth(dup)).rejects.toMatchObject({ code: 'EEXIST', message: expect.stringMatching(/add route .* EEXIST/) });
    expect([await dp.snapshot(a.path), await dp.snapshot(b.path)]).toEqual(before);

    const badAddr = pair(9);
    badAddr.client.addrs = ['169.254.300.1/32'];
    await expect(dp.createVeth(badAddr)).rejects.toMatchObject({ code: 'EINVAL' });
    const longName = pair(10);
    longName.client.ifname = `${tag}-much-too-long-name`;
    await expect(dp.createVeth(longName)).rejects.toMatchObject({ code: 'EINVAL' });
    expect([await dp.snapshot(a.path), await dp.snapshot(b.path)]).toEqual(before);
  });

  it('sweep deletes only links of connections not kept', async () => {
    const [e, f] = await Promise.all([createNetns('sweep-e'), createNetns('sweep-f')]);
    const mk = (n: number) => pair(n, { clientNs: e, endpointNs: f });
    await Promise.all([dp.createVeth(mk(20)), dp.createVeth(mk(21)), dp.createVeth(mk(22))]);
    await execIn(e, ['ip', 'link', 'add', `${tag}z0`, 'type', 'veth', 'peer', 'name', `${tag}z1`]);
    await execIn(e, ['ip', 'link', 'set', `${tag}z0`, 'alias', 'someone-else']);

    const removed = await dp.sweep(e.path, (id) => id === `${tag}-conn-21`);
    expect(removed.sort()).toEqual([`${tag}c20`, `${tag}c22`]);
    expect(ours(await dp.snapshot(e.path)).links.map((l) => l.ifname).sort()).toEqual([`${tag}c21`, `${tag}z0`, `${tag}z1`]);
    expect(ours(await dp.snapshot(f.path)).links.map((l) => l.ifname)).toEqual([`${tag}e21`]);
    expect(await dp.sweep(e.path, (id) => id === `${tag}-conn-21`)).toEqual([]);
    expect(await dp.sweep(`/var/run/netns/${tag}-does-not-exist`, () => false)).toEqual([]);
    await Promise.all([deleteNetns(e), deleteNetns(f)]);
  });

  it('measures sequential create and delete', async () => {
    const [c, d] = await Promise.all([createNetns('seq-c'), createNetns('seq-d')]);
    const n = 50;
    const specs = Array.from({ length: n }, (_, i) => pair(300 + i, { clientNs: c, endpointNs: d }));
    await dp.createVeth(pair(299, { clientNs: c, endpointNs: d })); // opens both sockets
    let t = performance.now();
    for (const s of specs) await dp.createVeth(s);
    const createMs = (performance.now() - t) / n;
    t = performance.now();
    for (const s of specs) await dp.deleteVeth({ netns: c.path, ifname: s.client.ifname });
    const deleteMs = (performance.now() - t) / n;
    console.log(`sequential createVeth ${createMs.toFixed(2)} ms, deleteVeth ${deleteMs.toFixed(2)} ms`);
    expect(createMs).toBeLessThan(10);
    expect(ours(await dp.snapshot(d.path)).links.map((l) => l.ifname)).toEqual([`${tag}e299`]);
    await Promise.all([deleteNetns(c), deleteNetns(d)]);
  });

  it('runs 200 createVeth concurrently', async () => {
    const [c, d] = await Promise.all([createNetns('many-c'), createNetns('many-d')]);
    const n = 200;
    const t = performance.now();
    await Promise.all(Array.from({ length: n }, (_, i) => dp.createVeth(pair(1000 + i, { clientNs: c, endpointNs: d }))));
    console.log(`200 concurrent createVeth: ${(performance.now() - t).toFixed(0)} ms`);
    const sc = ours(await dp.snapshot(c.path));
    const sd = ours(await dp.snapshot(d.path));
    expect(sc.links).toHaveLength(n);
    expect(sd.links).toHaveLength(n);
    expect(sc.links.every((l) => l.up && l.mtu === 1400 && l.addrs.length === 1 && l.alias?.startsWith(ALIAS_PREFIX))).toBe(true);
    expect(sc.routes).toHaveLength(n);
    expect(sd.routes).toHaveLength(n);
    const last = pair(1000 + n - 1, { clientNs: c, endpointNs: d });
    expect(await ping(c, last.endpoint.addrs[0]!.split('/')[0]!)).toBe(true);
    await Promise.all([deleteNetns(c), deleteNetns(d)]);
  });

  it('deletes many veths at once in one kernel batch', async () => {
    const [c, d] = await Promise.all([createNetns('batch-c'), createNetns('batch-d')]);
    const specs = Array.from({ length: 100 }, (_, i) => pair(500 + i, { clientNs: c, endpointNs: d }));
    await Promise.all(specs.map((s) => dp.createVeth(s)));
    const t = performance.now();
    await Promise.all([
      ...specs.map((s, i) => dp.deleteVeth(i % 2 ? { netns: c.path, ifname: s.client.ifname } : { netns: d.path, ifname: s.endpoint.ifname })),
      dp.deleteVeth({ netns: c.path, ifname: `${tag}nope` }),
    ]);
    const took = performance.now() - t;
    console.log(`100 concurrent deleteVeth: ${took.toFixed(0)} ms`);
    // One by one this is ~100 x 20 ms; grouped it is a few kernel calls.
    expect(took).toBeLessThan(1000);
    expect(ours(await dp.snapshot(c.path))).toEqual({ links: [], routes: [] });
    expect(ours(await dp.snapshot(d.path))).toEqual({ links: [], routes: [] });
    await Promise.all([deleteNetns(c), deleteNetns(d)]);
  });

  it('keeps the main event loop responsive while deletes block the worker', async () => {
    const [c, d] = await Promise.all([createNetns('lag-c'), createNetns('lag-d')]);
    const specs = Array.from({ length: 10 }, (_, i) => pair(400 + i, { clientNs: c, endpointNs: d }));
    await Promise.all(specs.map((s) => dp.createVeth(s)));

    const h = monitorEventLoopDelay({ resolution: 1 });
    let maxGap = 0;
    let last = performance.now();
    const tick = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 1);
    h.enable();
    const t = performance.now();
    // One at a time, so each is a separate ~20 ms synchronous kernel call in the worker.
    for (const s of specs) await dp.deleteVeth({ netns: c.path, ifname: s.client.ifname });
    const took = performance.now() - t;
    h.disable();
    clearInterval(tick);
    const maxDelayMs = h.max / 1e6;
    console.log(`10 deletes took ${took.toFixed(0)} ms; event loop max delay ${maxDelayMs.toFixed(1)} ms, max tick gap ${maxGap.toFixed(1)} ms`);
    // The deletes really were slow kernel work (~20 ms each), yet the loop never stalled for one of them.
    expect(took).toBeGreaterThan(100);
    expect(maxDelayMs).toBeLessThan(15);
    expect(ours(await dp.snapshot(c.path)).links).toEqual([]);
    await Promise.all([deleteNetns(c), deleteNetns(d)]);
  });

  it('lets a process exit without close() while sockets are open (no segfault)', async () => {
    // A child process so a crash cannot take the test runner down; it loads the TS sources the way the worker does.
    const index = new URL('../../src/dataplane/veth/index.ts', import.meta.url).href;
    for (const ending of ['process.exit(0)', '/* natural end */']) {
      const code = `
        import { register } from 'node:module';
        register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(TS_HOOKS)}), { data: { resolveFrom: ${JSON.stringify(index)} } });
        const { createNetlinkDataplane } = await import(${JSON.stringify(index)});
        const dp = await createNetlinkDataplane();
        await dp.snapshot(${JSON.stringify(a.path)});
        const { openSockets } = await dp.stats();
        if (openSockets.length !== 1) throw new Error('expected an open socket');
        ${ending};`;
      const r = await execa('node', ['--input-type=module', '-e', code], { reject: false });
      expect({ exitCode: r.exitCode, signal: r.signal, stderr: r.stderr }).toEqual({ exitCode: 0, signal: undefined, stderr: '' });
    }
  });

  it('closes idle sockets so deleted namespaces are not pinned', async () => {
    const quick = await createNetlinkDataplane({ socketIdleMs: 100 });
    try {
      const spec = pair(30);
      await quick.createVeth(spec);
      expect((await quick.stats()).openSockets).toHaveLength(2);
      await waitFor('idle sockets to close', async () => (await quick.stats()).openSockets.length === 0, 5000);
      // Still usable: the next call reopens.
      await quick.deleteVeth({ netns: a.path, ifname: spec.client.ifname });
      expect(await quick.linkExists(b.path, spec.endpoint.ifname)).toBe(false);
    } finally {
      await quick.close();
    }
    await expect(quick.snapshot(a.path)).rejects.toMatchObject({ code: 'ECLOSED' });
  });
});
