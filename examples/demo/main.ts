#!/usr/bin/env node
// The demo mesh on one machine: two node namespaces joined by an underlay (198.18.0.0/24 on a bridge), etcd
// as the shared registry, nsmd on each node, an endpoint and a client pod on each node. The NetworkService
// prefers the endpoint on the client's own node ({{.nodeName}}) and falls through to any other; when node 2's
// endpoint goes away, node 2's next client is served by node 1's endpoint over a VXLAN tunnel. Every hop runs
// mutual TLS with SPIFFE identities from an embedded issuer. It proves traffic flows, shows what it built,
// and tears everything down (also on Ctrl-C).
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import type { Connection } from '../../src/api/types.js';
import { connectionsTable } from '../../src/cli/connection-view.js';
import { EmbeddedIssuer } from '../../src/identity/issuer.js';
import { podId } from '../../src/identity/spiffe-id.js';
import { FatalError, waitFor } from '../../src/util/wait-for.js';
import { etcdArgs } from '../../src/lab/etcd-args.js';
import { DemoLab, runDemo, say } from './run.js';

// Compiled to dist/examples/demo/: the project root is three levels up.
const ROOT = path.resolve(import.meta.dirname, '../../..');
const bin = (p: string) => path.join(ROOT, 'dist', p);
const lab = new DemoLab();
const { tag, dir } = lab;
const TRUST_DOMAIN = 'nsmesh.local';
const UNDERLAY = '198.18.0';
const ETCD = `${UNDERLAY}.254:2379`;
let issuer: EmbeddedIssuer | undefined;

const step = (s: string) => say(`\n==> ${s}`);
const indent = (text: string) => text.trimEnd().split('\n').map((l) => `    ${l}`).join('\n');

const SERVICE = `apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata:
  name: demo-icmp
spec:
  payload: IP
  matches:
    # Prefer an endpoint on the client's own node...
    - fallthrough: true
      routes:
        - destination_selector: {nodeName: "{{.nodeName}}"}
    # ...and fall through to any endpoint of the service.
    - routes:
        - destination_selector: {app: icmp}
`;

/** A Workload API socket of its own for each process: the embedded issuer attests by socket. */
async function identity(spiffeId: string): Promise<Record<string, string>> {
  const file = path.join(dir, 'spiffe', `${spiffeId.split('/').slice(-2).join('-')}.sock`);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  return { SPIFFE_ENDPOINT_SOCKET: await issuer!.addWorkload(spiffeId, file) };
}

const netns = (n: string) => lab.netns(n);

const spawnIn = (ns: string, cmd: string[], env: Record<string, string>) => lab.spawnIn(ns, cmd, env);


interface Node {
  name: string;
  ns: string;
  ip: string;
  socket: string;
}

let adminEnv: Record<string, string> = {};
const nsmctl = (node: Node, args: string[], input?: string) =>
  execa('node', [bin('src/cli/nsmctl.js'), ...args], { env: { ...adminEnv, NSM_CONNECT_TO: node.socket }, ...(input ? { input } : {}) });

let tornDown = false;
async function teardown(): Promise<void> {
  if (tornDown) return;
  tornDown = true;
  step('tearing down');
  await lab.release(async () => issuer?.close());
}

