#!/usr/bin/env node
// The interdomain demo (`npm run demo -- interdomain`): a pod in domain cluster.test consumes a service that
// lives in domain onprem.test, a plain host without Kubernetes ("mesh expansion") where nsmd, the SPIFFE
// issuer and the endpoint are ordinary processes. One DNS SRV record (_nsm._tcp.onprem.test) and one port
// (nsmd's remote API, 5001) are all the on-prem side publishes. Each domain is its own trust domain; they
// federate both ways (cluster.test fetches onprem.test's bundle from its bundle endpoint, onprem.test's
// issuer was given cluster.test's bundle), and the data path is a WireGuard tunnel straight between the two.
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import type { Connection } from '../../src/api/types.js';
import { connectionsTable } from '../../src/cli/connection-view.js';
import { buildCertificate, ExtKeyUsage, generateKeyPair, KeyUsageFlags } from '../../src/identity/cert-build.js';
import { EmbeddedIssuer } from '../../src/identity/issuer.js';
import { podId } from '../../src/identity/spiffe-id.js';
import { FatalError, waitFor } from '../../src/util/wait-for.js';
import { DemoLab, runDemo, say } from './run.js';

// Compiled to dist/examples/demo/: the project root is three levels up.
const ROOT = path.resolve(import.meta.dirname, '../../..');
const bin = (p: string) => path.join(ROOT, 'dist', p);
const lab = new DemoLab();
const { tag, dir } = lab;
const UNDERLAY = '198.18.0';
const DNS = `${UNDERLAY}.254`;
const CLUSTER_IP = `${UNDERLAY}.1`;
const ONPREM_IP = `${UNDERLAY}.2`;
let cluster: EmbeddedIssuer | undefined;

const step = (s: string) => say(`\n==> ${s}`);
const indent = (text: string) => text.trimEnd().split('\n').map((l) => `    ${l}`).join('\n');

const RECORDS = [
  `srv-host=_nsm._tcp.onprem.test,onprem-host.onprem.test,5001,10,100`,
  `host-record=onprem-host.onprem.test,${ONPREM_IP}`,
];

const netns = (n: string) => lab.netns(n);

function spawnIn(ns: string, cmd: string[], env: Record<string, string>): { p: ResultPromise; out: () => string } {
  const p = lab.spawnIn(ns, cmd, env);
  return { p, out: () => lab.tail(p) };
}

/** Waits until a process says `text` on stderr; fails at once if it exits. */
async function saysSo(what: string, s: { p: ResultPromise; out: () => string }, text: string): Promise<void> {
  await waitFor(what, () => {
    if (s.p.exitCode !== null) throw new FatalError(`${what}: the process exited:\n${s.out()}`);
    return s.out().includes(text);
  }, 20_000);
}

let tornDown = false;
async function teardown(): Promise<void> {
  if (tornDown) return;
  tornDown = true;
  step('tearing down');
  await lab.release(async () => cluster?.close());
}

