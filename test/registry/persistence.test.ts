import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createEmbeddedRegistry } from '../../src/registry/embedded/index.js';
import type { Registry } from '../../src/registry/types.js';
import { endpoint, nse, ns } from './helpers.js';

const T0 = 1_700_000_000_000;
let dir: string;
let file: string;
const open: Registry[] = [];

beforeEach(async () => {
  dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'nsmesh-registry-'));
  file = path.join(dir, 'state', 'registry.json');
});
afterEach(async () => {
  for (const r of open.splice(0)) await r.close();
  vi.restoreAllMocks();
  await fs.promises.rm(dir, { recursive: true, force: true });
});

async function start(opts: Parameters<typeof createEmbeddedRegistry>[0] = {}): Promise<Registry> {
  const r = await createEmbeddedRegistry({ stateFile: file, ...opts });
  open.push(r);
  return r;
}

function fakeLogger() {
  const warn = vi.fn();
  const noop = () => undefined;
  const logger = { warn, info: noop, debug: noop, error: vi.fn(), trace: noop, fatal: noop } as unknown as Logger;
  return { logger, warn };
}

describe('embedded registry persistence', () => {
  it('keeps live registrations across a restart', async () => {
    let t = T0;
    const first = await start({ now: () => t });
    await first.registerService(ns({ name: 'vpn', payload: 'IP' }));
    const registered = await first.registerEndpoint(endpoint('gw', 'vpn', { app: 'gw' }));
    await first.close();

    t += 10_000;
    const second = await start({ now: () => t });
    expect((await second.findServices(ns({}))).map((s) => s.name)).toEqual(['vpn']);
    const [found] = await second.findEndpoints(nse({ name: 'gw' }));
    expect(found).toEqual(registered);
  });

  it('drops endpoints that expired while it was down', async () => {
    let t = T0;
    const first = await start({ now: () => t, maxExpirationMs: 60_000 });
    await first.registerEndpoint(endpoint('old', 'svc'));
    t += 30_000;
    await first.registerEndpoint(endpoint('fresh', 'svc'));
    await first.close();

    t += 45_000;
    const second = await start({ now: () => t, maxExpirationMs: 60_000 });
    expect((await second.findEndpoints(nse({}))).map((e) => e.name)).toEqual(['fresh']);
  });

  it('writes the file with mode 0600 and leaves no temp file', async () => {
    const r = await start();
    await r.registerEndpoint(endpoint('a', 'svc'));
    await r.close();
    expect((await fs.promises.stat(file)).mode & 0o777).toBe(0o600);
    expect(await fs.promises.readdir(path.dirname(file))).toEqual(['registry.json']);
    const state = JSON.parse(await fs.promises.readFile(file, 'utf8'));
    expect(state.endpoints.map((e: { name: string }) => e.name)).toEqual(['a']);
  });

  it('coalesces a burst of registrations into few writes', async () => {
    const renames = vi.spyOn(fs.promises, 'rename');
    const r = await start({ persistDelayMs: 200 });
    await Promise.all(Array.from({ length: 1000 }, (_, i) => r.registerEndpoint(endpoint(`nse-${i}`, 'svc'))));
    await r.close();
    expect(renames.mock.calls.length).toBeGreaterThanOrEqual(1);
    expect(renames.mock.calls.length).toBeLessThanOrEqual(2);
    const state = JSON.parse(await fs.promises.readFile(file, 'utf8'));
    expect(state.endpoints).toHaveLength(1000);
  });

  it('persists in the background without waiting for close', async () => {
    const r = await start({ persistDelayMs: 5 });
    await r.registerService(ns({ name: 'bg' }));
    const deadline = Date.now() + 5_000;
    while (!fs.existsSync(file)) {
      if (Date.now() > deadline) throw new Error('state file never written');
      await new Promise((res) => setTimeout(res, 5));
    }
    const state = JSON.parse(await fs.promises.readFile(file, 'utf8'));
    expect(state.services.map((s: { name: string }) => s.name)).toEqual(['bg']);
  });

  it('moves a corrupt file aside, warns, and starts empty', async () => {
    await fs.promises.mkdir(path.dirname(file), { recursive: true });
    await fs.promises.writeFile(file, '{"version":1,"services":[', { mode: 0o600 });
    const { logger, warn } = fakeLogger();
    const r = await start({ logger });
    expect(await r.findEndpoints(nse({}))).toEqual([]);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]![1])).toMatch(/corrupt/);
    expect(await fs.promises.readFile(`${file}.corrupt`, 'utf8')).toBe('{"version":1,"services":[');
    expect(fs.existsSync(file)).toBe(false);

    // It still works and writes a fresh file.
    await r.registerEndpoint(endpoint('a', 'svc'));
    await r.close();
    expect(JSON.parse(await fs.promises.readFile(file, 'utf8')).endpoints).toHaveLength(1);
  });

  it('treats well-formed JSON of the wrong shape as corrupt', async () => {
    await fs.promises.mkdir(path.dirname(file), { recursive: true });
    await fs.promises.writeFile(file, JSON.stringify({ version: 99, endpoints: 'nope' }));
    const { logger, warn } = fakeLogger();
    const r = await start({ logger });
    expect(await r.findServices(ns({}))).toEqual([]);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(fs.existsSync(`${file}.corrupt`)).toBe(true);
  });
});
