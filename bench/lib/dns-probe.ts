/**
 * Times SRV resolution of an NSM domain from inside a namespace (the bench process in the root namespace
 * cannot reach a DNS server on the underlay): `node dns-probe.js SERVER DOMAIN N` prints one JSON line with
 * N cold resolutions (a fresh resolver each, so every one goes to the server) and N warm ones (one resolver,
 * answers from its cache), in milliseconds.
 */
import { performance } from 'node:perf_hooks';
import { SrvResolver } from '../../src/dns/index.js';

const [server, domain, countText] = process.argv.slice(2);
const n = Number(countText);
if (!server || !domain || !Number.isInteger(n) || n < 1) {
  process.stderr.write('usage: dns-probe SERVER DOMAIN N\n');
  process.exit(2);
}

const cold: number[] = [];
for (let i = 0; i < n; i++) {
  const r = new SrvResolver({ servers: [server], cache: false });
  const t0 = performance.now();
  await r.resolveDomain(domain);
  cold.push(performance.now() - t0);
}
const warmResolver = new SrvResolver({ servers: [server] });
await warmResolver.resolveDomain(domain);
const warm: number[] = [];
for (let i = 0; i < n; i++) {
  const t0 = performance.now();
  await warmResolver.resolveDomain(domain);
  warm.push(performance.now() - t0);
}
process.stdout.write(`${JSON.stringify({ cold, warm })}\n`);
