/**
 * The multi-node harness itself (test/helpers/nodes.ts): nodes reach each other over the underlay bridge, etcd in
 * the underlay namespace serves every node, nsmd runs inside a node namespace against that etcd, the MTU option
 * reaches every link, and cleanup leaves no namespace and no root-namespace interface with the run's tag.
 */
import { execa } from 'execa';
import { beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../src/api/grpc.js';
import { ids, testTransport } from '../helpers/identity.js';
import { startIcmpResponder } from '../helpers/mesh.js';
import { execIn, ping, tag, TEST_PREFIX } from '../helpers/netns.js';
import { createUnderlay, httpGetIn, startEtcdIn, startNsmdOnNode, type NodeNsmdProc, type Underlay, type UnderlayEtcd } from '../helpers/nodes.js';
import { waitFor } from '../helpers/wait.js';

async function ourNamespaces(): Promise<string[]> {
  const r = await execa('ip', ['netns', 'list']);
  return String(r.stdout)
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith(`${TEST_PREFIX}${tag}-`));
}

/** Interfaces in the root namespace whose name mentions the run's tag. */
async function rootLinksWithTag(): Promise<string[]> {
  const r = await execa('ip', ['-o', 'link', 'show']);
  return String(r.stdout)
    .split('\n')
    .filter((l) => l.includes(tag));
}

async function mtuOf(ns: string, dev: string): Promise<number> {
  const r = await execa('ip', ['-n', ns, '-j', 'link', 'show', 'dev', dev]);
  return (JSON.parse(String(r.stdout)) as { mtu: number }[])[0]!.mtu;
}

async function healthFrom(ns: string, etcd: UnderlayEtcd): Promise<string | undefined> {
  const r = await httpGetIn(ns, `${etcd.clientUrl}/health`);
  return (JSON.parse(r.body) as { health?: string }).health;
}

let ul: Underlay;
let etcd: UnderlayEtcd;
const nsmds: NodeNsmdProc[] = [];

beforeAll(async () => {
  ul = await createUnderlay(3);
  etcd = await startEtcdIn(ul);
});

describe('underlay with 3 nodes', () => {
  it('names namespaces and addresses as documented', () => {
    expect(ul.underlay.name).toBe(`${TEST_PREFIX}${tag}-ul`);
    expect(ul.nodes.map((n) => n.name)).toEqual([0, 1, 2].map((i) => `${TEST_PREFIX}${tag}-n${i}`));
    const base = ul.underlay.ip.replace(/\.254$/, '');
    expect(ul.subnet).toBe(`${base}.0/24`);
    expect(base).toMatch(/^198\.(18|19)\.\d{1,3}$/);
    expect(ul.nodes.map((n) => n.ip)).toEqual([1, 2, 3].map((i) => `${base}.${i}`));
    for (const n of ul.nodes) expect(n.bridgePort.length).toBeLessThanOrEqual(15);
    expect(new Set(ul.nodes.map((n) => n.bridgePort)).size).toBe(3);
  });

  it('every node pings every other node and the underlay address', async () => {
    const pairs = ul.nodes.flatMap((from) => [...ul.nodes.filter((to) => to !== from), ul.underlay].map((to) => ({ from, to })));
    const results = await Promise.all(pairs.map(async ({ from, to }) => ({ route: `${from.name} -> ${to.ip}`, ok: await ping(from, to.ip) })));
    expect(results.filter((r) => !r.ok)).toEqual([]);
  });

  it('default MTU is 1500 on the bridge and both ends of every veth', async () => {
    expect(ul.mtu).toBe(1500);
    expect(await mtuOf(ul.underlay.name, ul.underlay.bridge)).toBe(1500);
    for (const n of ul.nodes) {
      expect(await mtuOf(n.name, n.ifname)).toBe(1500);
      expect(await mtuOf(ul.underlay.name, n.bridgePort)).toBe(1500);
    }
  });

  it('puts nothing in the root namespace', async () => {
    expect(await rootLinksWithTag()).toEqual([]);
  });
});

