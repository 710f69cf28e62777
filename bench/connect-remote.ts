/**
 * connect-remote: what a cross-node connection costs to set up, and what its VXLAN data path carries
 * compared with a VXLAN link built by hand with iproute2 over the same underlay.
 * The mesh is bench/lib/remote-mesh.ts's: two node namespaces on a bridge, etcd, nsmd on each node, an icmp
 * responder on node 1, this process the client of a pod on node 0, identity on.
 *
 * Everything carries the run's `nsmb-<hex>-` tag and is removed at the end, on failure and on Ctrl-C too.
 */
import { VXLAN_PORT, vxlanMtu } from '../src/dataplane/vxlan/mtu.js';
import { Cleanups } from './lib/cleanup.js';
import { finishRun, runBench, startRun } from './lib/run.js';
import { BenchNamespaces, type Netns } from './lib/netns.js';
import { note } from './lib/report.js';
import { compareThroughput, prepareRemoteRun, setupLatency, startRemoteMesh, throughputConnection, type RemoteMesh } from './lib/remote-mesh.js';
import type { Underlay } from './lib/underlay.js';
import { createHandVxlan, vxlanDifferences, vxlanLinks } from './lib/vxlan.js';
import type { Metrics } from './lib/report.js';

const BENCH = 'connect-remote';
const UNDERLAY_MTU = 1500;
/** nsmd's own rule (underlay MTU minus its VXLAN overhead), so the hand-built link gets the very same MTU. */
const TUNNEL_MTU = vxlanMtu(UNDERLAY_MTU, '198.18.0.1');
/** The hand-built link's /32s: pod range too, but outside what the responder hands out. */
const HAND_ADDRS = ['169.254.200.1', '169.254.200.2'] as const;
const TARGET_SEQ_P50_MS = 10;
const TARGET_RATIO = 0.95;

const cleanups = new Cleanups();

async function throughput(nss: BenchNamespaces, mesh: RemoteMesh, m: Metrics): Promise<string[]> {
  const failures: string[] = [];
  const [node0, node1] = mesh.ul.nodes as [Underlay['nodes'][0], Underlay['nodes'][0]];
  const meshIf = `n${nss.tag}t`;
  const t = await throughputConnection(mesh, `${nss.tag}-tput`, meshIf, failures);

  // Linux allows one VXLAN device per VNI and port in a link net, so the hand-built link takes a VNI no
  // mesh device on either node uses; nothing else in the mesh is asking for VNIs during this phase.
  const used = new Set([...(await vxlanLinks(mesh.cli)), ...(await vxlanLinks(mesh.nse))].map((l) => l.vni));
  let vni = 4242;
  while (used.has(vni)) vni++;
  const hp0 = await nss.create('hp0');
  const hp1 = await nss.create('hp1');
  const hand0 = { node: node0, pod: hp0, ifname: 'hv0', addr: HAND_ADDRS[0] };
  const hand1 = { node: node1, pod: hp1, ifname: 'hv1', addr: HAND_ADDRS[1] };
  await createHandVxlan(vni, VXLAN_PORT, TUNNEL_MTU, hand0, hand1);

  // Both ends of both links: the far end (the endpoint's side) receives, and decapsulation happens there.
  const device = async (ns: Netns, ifname: string | undefined, what: string) => {
    const d = (await vxlanLinks(ns)).find((l) => ifname === undefined || l.ifname === ifname);
    if (!d) throw new Error(`VXLAN device missing: ${what} in ${ns.name}`);
    return d;
  };
  const meshDev = await device(mesh.cli, meshIf, `mesh ${meshIf}`);
  const handDev = await device(hp0, hand0.ifname, `hand-built ${hand0.ifname}`);
  // The endpoint names its interface itself; by now the responder's namespace holds this connection's only.
  const meshFar = await device(mesh.nse, undefined, 'the mesh connection\'s endpoint side');
  const handFar = await device(hp1, hand1.ifname, `hand-built ${hand1.ifname}`);
  m.set('mesh_vxlan_mtu', meshDev.mtu, 'bytes');
  m.set('hand_vxlan_mtu', handDev.mtu, 'bytes');
  for (const [side, a, b] of [['client', meshDev, handDev], ['endpoint', meshFar, handFar]] as const) {
    const diff = vxlanDifferences(a, b);
    note(`${side}-side devices: mesh ${a.ifname} vni ${a.vni}, hand-built ${b.ifname} vni ${b.vni}; ${diff.length ? `they differ in: ${diff.join(', ')}` : 'same settings otherwise'}`);
  }

  await compareThroughput(nss, mesh, m, {
    mesh: t.path,
    hand: { from: hp0, fromAddr: HAND_ADDRS[0], to: hp1, toAddr: HAND_ADDRS[1] },
  }, { port: 5201, seconds: 2, omit: 1, rounds: 9 });
  await t.close();
  return failures;
}

async function main(): Promise<number> {
  await prepareRemoteRun(BENCH, []);
  const { nss, tmp, m } = await startRun(cleanups);
  const mesh = await startRemoteMesh(nss, cleanups, tmp, { underlayMtu: UNDERLAY_MTU, cidr: '169.254.0.0/17' });
  const failures: string[] = [];
  failures.push(...(await setupLatency(mesh, nss.tag, m, { warmup: 10, n: 200 })));
  failures.push(...(await throughput(nss, mesh, m)));

  const p50 = m.get('remote_seq_p50_ms')!;
  const ratio = m.get('mesh_over_hand_ratio')!;
  const targets: [string, boolean][] = [
    [`remote_seq_p50_ms <= ${TARGET_SEQ_P50_MS} ms (${p50})`, p50 <= TARGET_SEQ_P50_MS],
    [`mesh_over_hand_ratio >= ${TARGET_RATIO} (${ratio})`, ratio >= TARGET_RATIO],
    [`remote_ok = 200 (${m.get('remote_ok')})`, m.get('remote_ok') === 200],
    [`leftover_links = 0 (${m.get('leftover_links')})`, m.get('leftover_links') === 0],
  ];
  return finishRun(BENCH, m, targets, failures);
}

await runBench(cleanups, main);
