#!/usr/bin/env node
// The demo mesh on one machine: a node namespace running nsmd, two endpoint pods with different labels,
// two client pods whose labels the NetworkService routes to different endpoints. It proves traffic flows
// through the interfaces nsmd built, shows what it built, and tears everything down (also on Ctrl-C).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import type { Connection } from '../../src/api/types.js';
import { connectionsTable } from '../../src/cli/connection-view.js';
import { EmbeddedIssuer } from '../../src/identity/issuer.js';
import { podId } from '../../src/identity/spiffe-id.js';

// Compiled to dist/examples/demo/: the project root is three levels up.
const ROOT = path.resolve(import.meta.dirname, '../../..');
const bin = (p: string) => path.join(ROOT, 'dist', p);
const tag = randomBytes(2).toString('hex');
const nsName = (n: string) => `nsmdemo-${tag}-${n}`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsmesh-demo-'));
const socket = `unix://${dir}/nsm.io.sock`;
const procs: ResultPromise[] = [];
const TRUST_DOMAIN = 'nsmesh.local';
let issuer: EmbeddedIssuer | undefined;

/** A Workload API socket of its own for each process: the embedded issuer attests by socket. */
async function identity(spiffeId: string): Promise<Record<string, string>> {
  const file = path.join(dir, 'spiffe', `${spiffeId.split('/').pop()}.sock`);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  return { SPIFFE_ENDPOINT_SOCKET: await issuer!.addWorkload(spiffeId, file) };
}
const namespaces: string[] = [];

const say = (s: string) => process.stdout.write(`${s}\n`);
const step = (s: string) => say(`\n==> ${s}`);

const SERVICE = `apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata:
  name: demo-icmp
spec:
  payload: IP
  matches:
    - source_selector: {app: frontend}
      routes:
        - destination_selector: {color: red}
    - source_selector: {app: backend}
      routes:
        - destination_selector: {color: blue}
`;

async function netns(n: string): Promise<string> {
  const full = nsName(n);
  await execa('ip', ['netns', 'add', full]);
  namespaces.push(full);
  await execa('ip', ['-n', full, 'link', 'set', 'lo', 'up']);
  return full;
}