describe('etcd in the underlay namespace', () => {
  it('is healthy from node 1 at the underlay address', async () => {
    expect(etcd.url).toBe(`etcd://${ul.underlay.ip}:2379`);
    expect(await healthFrom(ul.nodes[0]!.name, etcd)).toBe('true');
  });

  it('stops and restarts (wiped) on the same address', async () => {
    await etcd.stop();
    expect(etcd.running).toBe(false);
    await expect(httpGetIn(ul.nodes[1]!.name, `${etcd.clientUrl}/health`)).rejects.toThrow();
    await etcd.restart({ wipe: true });
    expect(etcd.running).toBe(true);
    expect(await healthFrom(ul.nodes[1]!.name, etcd)).toBe('true');
  });
});

describe('nsmd on nodes', () => {
  it('runs inside node namespaces and shares the etcd registry across nodes', async () => {
    const [n0, n1] = ul.nodes as [Underlay['nodes'][0], Underlay['nodes'][0]];
    const [a, b] = await Promise.all([startNsmdOnNode(n0, { registryUrl: etcd.url }), startNsmdOnNode(n1, { registryUrl: etcd.url })]);
    expect(a.remoteUrl).toBe(`tcp://${n0.ip}:5001`);
    // The process really is in the node namespace: its network namespace is the one `ip netns` names.
    const inode = async (p: string) => (await execa('stat', ['-L', '-c', '%i', p])).stdout;
    expect(await inode(`/proc/${a.proc.pid}/ns/net`)).toBe(await inode(n0.path));

    const nseName = `${tag}-harness-nse`;
    nsmds.push(a, b);
    const nse = await startIcmpResponder(n0, { name: nseName, connectTo: a.url, services: [`${tag}-svc`] });
    const reg = new ApiClient('registry.NetworkServiceEndpointRegistry', b.url, await testTransport(ids.admin));
    try {
      await waitFor('the endpoint registered on node 0 to be found through node 1', async () => {
        const found = await reg.collect('Find', { network_service_endpoint: { name: nseName } }, { timeoutMs: 1000 });
        return found.length > 0;
      });
    } finally {
      reg.close();
      await nse.stop();
    }
  });
});

describe('MTU option', () => {
  it('applies 9000 to every underlay link and jumbo frames cross the bridge', async () => {
    const jumbo = await createUnderlay(2, { mtu: 9000, id: 'j' });
    try {
      expect(jumbo.underlay.name).toBe(`${TEST_PREFIX}${tag}-jul`);
      expect(await mtuOf(jumbo.underlay.name, jumbo.underlay.bridge)).toBe(9000);
      for (const n of jumbo.nodes) {
        expect(await mtuOf(n.name, n.ifname)).toBe(9000);
        expect(await mtuOf(jumbo.underlay.name, n.bridgePort)).toBe(9000);
      }
      // 8972 bytes of payload + 8 ICMP + 20 IP = 9000, don't fragment.
      const [n0, n1] = jumbo.nodes as [Underlay['nodes'][0], Underlay['nodes'][0]];
      const r = await execIn(n0, ['ping', '-4', '-c', '1', '-W', '2', '-M', 'do', '-s', '8972', n1.ip], { reject: false });
      expect(r.exitCode, String(r.stdout) + String(r.stderr)).toBe(0);
      // …and the 1500 underlay really is 1500: the same frame does not leave node 0.
      const small = await execIn(ul.nodes[0]!, ['ping', '-4', '-c', '1', '-W', '2', '-M', 'do', '-s', '8972', ul.nodes[1]!.ip], { reject: false });
      expect(small.exitCode).not.toBe(0);
    } finally {
      await jumbo.cleanup();
    }
  });
});

describe('cleanup', () => {
  it('leaves no namespace with the tag and no interface with the tag in the root namespace', async () => {
    expect((await ourNamespaces()).length).toBeGreaterThan(0);
    await ul.cleanup();
    expect(etcd.running).toBe(false);
    expect(nsmds.length).toBe(2);
    for (const n of nsmds) expect(n.proc.exitCode ?? n.proc.signalCode).not.toBeNull();
    expect(await ourNamespaces()).toEqual([]);
    expect(await rootLinksWithTag()).toEqual([]);
    // Idempotent.
    await ul.cleanup();
  });
});
