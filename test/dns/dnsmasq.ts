import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { waitFor } from '../../src/util/wait-for.js';
import { UdpTcpTransport } from '../../src/dns/transport.js';

export interface Dnsmasq {
  address: string;
  port: number;
  server: string;
  stop(): Promise<void>;
}

/** A port free for TCP at this instant; dnsmasq needs the same number for UDP and TCP, and it will tell us if not. */
async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, address, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts dnsmasq on its own loopback address with `lines` as zone data. `local=/test/` makes every unknown
 * name under .test an authoritative NXDOMAIN instead of a REFUSED for want of upstreams.
 */
export async function startDnsmasq(lines: string[], probeName: string): Promise<Dnsmasq> {
  const address = `127.0.${1 + Math.floor(Math.random() * 250)}.${2 + Math.floor(Math.random() * 250)}`;
  const port = await freePort(address);
  const dir = mkdtempSync(join(tmpdir(), 'nsmesh-dnsmasq-'));
  const conf = join(dir, 'dnsmasq.conf');
  writeFileSync(conf, [`port=${port}`, `listen-address=${address}`, 'bind-interfaces', 'no-resolv', 'no-hosts', 'local=/test/', ...lines, ''].join('\n'));
  const proc: ChildProcess = spawn('dnsmasq', ['--keep-in-foreground', `--conf-file=${conf}`, `--pid-file=${join(dir, 'dnsmasq.pid')}`, '--user=root'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  let exited = false;
  proc.on('exit', () => (exited = true));
  const stop = async () => {
    if (!exited) {
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await gone;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const t = new UdpTcpTransport();
    await waitFor(`dnsmasq on ${address}:${port}`, async () => {
      if (exited) throw new Error(`dnsmasq exited: ${stderr}`);
      const r = await t.query({ address, port }, { name: probeName, type: 'SRV' }, 200);
      return r.answers.length > 0;
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return { address, port, server: `${address}:${port}`, stop };
}
