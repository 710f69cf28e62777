import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, expect, it } from 'vitest';
import { connectX509Source } from '../../src/identity/workload-client.js';
import { waitFor } from '../helpers/wait.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsmiss-'));
const bin = path.resolve(import.meta.dirname, '../../dist/src/cli/nsm-issuer.js');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

it('nsm-issuer serves each configured identity on its own Workload API socket and writes its bundle', async () => {
  const id = 'spiffe://lab.test/ns/default/pod/a';
  const socket = path.join(dir, 'a.sock');
  const proc = execa('node', [bin, '--trust-domain', 'lab.test', '--state-dir', path.join(dir, 'ca'), '--bundle-out', path.join(dir, 'bundle.pem'), '--workloads', `${id}=${socket}`], { reject: false });
  try {
    await waitFor('the workload socket', () => fs.existsSync(socket), 10_000);
    const source = await connectX509Source(`unix://${socket}`, { timeoutMs: 5000 });
    expect(source.svid().spiffeId).toBe(id);
    expect([...source.bundles().keys()]).toEqual(['lab.test']);
    source.close();
    expect(fs.readFileSync(path.join(dir, 'bundle.pem'), 'utf8')).toMatch(/BEGIN CERTIFICATE/);
    expect(fs.statSync(path.join(dir, 'ca', 'ca.key')).mode & 0o777).toBe(0o600);
  } finally {
    proc.kill('SIGTERM');
    await proc;
  }
});

it('refuses to start without workloads, saying what to set', async () => {
  const r = await execa('node', [bin], { reject: false });
  expect(r.exitCode).toBe(2);
  expect(r.stderr).toMatch(/NSM_WORKLOADS/);
});
