/**
 * wireguard: what an encrypted cross-node connection costs to set up, and what its WireGuard data path
 * (wireguard-go here: the kernel has no WireGuard) carries compared with wireguard-go configured by hand with
 * `wg` over the same underlay, with the same MTU, in the same run.
 * The mesh is bench/lib/remote-mesh.ts's, and every Request carries `encryption: required`.
 *
 * Everything carries the run's `nsmb-<hex>-` tag and is removed at the end, on failure and on Ctrl-C too.
 */
import path from 'node:path';
import { wgMtu } from '../src/dataplane/wireguard/mtu.js';
import { Cleanups } from './lib/cleanup.js';
import { BenchNamespaces } from './lib/netns.js';
import { note, type Metrics } from './lib/report.js';
import { compareThroughput, prepareRemoteRun, setupLatency, startRemoteMesh, throughputConnection, type RemoteMesh } from './lib/remote-mesh.js';
import { finishRun, runBench, startRun } from './lib/run.js';
import type { Underlay } from './lib/underlay.js';
import { createHandWireguard, linkMtus } from './lib/wireguard-hand.js';

const BENCH = 'wireguard';
const UNDERLAY_MTU = 1500;
/** nsmd's rule (underlay MTU minus WireGuard's IPv4 overhead), so the hand-built link gets the very same MTU. */
const TUNNEL_MTU = wgMtu(UNDERLAY_MTU, '198.18.0.1');
const HAND_ADDRS = ['169.254.200.1', '169.254.200.2'] as const;
/** Above the ports nsmd allocates from 51820 for this bench's few connections at a time. */
const HAND_PORTS = [51990, 51991] as const;
/**
 * The sequential phase keeps every connection open until it closes them all, and each userspace WireGuard end
 * takes one of the host's 128 (default) inotify instances, two per connection on this one machine.
 */
const SEQ_N = 40;
const TARGET_RATIO = 0.95;

const cleanups = new Cleanups();

async function throughput(nss: BenchNamespaces, mesh: RemoteMesh, m: Metrics, tmp: string): Promise<string[]> {
  const failures: string[] = [];
  const [node0, node1] = mesh.ul.nodes as [Underlay['nodes'][0], Underlay['nodes'][0]];
  const meshIf = `n${nss.tag}t`;
  const t = await throughputConnection(mesh, `${nss.tag}-tput`, meshIf, failures);
  const hp0 = await nss.create('hp0');
  const hp1 = await nss.create('hp1');
  const hand = [
    { node: node0, pod: hp0, ifname: `w${nss.tag}h0`, addr: HAND_ADDRS[0], listenPort: HAND_PORTS[0] },
    { node: node1, pod: hp1, ifname: `w${nss.tag}h1`, addr: HAND_ADDRS[1], listenPort: HAND_PORTS[1] },
  ] as const;
  await createHandWireguard(nss, cleanups, tmp, TUNNEL_MTU, hand[0], hand[1]);

  const meshDev = (await linkMtus(mesh.cli)).get(meshIf);
  const handDev = (await linkMtus(hp0)).get(hand[0].ifname);
  if (!meshDev || !handDev) throw new Error(`WireGuard device missing: mesh ${meshIf} ${meshDev ? 'found' : 'missing'}, hand-built ${hand[0].ifname} ${handDev ? 'found' : 'missing'}`);
  if (meshDev.kind !== 'tun') failures.push(`the mesh connection is not WireGuard: its device is a ${meshDev.kind ?? 'plain'} link`);
  m.set('mesh_wg_mtu', meshDev.mtu, 'bytes');
  m.set('hand_wg_mtu', handDev.mtu, 'bytes');
  note(`client-side devices: mesh ${meshIf} (${meshDev.kind}, mtu ${meshDev.mtu}), hand-built ${hand[0].ifname} (${handDev.kind}, mtu ${handDev.mtu})`);

  await compareThroughput(nss, mesh, m, {
    mesh: t.path,
    hand: { from: hp0, fromAddr: HAND_ADDRS[0], to: hp1, toAddr: HAND_ADDRS[1] },
  }, { port: 5201, seconds: 5, rounds: 2 });
  await t.close();
  return failures;
}

async function main(): Promise<number> {
  await prepareRemoteRun(BENCH, [['wireguard-go', 'wireguard-go'], ['wg', 'wireguard-tools']]);
  const { nss, tmp, m } = await startRun(cleanups);
  const mesh = await startRemoteMesh(nss, cleanups, tmp, { underlayMtu: UNDERLAY_MTU, cidr: '169.254.0.0/17', labels: { encryption: 'required' } });
  const failures: string[] = [];
  failures.push(...(await setupLatency(mesh, nss.tag, m, { warmup: 5, n: SEQ_N })));
  failures.push(...(await throughput(nss, mesh, m, path.join(tmp))));

  const ratio = m.get('mesh_over_hand_ratio')!;
  const targets: [string, boolean][] = [
    [`mesh_over_hand_ratio >= ${TARGET_RATIO} (${ratio})`, ratio >= TARGET_RATIO],
    [`mesh_wg_mtu = hand_wg_mtu = ${TUNNEL_MTU}`, m.get('mesh_wg_mtu') === TUNNEL_MTU && m.get('hand_wg_mtu') === TUNNEL_MTU],
    [`remote_ok = ${SEQ_N} (${m.get('remote_ok')})`, m.get('remote_ok') === SEQ_N],
    [`leftover_links = 0 (${m.get('leftover_links')})`, m.get('leftover_links') === 0],
  ];
  return finishRun(BENCH, m, targets, failures);
}

await runBench(cleanups, main);