/** A private web CA and a certificate for the on-prem bundle endpoint (SPIFFE federation, https_web). */
function webPki(ip: string): { caFile: string; certFile: string; keyFile: string } {
  const ca = generateKeyPair();
  const now = Date.now();
  const caCert = new X509Certificate(buildCertificate({
    subject: { organization: 'nsmesh demo', commonName: 'demo web CA' }, subjectPublicKey: ca.publicKey, signingKey: ca.privateKey,
    notBefore: new Date(now - 60_000), notAfter: new Date(now + 24 * 3600_000), isCa: true, keyUsage: KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign,
  }));
  const leaf = generateKeyPair();
  const leafCert = new X509Certificate(buildCertificate({
    subject: { organization: 'nsmesh demo', commonName: ip }, issuer: caCert, subjectPublicKey: leaf.publicKey, signingKey: ca.privateKey,
    notBefore: new Date(now - 60_000), notAfter: new Date(now + 24 * 3600_000), isCa: false,
    keyUsage: KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment, extKeyUsage: [ExtKeyUsage.serverAuth], ipSans: [ip],
  }));
  const files = { caFile: path.join(dir, 'web-ca.pem'), certFile: path.join(dir, 'bundle-endpoint.crt'), keyFile: path.join(dir, 'bundle-endpoint.key') };
  fs.writeFileSync(files.caFile, caCert.toString());
  fs.writeFileSync(files.certFile, leafCert.toString());
  fs.writeFileSync(files.keyFile, leaf.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return files;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo builds network namespaces: run it as root');
  step(`building an underlay ${UNDERLAY}.0/24 (namespaces nsmdemo-${tag}-*): a cluster node, an on-prem host, and DNS`);
  const ul = await netns('underlay');
  await execa('ip', ['-n', ul, 'link', 'add', 'br0', 'type', 'bridge']);
  await execa('ip', ['-n', ul, 'addr', 'add', `${DNS}/24`, 'dev', 'br0']);
  await execa('ip', ['-n', ul, 'link', 'set', 'br0', 'up']);
  const hosts: Record<string, string> = {};
  for (const [name, ip] of [['cluster-node', CLUSTER_IP], ['onprem-host', ONPREM_IP]] as const) {
    const ns = await netns(name);
    await execa('ip', ['-n', ul, 'link', 'add', name.slice(0, 8), 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await execa('ip', ['-n', ul, 'link', 'set', name.slice(0, 8), 'master', 'br0', 'up']);
    await execa('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await execa('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    hosts[name] = ns;
  }
  const clusterNs = hosts['cluster-node']!;
  const onpremNs = hosts['onprem-host']!;
  const conf = path.join(dir, 'dnsmasq.conf');
  fs.writeFileSync(conf, ['port=53', `listen-address=${DNS}`, 'bind-interfaces', 'no-resolv', 'no-hosts', 'local=/test/', 'local-ttl=60', ...RECORDS, ''].join('\n'));
  await saysSo('dnsmasq', spawnIn(ul, ['dnsmasq', '--keep-in-foreground', `--conf-file=${conf}`, `--pid-file=${path.join(dir, 'dnsmasq.pid')}`, '--user=root', '--log-facility=-'], {}), 'started');
  say(`  dnsmasq at ${DNS}:53 serves the one record onprem.test publishes (and its address):`);
  say(indent(RECORDS.join('\n')));

  step('identity: one trust domain per domain, federated both ways');
  cluster = await EmbeddedIssuer.start({ trustDomain: 'cluster.test', stateDir: path.join(dir, 'cluster-ca') });
  const clusterBundle = path.join(dir, 'cluster-bundle.pem');
  fs.writeFileSync(clusterBundle, cluster.bundle().map((c) => c.toString()).join(''));
  const pki = webPki(ONPREM_IP);
  const onpremIds = ['spiffe://onprem.test/nsmesh/nsmd/onprem-host', 'spiffe://onprem.test/nsmesh/admin/nsmctl', 'spiffe://onprem.test/host/legacy-icmp'];
  const sock = (id: string) => path.join(dir, 'spiffe', `${id.split('/').slice(2).join('-')}.sock`);
  fs.mkdirSync(path.join(dir, 'spiffe'), { recursive: true, mode: 0o700 });
  const issuer = spawnIn(onpremNs, ['node', bin('src/cli/nsm-issuer.js')], {
    NSM_TRUST_DOMAIN: 'onprem.test',
    NSM_ISSUER_STATE_DIR: path.join(dir, 'onprem-ca'),
    NSM_WORKLOADS: onpremIds.map((id) => `${id}=${sock(id)}`).join(','),
    NSM_BUNDLE_ENDPOINT: `${ONPREM_IP}:8443`,
    NSM_BUNDLE_ENDPOINT_CERT: pki.certFile,
    NSM_BUNDLE_ENDPOINT_KEY: pki.keyFile,
    NSM_FEDERATES_WITH: `cluster.test=${clusterBundle}`,
    NSM_LOG_LEVEL: 'INFO',
  });
  await saysSo('nsm-issuer on the on-prem host', issuer, 'serving the trust bundle for federation');
  say(`  cluster.test: embedded issuer (in production: SPIRE); onprem.test: nsm-issuer on the host, bundle endpoint https://${ONPREM_IP}:8443/`);
  say('  cluster.test nsmd fetches onprem.test\'s bundle from that endpoint; onprem.test\'s issuer hands cluster.test\'s bundle to its workloads');

  step('starting nsmd on the on-prem host (a plain process, embedded registry) and its legacy endpoint (a process too)');
  const onpremSock = `unix://${path.join(dir, 'onprem', 'nsm.io.sock')}`;
  const onpremNsmd = spawnIn(onpremNs, ['node', bin('src/cli/nsmd.js')], {
    SPIFFE_ENDPOINT_SOCKET: `unix://${sock(onpremIds[0]!)}`,
    NSM_NAME: 'nsmd-onprem-host',
    NODE_NAME: 'onprem-host',
    NSM_LISTEN_ON: onpremSock,
    NSM_REMOTE_LISTEN_ON: `tcp://${ONPREM_IP}:5001`,
    NSM_STATE_DIR: path.join(dir, 'onprem', 'state'),
    NSM_FEDERATES_WITH: 'cluster.test',
    NSM_CLEANUP_ON_EXIT: 'true',
    NSM_LOG_LEVEL: 'WARN',
  });
  const onpremCtl = (args: string[]) => execa('node', [bin('src/cli/nsmctl.js'), ...args], { env: { SPIFFE_ENDPOINT_SOCKET: `unix://${sock(onpremIds[1]!)}`, NSM_CONNECT_TO: onpremSock }, reject: false });
  await waitFor('nsmd on the on-prem host', async () => {
    if (onpremNsmd.p.exitCode !== null) throw new FatalError(`nsmd exited:\n${onpremNsmd.out()}`);
    return (await onpremCtl(['get', 'services'])).exitCode === 0;
  }, 20_000);
  spawnIn(onpremNs, ['node', bin('examples/icmp-responder/main.js')], {
    SPIFFE_ENDPOINT_SOCKET: `unix://${sock(onpremIds[2]!)}`,
    NSM_NAME: 'legacy-icmp',
    NSM_CONNECT_TO: onpremSock,
    NSM_SERVICE_NAMES: 'icmp',
    NSM_CIDR_PREFIX: '169.254.77.0/24',
    NSM_LOG_LEVEL: 'WARN',
  });
  await waitFor('the legacy endpoint to register', async () => (await onpremCtl(['get', 'endpoints', '--output', 'json'])).stdout.includes('legacy-icmp'), 20_000);
  say(indent((await onpremCtl(['get', 'endpoints'])).stdout));

  step('starting nsmd on the cluster node: DNS for service@domain, federation with onprem.test');
  const clusterSock = `unix://${path.join(dir, 'cluster', 'nsm.io.sock')}`;
  const clusterNsmd = spawnIn(clusterNs, ['node', bin('src/cli/nsmd.js')], {
    SPIFFE_ENDPOINT_SOCKET: await cluster.addWorkload('spiffe://cluster.test/nsmesh/nsmd/cluster-node', sock('spiffe://cluster.test/nsmesh/nsmd/cluster-node')),
    NSM_NAME: 'nsmd-cluster-node',
    NODE_NAME: 'cluster-node',
    NSM_LISTEN_ON: clusterSock,
    NSM_REMOTE_LISTEN_ON: `tcp://${CLUSTER_IP}:5001`,
    NSM_STATE_DIR: path.join(dir, 'cluster', 'state'),
    NSM_DNS_SERVERS: `${DNS}:53`,
    NSM_FEDERATES_WITH: `onprem.test=https://${ONPREM_IP}:8443/`,
    NODE_EXTRA_CA_CERTS: pki.caFile,
    NSM_CLEANUP_ON_EXIT: 'true',
    NSM_LOG_LEVEL: 'WARN',
  });
  say(`  NSM_DNS_SERVERS=${DNS}:53 NSM_FEDERATES_WITH=onprem.test=https://${ONPREM_IP}:8443/ (NSM_INTERDOMAIN_MECHANISM_PRIORITY defaults to WIREGUARD)`);
  const adminEnv = { SPIFFE_ENDPOINT_SOCKET: await cluster.addWorkload('spiffe://cluster.test/nsmesh/admin/nsmctl', sock('spiffe://cluster.test/nsmesh/admin/nsmctl')), NSM_CONNECT_TO: clusterSock };
  const clusterCtl = (args: string[]) => execa('node', [bin('src/cli/nsmctl.js'), ...args], { env: adminEnv, reject: false });
  await waitFor('nsmd on the cluster node', async () => {
    if (clusterNsmd.p.exitCode !== null) throw new FatalError(`nsmd exited:\n${clusterNsmd.out()}`);
    return (await clusterCtl(['get', 'services'])).exitCode === 0;
  }, 20_000);

  step('from the cluster, asking onprem.test\'s registry through the local nsmd (nsmctl get endpoints icmp@onprem.test)');
  say(indent((await clusterCtl(['get', 'endpoints', 'icmp@onprem.test'])).stdout));

  step('a client pod in cluster.test requests kernel://icmp@onprem.test/nsm0');
  const pod = await netns('client-pod');
  const t0 = performance.now();
  const r = await execa('ip', ['netns', 'exec', pod, 'node', bin('src/cli/nsc.js'), '--output', 'json'], {
    env: {
      SPIFFE_ENDPOINT_SOCKET: await cluster.addWorkload(podId('cluster.test', 'demo', 'client'), sock(podId('cluster.test', 'demo', 'client'))),
      NSM_NAME: 'client',
      NSM_CONNECT_TO: clusterSock,
      NSM_NETWORK_SERVICES: 'kernel://icmp@onprem.test/nsm0',
    },
    reject: false,
  });
  if (r.exitCode !== 0) throw new Error(`nsc failed: ${String(r.stderr).trim()}`);
  const [conn] = JSON.parse(String(r.stdout)) as Connection[];
  say(`  connected in ${(performance.now() - t0).toFixed(0)} ms (nsc process start to finish) to ${conn!.network_service_endpoint_name}`);
  say(`    path: ${conn!.path!.path_segments.map((s) => s.name).join(' -> ')}`);
  say(connectionsTable([conn!]));
  const dst = conn!.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!;
  const ping = await execa('ip', ['netns', 'exec', pod, 'ping', '-c', '3', '-i', '0.2', '-W', '2', '-I', 'nsm0', dst], { reject: false });
  say(`  ${String(ping.stdout).split('\n').find((l) => l.includes('packets transmitted')) ?? ''} to ${dst} (the legacy endpoint on the on-prem host)`);
  if (ping.exitCode !== 0) throw new Error(`ping from the client pod to ${dst} failed`);
  say(`  nsm0 in the client pod: ${String((await execa('ip', ['-n', pod, '-d', '-br', 'link', 'show', 'nsm0'])).stdout).trim()}`);
  // wireguard-go's control sockets are shared by every namespace of this machine: both ends are listed.
  const wg = await execa('ip', ['netns', 'exec', clusterNs, 'wg', 'show', 'all', 'endpoints'], { reject: false });
  const toOnprem = String(wg.stdout).split('\n').map((l) => l.trim().split(/\s+/).pop() ?? '').find((e) => e.startsWith(`${ONPREM_IP}:`));
  say(`  the cluster node's WireGuard end sends to ${toOnprem ?? '(not found)'}: straight to the on-prem host`);

  step('closing the connection');
  await clusterCtl(['close', conn!.id]);
  const left = String((await execa('ip', ['-n', pod, '-o', 'link', 'show'])).stdout).split('\n').filter((l) => l && !/: lo:/.test(l));
  say(`  client pod: ${left.length === 0 ? 'no interfaces left' : `LEFT: ${left.join('; ')}`}`);
}

await runDemo(main, teardown, 'interdomain demo finished');
