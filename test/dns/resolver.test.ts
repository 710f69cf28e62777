import { createSocket, type Socket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DnsCache,
  DomainNotFoundError,
  isInterdomain,
  orderByRfc2782,
  parseInterdomain,
  pickInOrder,
  SrvResolver,
  UdpTcpTransport,
  type DnsTransport,
} from '../../src/dns/index.js';
import { startDnsmasq, type Dnsmasq } from './dnsmasq.js';

const BIG = 40;

const zone = [
  // two targets, addresses delivered as additionals
  'srv-host=_nsm._tcp.two.test,nse1.two.test,5001,10,60',
  'srv-host=_nsm._tcp.two.test,nse2.two.test,5002,20,40',
  'host-record=nse1.two.test,198.18.5.1',
  'host-record=nse2.two.test,198.18.5.2,fd00:5::2',
  // only upstream's plain name exists
  'srv-host=registry.nsm-system.up.test,reg.up.test,5002,0,0',
  'host-record=reg.up.test,198.18.6.1',
  // same priority, weights 10/90
  'srv-host=_nsm._tcp.w.test,a.w.test,1000,0,10',
  'srv-host=_nsm._tcp.w.test,b.w.test,2000,0,90',
  'host-record=a.w.test,198.18.7.1',
  'host-record=b.w.test,198.18.7.2',
  // too many to fit in a 512-byte UDP reply
  ...Array.from({ length: BIG }, (_, i) => `srv-host=_nsm._tcp.big.test,target-with-a-long-name-${i}.big.test,${6000 + i},0,1`),
  ...Array.from({ length: BIG }, (_, i) => `host-record=target-with-a-long-name-${i}.big.test,198.18.8.${i + 1}`),
  'local-ttl=30',
];

let dns: Dnsmasq;
beforeAll(async () => {
  dns = await startDnsmasq(zone, '_nsm._tcp.two.test');
});
afterAll(async () => {
  await dns?.stop();
});

/** Counts what actually reaches the network, so that cache hits are visible. */
function counting(inner: DnsTransport = new UdpTcpTransport()) {
  const seen: string[] = [];
  const transport: DnsTransport = {
    async query(server, q, t) {
      const r = await inner.query(server, q, t);
      seen.push(`${q.type} ${q.name} ${r.via}`);
      return r;
    },
  };
  return { transport, seen };
}