async function underlay(): Promise<Node[]> {
  const ul = await netns('underlay');
  await execa('ip', ['-n', ul, 'link', 'add', 'br0', 'type', 'bridge']);
  await execa('ip', ['-n', ul, 'addr', 'add', `${UNDERLAY}.254/24`, 'dev', 'br0']);
  await execa('ip', ['-n', ul, 'link', 'set', 'br0', 'up']);
  const nodes: Node[] = [];
  for (const i of [1, 2]) {
    const ns = await netns(`node${i}`);
    // Both ends are born in their namespaces: nothing of the demo ever appears in the root namespace.
    await execa('ip', ['-n', ul, 'link', 'add', `n${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await execa('ip', ['-n', ul, 'link', 'set', `n${i}`, 'master', 'br0', 'up']);
    await execa('ip', ['-n', ns, 'addr', 'add', `${UNDERLAY}.${i}/24`, 'dev', 'eth0']);
    await execa('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    fs.mkdirSync(path.join(dir, `node${i}`));
    nodes.push({ name: `node-${i}`, ns, ip: `${UNDERLAY}.${i}`, socket: `unix://${path.join(dir, `node${i}`, 'nsm.io.sock')}` });
  }
  const data = path.join(dir, 'etcd');
  spawnIn(ul, ['etcd', ...etcdArgs({ name: 'demo', dataDir: data, clientUrl: `http://${ETCD}`, peerUrl: 'http://127.0.0.1:2380', logLevel: 'error' })], {});
  await waitFor('etcd', async () => (await execa('ip', ['netns', 'exec', ul, 'node', '-e', `fetch('http://${ETCD}/health').then(r=>r.text()).then(t=>process.exit(t.includes('true')?0:1),()=>process.exit(1))`], { reject: false })).exitCode === 0, 15_000);
  return nodes;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces: run it as root');
  step(`starting an embedded SPIFFE issuer for trust domain ${TRUST_DOMAIN} (production uses a SPIRE agent)`);
  issuer = await EmbeddedIssuer.start({ trustDomain: TRUST_DOMAIN, stateDir: path.join(dir, 'issuer') });
  adminEnv = await identity(`spiffe://${TRUST_DOMAIN}/nsmesh/admin/nsmctl`);
  say('every hop below runs mutual TLS with X.509-SVIDs and signs its path segment (ES256 path tokens)');

  step(`building two nodes on an underlay ${UNDERLAY}.0/24 (namespaces nsmdemo-${tag}-*) and etcd at ${ETCD}`);
  const nodes = await underlay();

  step('starting nsmd on each node (shared registry in etcd, remote API on port 5001)');
  for (const node of nodes) {
    const nsmd = spawnIn(node.ns, ['node', bin('src/cli/nsmd.js')], {
      ...(await identity(`spiffe://${TRUST_DOMAIN}/nsmesh/nsmd/${node.name}`)),
      NSM_NAME: `nsmd-${node.name}`,
      NODE_NAME: node.name,
      NSM_LISTEN_ON: node.socket,
      NSM_REMOTE_LISTEN_ON: `tcp://${node.ip}:5001`,
      NSM_REGISTRY_URL: `etcd://${ETCD}`,
      NSM_STATE_DIR: path.join(dir, node.ns, 'state'),
      NSM_LOG_LEVEL: 'WARN',
      NSM_CLEANUP_ON_EXIT: 'true',
    });
    await waitFor(`nsmd on ${node.name}`, async () => {
      if (nsmd.exitCode !== null) throw new FatalError(`nsmd on ${node.name} exited`);
      return (await nsmctl(node, ['get', 'services'])).exitCode === 0;
    });
    say(`  nsmd-${node.name}: local API ${node.socket}, remote API tcp://${node.ip}:5001`);
  }

  step('registering the NetworkService: prefer the client\'s node, fall through to any endpoint');
  say(indent(SERVICE));
  await nsmctl(nodes[0]!, ['apply', '-f', '-'], SERVICE);

  step('starting an icmp-responder endpoint pod on each node');
  const endpoints: ResultPromise[] = [];
  for (const [i, node] of nodes.entries()) {
    const pod = await netns(`nse${i + 1}`);
    endpoints.push(
      spawnIn(pod, ['node', bin('examples/icmp-responder/main.js')], {
        ...(await identity(podId(TRUST_DOMAIN, 'demo', `nse-${node.name}`))),
        NSM_NAME: `nse-${node.name}`,
        NSM_CONNECT_TO: node.socket,
        NSM_SERVICE_NAMES: 'demo-icmp',
        NSM_LABELS: `nodeName:${node.name},app:icmp`,
        NSM_CIDR_PREFIX: `169.254.${100 * (i + 1)}.0/24`,
        NSM_LOG_LEVEL: 'WARN',
      }),
    );
  }
  await waitFor('both endpoints in the shared registry', async () => {
    const { stdout } = await nsmctl(nodes[0]!, ['get', 'endpoints', '--output', 'json']);
    return (JSON.parse(stdout) as unknown[]).length === 2;
  });
  say(indent((await nsmctl(nodes[0]!, ['get', 'endpoints'])).stdout));

  const connect = async (node: Node, client: string): Promise<{ conn: Connection; pod: string }> => {
    const pod = await netns(client);
    const t0 = performance.now();
    const r = await execa('ip', ['netns', 'exec', pod, 'node', bin('src/cli/nsc.js'), '--output', 'json'], {
      env: { ...(await identity(podId(TRUST_DOMAIN, 'demo', client))), NSM_NAME: client, NSM_CONNECT_TO: node.socket, NSM_NETWORK_SERVICES: 'kernel://demo-icmp/nsm0' },
    });
    const [conn] = JSON.parse(String(r.stdout)) as Connection[];
    say(`  ${client} on ${node.name} -> ${conn!.network_service_endpoint_name} (nsc process start to finish: ${(performance.now() - t0).toFixed(0)} ms)`);
    say(`    path: ${conn!.path!.path_segments.map((s) => s.name).join(' -> ')}`);
    return { conn: conn!, pod };
  };
  const prove = async ({ conn, pod }: { conn: Connection; pod: string }) => {
    const dst = conn.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!;
    const r = await execa('ip', ['netns', 'exec', pod, 'ping', '-c', '3', '-i', '0.2', '-W', '2', '-I', 'nsm0', dst], { reject: false });
    const link = await execa('ip', ['-n', pod, '-d', '-br', 'link', 'show', 'nsm0']);
    say(`  ${conn.id}: ${String(r.stdout).split('\n').find((l) => l.includes('packets transmitted')) ?? ''} to ${dst}`);
    say(`    nsm0 in ${pod}: ${String(link.stdout).trim()}`);
    if (r.exitCode !== 0) throw new Error(`ping from ${pod} to ${dst} failed`);
  };

  step('connecting a client on each node: each gets the endpoint of its own node (a veth pair)');
  const local = [await connect(nodes[0]!, 'client-a'), await connect(nodes[1]!, 'client-b')];
  say(connectionsTable(local.map((l) => l.conn)));
  for (const l of local) await prove(l);

  step("stopping node 2's endpoint, then connecting another client on node 2: it falls through to node 1's endpoint over VXLAN");
  endpoints[1]!.kill('SIGTERM');
  await endpoints[1];
  await waitFor("node 2's endpoint to leave the registry", async () => {
    const { stdout } = await nsmctl(nodes[0]!, ['get', 'endpoints', '--output', 'json']);
    return (JSON.parse(stdout) as unknown[]).length === 1;
  });
  const remote = await connect(nodes[1]!, 'client-c');
  await prove(remote);
  say(connectionsTable([remote.conn]));

  step('closing every connection');
  await nsmctl(nodes[0]!, ['close', local[0]!.conn.id]);
  for (const c of [local[1]!, remote]) await nsmctl(nodes[1]!, ['close', c.conn.id]);
  for (const ns of lab.namespaces.filter((n) => /-(client|nse)/.test(n))) {
    const r = await execa('ip', ['-n', ns, '-o', 'link', 'show']);
    const left = String(r.stdout).split('\n').filter((l) => l && !/: lo:/.test(l));
    say(`  ${ns}: ${left.length === 0 ? 'no interfaces left' : `LEFT: ${left.join('; ')}`}`);
  }
}

await runDemo(main, teardown, 'demo finished');