function spawnIn(ns: string, file: string, env: Record<string, string>): ResultPromise {
  const p = execa('ip', ['netns', 'exec', ns, 'node', file], { env, reject: false, stdout: 'ignore', stderr: 'pipe' });
  procs.push(p);
  return p;
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

let adminEnv: Record<string, string> = {};
const nsmctl = (args: string[], input?: string) =>
  execa('node', [bin('src/cli/nsmctl.js'), ...args], { env: { ...adminEnv, NSM_CONNECT_TO: socket }, ...(input ? { input } : {}) });

let tornDown = false;
async function teardown(): Promise<void> {
  if (tornDown) return;
  tornDown = true;
  step('tearing down');
  for (const p of procs.reverse()) p.kill('SIGTERM');
  await Promise.allSettled(procs);
  for (const n of namespaces) await execa('ip', ['netns', 'del', n], { reject: false });
  await issuer?.close();
  fs.rmSync(dir, { recursive: true, force: true });
  say(`removed ${namespaces.length} namespaces and ${procs.length} processes`);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces: run it as root');
  step(`building namespaces (prefix nsmdemo-${tag}-)`);
  const node = await netns('node');
  const pods = { clientA: await netns('client-a'), clientB: await netns('client-b'), red: await netns('nse-red'), blue: await netns('nse-blue') };
  say(`node ${node}; pods ${Object.values(pods).join(', ')}`);

  step(`starting an embedded SPIFFE issuer for trust domain ${TRUST_DOMAIN} (production uses a SPIRE agent)`);
  issuer = await EmbeddedIssuer.start({ trustDomain: TRUST_DOMAIN, stateDir: path.join(dir, 'issuer') });
  adminEnv = await identity(`spiffe://${TRUST_DOMAIN}/nsmesh/admin/nsmctl`);
  say('every hop below runs mutual TLS with X.509-SVIDs and signs its path segment (ES256 path tokens)');

  step('starting nsmd in the node namespace');
  const nsmd = spawnIn(node, bin('src/cli/nsmd.js'), {
    ...(await identity(`spiffe://${TRUST_DOMAIN}/nsmesh/nsmd/demo-node`)),
    NSM_LISTEN_ON: socket,
    NSM_STATE_DIR: path.join(dir, 'state'),
    NSM_NAME: 'nsmd-demo',
    NODE_NAME: 'demo-node',
    NSM_LOG_LEVEL: 'WARN',
    NSM_CLEANUP_ON_EXIT: 'true',
  });
  await waitFor('nsmd', async () => {
    if (nsmd.exitCode !== null) throw new Error('nsmd exited');
    return fs.existsSync(`${dir}/nsm.io.sock`) && (await nsmctl(['get', 'services'])).exitCode === 0;
  });
  say(`nsmd serves ${socket}`);

  step('registering the NetworkService: frontend clients -> red endpoint, backend clients -> blue endpoint');
  say(SERVICE.trimEnd().split('\n').map((l) => `    ${l}`).join('\n'));
  await nsmctl(['apply', '-f', '-'], SERVICE);

  step('starting two icmp-responder endpoints');
  for (const [color, ns, cidr] of [['red', pods.red, '169.254.100.0/24'], ['blue', pods.blue, '169.254.200.0/24']] as const) {
    spawnIn(ns, bin('examples/icmp-responder/main.js'), {
      ...(await identity(podId(TRUST_DOMAIN, 'demo', `nse-${color}`))),
      NSM_NAME: `nse-${color}`,
      NSM_CONNECT_TO: socket,
      NSM_SERVICE_NAMES: 'demo-icmp',
      NSM_LABELS: `color:${color}`,
      NSM_CIDR_PREFIX: cidr,
      NSM_LOG_LEVEL: 'WARN',
    });
  }
  await waitFor('both endpoints to register', async () => {
    const { stdout } = await nsmctl(['get', 'endpoints', '--output', 'json']);
    return (JSON.parse(stdout) as unknown[]).length === 2;
  });
  say((await nsmctl(['get', 'endpoints'])).stdout);

  step('connecting the clients (nsc runs inside each client namespace)');
  const conns: Connection[] = [];
  for (const [app, ns] of [['frontend', pods.clientA], ['backend', pods.clientB]] as const) {
    const t0 = performance.now();
    const r = await execa('ip', ['netns', 'exec', ns, 'node', bin('src/cli/nsc.js'), '--output', 'json'], {
      env: {
        ...(await identity(podId(TRUST_DOMAIN, 'demo', `client-${app}`))),
        NSM_NAME: `client-${app}`,
        NSM_CONNECT_TO: socket,
        NSM_NETWORK_SERVICES: `kernel://demo-icmp/nsm0?app=${app}`,
      },
    });
    const [c] = JSON.parse(String(r.stdout)) as Connection[];
    conns.push(c!);
    say(`  ${app} client connected to ${c!.network_service_endpoint_name} (nsc process, start to finish: ${(performance.now() - t0).toFixed(0)} ms)`);
  }
  say(connectionsTable(conns));
  say(`path of ${conns[0]!.id}: ${conns[0]!.path!.path_segments.map((s) => s.name).join(' -> ')} (each segment carries a token signed by its hop)`);

  step('proving traffic passes through the new interfaces');
  for (const [c, ns] of [[conns[0]!, pods.clientA], [conns[1]!, pods.clientB]] as const) {
    const dst = c.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!;
    const r = await execa('ip', ['netns', 'exec', ns, 'ping', '-c', '3', '-i', '0.2', '-W', '2', '-I', 'nsm0', dst], { reject: false });
    const summary = String(r.stdout).split('\n').find((l) => l.includes('packets transmitted')) ?? '';
    say(`  ${c.id} -> ${c.network_service_endpoint_name} ${dst}: ${summary}`);
    if (r.exitCode !== 0) throw new Error(`ping from ${ns} to ${dst} failed`);
  }

  step('what nsmd built in the kernel');
  for (const ns of Object.values(pods)) {
    const r = await execa('ip', ['-n', ns, '-br', 'addr', 'show']);
    const routes = await execa('ip', ['-n', ns, 'route', 'show']);
    say(`  ${ns}:\n${String(r.stdout).split('\n').filter((l) => !l.startsWith('lo')).map((l) => `    ${l}`).join('\n')}`);
    say(String(routes.stdout).split('\n').filter(Boolean).map((l) => `    route ${l}`).join('\n'));
  }

  step('closing the connections');
  for (const c of conns) await nsmctl(['close', c.id]);
  for (const ns of [pods.clientA, pods.clientB, pods.red, pods.blue]) {
    const r = await execa('ip', ['-n', ns, '-o', 'link', 'show']);
    const left = String(r.stdout).split('\n').filter((l) => l && !/: lo:/.test(l));
    say(`  ${ns}: ${left.length === 0 ? 'no interfaces left' : `LEFT: ${left.join('; ')}`}`);
  }
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    void teardown().then(() => process.exit(130));
  });
}
try {
  await main();
  await teardown();
  say('\ndemo finished');
} catch (e) {
  process.stderr.write(`demo failed: ${(e as Error).message}\n`);
  await teardown();
  process.exit(1);
}