/** mulberry32: a tiny seeded PRNG so the weighting test is deterministic. */
function seeded(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('interdomain names', () => {
  it('splits at the first @', () => {
    expect(isInterdomain('icmp@my.cluster2')).toBe(true);
    expect(isInterdomain('icmp')).toBe(false);
    expect(parseInterdomain('icmp@my.cluster2')).toEqual({ target: 'icmp', domain: 'my.cluster2' });
    expect(parseInterdomain('a@b@c')).toEqual({ target: 'a', domain: 'b@c' });
    expect(() => parseInterdomain('icmp@')).toThrow(/non-empty/);
  });
});

describe('SrvResolver against dnsmasq', () => {
  it('resolves _nsm._tcp with two targets from the additional section, lowest priority first', async () => {
    const { transport, seen } = counting();
    const r = new SrvResolver({ servers: [dns.server], transport });
    const targets = await r.resolveDomain('two.test');
    expect(targets).toEqual([
      { host: 'nse1.two.test', port: 5001, address: '198.18.5.1', priority: 10, weight: 60, url: 'tcp://198.18.5.1:5001' },
      { host: 'nse2.two.test', port: 5002, address: '198.18.5.2', priority: 20, weight: 40, url: 'tcp://198.18.5.2:5002' },
    ]);
    // no A/AAAA follow-ups: the additionals were enough
    expect(seen).toEqual(['SRV _nsm._tcp.two.test udp']);
  });

  it('falls back to registry.nsm-system.<domain>', async () => {
    const r = new SrvResolver({ servers: [dns.server] });
    const [t, ...rest] = await r.resolveDomain('up.test');
    expect(rest).toHaveLength(0);
    expect(t).toMatchObject({ host: 'reg.up.test', port: 5002, url: 'tcp://198.18.6.1:5002' });
  });

  it('names the domain and both names tried when nothing exists', async () => {
    const r = new SrvResolver({ servers: [dns.server] });
    const err = await r.resolveDomain('nowhere.test').catch((e) => e);
    expect(err).toBeInstanceOf(DomainNotFoundError);
    expect(err.message).toContain('"nowhere.test"');
    expect(err.message).toContain('_nsm._tcp.nowhere.test → NXDOMAIN');
    expect(err.message).toContain('registry.nsm-system.nowhere.test → NXDOMAIN');
  });

  it('takes literal addresses without DNS', async () => {
    const { transport, seen } = counting();
    const r = new SrvResolver({ servers: [dns.server], transport });
    expect((await r.resolveDomain('10.1.2.3:5004'))[0]!.url).toBe('tcp://10.1.2.3:5004');
    expect((await r.resolveDomain('tcp://10.1.2.3:5004'))[0]!.address).toBe('10.1.2.3');
    expect((await r.resolveDomain('[fd00::1]:5004'))[0]!.url).toBe('tcp://[fd00::1]:5004');
    expect(seen).toEqual([]);
  });

  it('caches for the TTL, then asks again', async () => {
    let now = 1_000_000;
    const { transport, seen } = counting();
    const r = new SrvResolver({ servers: [dns.server], transport, now: () => now });
    await r.resolveDomain('two.test');
    await r.resolveDomain('two.test');
    expect(seen).toHaveLength(1);
    now += 29_000; // local-ttl=30
    await r.resolveDomain('two.test');
    expect(seen).toHaveLength(1);
    now += 1_000;
    await r.resolveDomain('two.test');
    expect(seen).toHaveLength(2);
  });

  it('caches NXDOMAIN for the default 5 s (dnsmasq sends no SOA)', async () => {
    let now = 0;
    const { transport, seen } = counting();
    const r = new SrvResolver({ servers: [dns.server], transport, now: () => now });
    await expect(r.resolveDomain('nowhere.test')).rejects.toThrow(DomainNotFoundError);
    await expect(r.resolveDomain('nowhere.test')).rejects.toThrow(DomainNotFoundError);
    expect(seen).toHaveLength(2);
    now += 5_000;
    await expect(r.resolveDomain('nowhere.test')).rejects.toThrow(DomainNotFoundError);
    expect(seen).toHaveLength(4);
  });

  it('shares a DnsCache between resolvers', async () => {
    const cache = new DnsCache();
    const a = counting();
    const b = counting();
    await new SrvResolver({ servers: [dns.server], transport: a.transport, cache }).resolveDomain('up.test');
    await new SrvResolver({ servers: [dns.server], transport: b.transport, cache }).resolveDomain('up.test');
    expect(a.seen.length).toBeGreaterThan(0);
    expect(b.seen).toEqual([]);
  });

  it('retries over TCP when the UDP answer is truncated', async () => {
    const { transport, seen } = counting();
    const r = new SrvResolver({ servers: [dns.server], transport, cache: false });
    const targets = await r.resolveDomain('big.test');
    expect(targets).toHaveLength(BIG);
    expect(new Set(targets.map((t) => t.port)).size).toBe(BIG);
    expect(seen[0]).toBe('SRV _nsm._tcp.big.test tcp');
  });

  it('can be forced onto TCP', async () => {
    const { transport, seen } = counting(new UdpTcpTransport({ forceTcp: true }));
    const r = new SrvResolver({ servers: [dns.server], transport });
    expect(await r.resolveDomain('two.test')).toHaveLength(2);
    expect(seen).toEqual(['SRV _nsm._tcp.two.test tcp']);
  });

  it('moves on when the first server refuses (closed port)', async () => {
    const r = new SrvResolver({ servers: ['127.0.0.1:9', dns.server], timeoutMs: 2000 });
    const started = Date.now();
    expect(await r.resolveDomain('two.test')).toHaveLength(2);
    // ECONNREFUSED arrives at once; we must not have waited out the timeout
    expect(Date.now() - started).toBeLessThan(1500);
  });

  describe('with a silent first server', () => {
    let silent: Socket;
    let silentPort = 0;
    beforeAll(async () => {
      silent = createSocket('udp4');
      await new Promise<void>((r) => silent.bind(0, '127.0.0.1', () => r()));
      silentPort = silent.address().port;
    });
    afterAll(() => silent?.close());

    it('times out on it and asks the next', async () => {
      const r = new SrvResolver({ servers: [`127.0.0.1:${silentPort}`, dns.server], timeoutMs: 200 });
      expect(await r.resolveDomain('two.test')).toHaveLength(2);
    });

    it('reports every server when none answers', async () => {
      const r = new SrvResolver({ servers: [`127.0.0.1:${silentPort}`, '127.0.0.1:9'], timeoutMs: 200 });
      await expect(r.resolveDomain('two.test')).rejects.toThrow(/no DNS server answered SRV _nsm\._tcp\.two\.test: .*within 200 ms.*ECONNREFUSED/);
    });
  });

  it('splits a 10/90 weight pair about 10/90 over real queries', async () => {
    // Real queries with the cache off, so the weighting is exercised end to end; 2000 runs put the
    // 10 % share's standard deviation near 0.7 %, far inside the ±5 % band.
    const r = new SrvResolver({ servers: [dns.server], cache: false });
    let firstA = 0;
    const N = 2000;
    for (let i = 0; i < N; i++) if ((await r.resolveDomain('w.test'))[0]!.host === 'a.w.test') firstA++;
    expect(Math.abs(firstA / N - 0.1)).toBeLessThan(0.05);
  });
});

describe('RFC 2782 ordering', () => {
  it('puts lower priority first regardless of weight', () => {
    const recs = [
      { id: 'p2', priority: 2, weight: 1000 },
      { id: 'p0', priority: 0, weight: 1 },
      { id: 'p1', priority: 1, weight: 0 },
    ];
    expect(orderByRfc2782(recs, seeded(1)).map((r) => r.id)).toEqual(['p0', 'p1', 'p2']);
  });

  it('splits weights 10/90 within ±5 % (seeded)', () => {
    const rng = seeded(42);
    const recs = [
      { id: 'a', priority: 0, weight: 10 },
      { id: 'b', priority: 0, weight: 90 },
    ];
    let a = 0;
    for (let i = 0; i < 2000; i++) if (orderByRfc2782(recs, rng)[0]!.id === 'a') a++;
    expect(Math.abs(a / 2000 - 0.1)).toBeLessThan(0.05);
  });

  it('gives weight-0 records only a small chance beside weighted ones, and a fair one among themselves', () => {
    const rng = seeded(7);
    const mixed = [
      { id: 'zero', priority: 0, weight: 0 },
      { id: 'w', priority: 0, weight: 100 },
    ];
    let zeroFirst = 0;
    for (let i = 0; i < 2000; i++) if (orderByRfc2782(mixed, rng)[0]!.id === 'zero') zeroFirst++;
    expect(zeroFirst).toBeGreaterThan(0);
    expect(zeroFirst / 2000).toBeLessThan(0.03);

    const zeros = [
      { id: 'x', priority: 0, weight: 0 },
      { id: 'y', priority: 0, weight: 0 },
    ];
    let x = 0;
    for (let i = 0; i < 2000; i++) if (orderByRfc2782(zeros, rng)[0]!.id === 'x') x++;
    expect(Math.abs(x / 2000 - 0.5)).toBeLessThan(0.05);
  });
});

describe('pickInOrder', () => {
  it('skips targets that fail and reports all failures if none answer', async () => {
    const targets = [{ url: 'tcp://a:1' }, { url: 'tcp://b:2' }, { url: 'tcp://c:3' }];
    const tried: string[] = [];
    const got = await pickInOrder(targets, async (t) => {
      tried.push(t.url);
      if (t.url !== 'tcp://b:2') throw new Error('refused');
      return 'ok';
    });
    expect(got).toEqual({ target: targets[1], result: 'ok' });
    expect(tried).toEqual(['tcp://a:1', 'tcp://b:2']);
    await expect(pickInOrder(targets, async () => Promise.reject(new Error('down')))).rejects.toThrow(/all 3 targets failed: tcp:\/\/a:1: down; tcp:\/\/b:2: down; tcp:\/\/c:3: down/);
  });
});

describe('server configuration', () => {
  it('prefers NSM_DNS_SERVERS, else resolv.conf nameservers on port 53', async () => {
    const { defaultServers, parseServer } = await import('../../src/dns/index.js');
    expect(defaultServers({ NSM_DNS_SERVERS: '10.0.0.1:5353, 10.0.0.2' })).toEqual(['10.0.0.1:5353', '10.0.0.2']);
    const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
    const dir = mkdtempSync('/tmp/nsmesh-resolv-');
    writeFileSync(`${dir}/resolv.conf`, '# c\nsearch x\nnameserver 192.0.2.1\nnameserver fe80::1%eth0\n');
    expect(defaultServers({}, `${dir}/resolv.conf`).map(parseServer)).toEqual([
      { address: '192.0.2.1', port: 53 },
      { address: 'fe80::1', port: 53 },
    ]);
    expect(defaultServers({}, `${dir}/missing`)).toEqual(['127.0.0.1']);
    rmSync(dir, { recursive: true, force: true });
  });
});
