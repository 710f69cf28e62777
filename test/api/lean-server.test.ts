import http2 from 'node:http2';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/api/grpc.js';
import { encodeGrpcMessage, parseGrpcTimeout } from '../../src/api/lean-server.js';
import { waitFor } from '../helpers/wait.js';

// A JSON service, so that these tests exercise the server and nothing of the API's codec.
const json = { serialize: (v: unknown) => Buffer.from(JSON.stringify(v)), deserialize: (b: Buffer) => JSON.parse(b.toString()) as unknown };
const method = (name: string, responseStream: boolean) => ({
  path: `/test.Lean/${name}`, requestStream: false, responseStream,
  requestSerialize: json.serialize, requestDeserialize: json.deserialize, responseSerialize: json.serialize, responseDeserialize: json.deserialize,
});
const service: grpc.ServiceDefinition = { Echo: method('Echo', false), Slow: method('Slow', false), Fail: method('Fail', false), Ticks: method('Ticks', true), Absent: method('Absent', false) };
const LeanClient = grpc.makeGenericClientConstructor(service, 'Lean');

type Reply = { code?: number; details?: string; metadata?: grpc.Metadata; [k: string]: unknown };

describe('lean gRPC server (grpc-js clients)', () => {
  let dir: string;
  let server: RunningServer;
  let client: grpc.Client;
  const seen: string[] = [];
  const ticks = new Set<grpc.ServerWritableStream<unknown, unknown>>();

  const call = (name: string, req: unknown, md = new grpc.Metadata(), timeoutMs = 5000) =>
    new Promise<Reply>((resolve) =>
      (client as unknown as Record<string, (...a: unknown[]) => void>)[name]!(req, md, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: Reply) =>
        resolve(err ? { code: err.code, details: err.details, metadata: err.metadata } : res),
      ),
    );

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsmlean-'));
    seen.length = 0;
    server = await startServer(`unix://${path.join(dir, 'api.sock')}`, (s) =>
      s.addService(service, {
        Echo: (c: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) =>
          cb(null, { request: c.request, bin: c.metadata.get('x-bin')[0]?.toString('hex'), text: c.metadata.get('x-text')[0], deadline: c.getDeadline() }),
        Slow: (c: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
          seen.push('slow started');
          c.on('cancelled', () => seen.push(`cancelled:${String(c.cancelled)}`));
          setTimeout(() => cb(null, {}), (c.request as { ms: number }).ms);
        },
        Fail: (_c: unknown, cb: grpc.sendUnaryData<unknown>) => {
          const md = new grpc.Metadata();
          md.set('why-bin', Buffer.from([1, 2, 3]));
          cb({ code: grpc.status.NOT_FOUND, details: 'no "ö" here: 100% gone\nsecond line', metadata: md });
        },
        Ticks: (c: grpc.ServerWritableStream<{ mode?: string }, unknown>) => {
          if (c.request.mode === 'destroy') return void c.destroy(Object.assign(new Error('x'), { code: grpc.status.UNAVAILABLE, details: 'went away' }));
          if (c.request.mode === 'emit') return void c.emit('error', { code: grpc.status.INVALID_ARGUMENT, details: 'bad selector' });
          if (c.request.mode === 'three') {
            for (let n = 0; n < 3; n++) c.write({ n });
            return void c.end();
          }
          ticks.add(c);
          c.on('cancelled', () => seen.push('stream cancelled'));
          c.on('close', () => ticks.delete(c));
        },
      }),
    );
    client = new LeanClient(`unix://${path.join(dir, 'api.sock')}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  });

  afterEach(async () => {
    client.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers a unary call with its request, metadata (incl. -bin) and deadline', async () => {
    const md = new grpc.Metadata();
    md.set('x-bin', Buffer.from([0, 255, 7]));
    md.set('x-text', 'hello');
    const before = Date.now();
    const res = await call('Echo', { a: [1, 'b'] }, md, 3000);
    expect(res).toMatchObject({ request: { a: [1, 'b'] }, bin: '00ff07', text: 'hello' });
    expect(res.deadline as number).toBeGreaterThan(before + 2500);
    expect(res.deadline as number).toBeLessThanOrEqual(Date.now() + 3000);
  });

  it('sends a handler error as status, percent-encoded message and trailing metadata', async () => {
    const res = await call('Fail', {});
    expect(res.code).toBe(grpc.status.NOT_FOUND);
    expect(res.details).toBe('no "ö" here: 100% gone\nsecond line');
    expect(res.metadata?.get('why-bin')[0]).toEqual(Buffer.from([1, 2, 3]));
    expect(encodeGrpcMessage('a%b ö')).toBe('a%25b %C3%B6');
  });

  it('answers an unknown method UNIMPLEMENTED', async () => {
    expect((await call('Absent', {})).code).toBe(grpc.status.UNIMPLEMENTED);
  });

  it('streams messages then OK; destroy(err) and emit("error") end a stream with their status', async () => {
    const collect = (req: unknown) =>
      new Promise<{ got: unknown[]; code: number; details: string }>((resolve) => {
        const got: unknown[] = [];
        const s = (client as unknown as Record<string, (r: unknown) => grpc.ClientReadableStream<unknown>>).Ticks!(req);
        s.on('data', (d) => got.push(d));
        s.on('error', (e: grpc.ServiceError) => resolve({ got, code: e.code, details: e.details }));
        s.on('status', (st: grpc.StatusObject) => st.code === grpc.status.OK && resolve({ got, code: st.code, details: st.details }));
      });
    expect(await collect({ mode: 'three' })).toMatchObject({ got: [{ n: 0 }, { n: 1 }, { n: 2 }], code: grpc.status.OK });
    expect(await collect({ mode: 'destroy' })).toEqual({ got: [], code: grpc.status.UNAVAILABLE, details: 'went away' });
    expect(await collect({ mode: 'emit' })).toEqual({ got: [], code: grpc.status.INVALID_ARGUMENT, details: 'bad selector' });
  });

  it("a client's cancel reaches a stream handler as 'cancelled' and 'close'", async () => {
    const s = (client as unknown as Record<string, (r: unknown) => grpc.ClientReadableStream<unknown>>).Ticks!({});
    const got: unknown[] = [];
    s.on('data', (d) => got.push(d));
    s.on('error', () => {});
    await waitFor('the stream to reach the server', () => ticks.size === 1);
    [...ticks][0]!.write({ n: 1 });
    await waitFor('the first message', () => got.length === 1);
    s.cancel();
    await waitFor('the handler to see the cancel', () => seen.includes('stream cancelled') && ticks.size === 0);
  });

  it('enforces grpc-timeout on the server: DEADLINE_EXCEEDED, and the handler sees cancelled', async () => {
    expect(parseGrpcTimeout('250m')).toBe(250);
    expect(parseGrpcTimeout('3S')).toBe(3000);
    expect(parseGrpcTimeout('123456789m')).toBeUndefined();
    // a raw HTTP/2 client, so that only the server can end the call
    const session = http2.connect('http://localhost', { createConnection: () => net.connect(path.join(dir, 'api.sock')) });
    session.on('error', () => {});
    try {
      const req = session.request({ ':method': 'POST', ':path': '/test.Lean/Slow', 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '100m' });
      const body = Buffer.from(JSON.stringify({ ms: 3000 }));
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(body.length, 1);
      req.end(Buffer.concat([prefix, body]));
      const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        req.on('response', (h) => h['grpc-status'] !== undefined && resolve(h));
        req.on('trailers', resolve);
        req.on('error', reject);
        req.resume();
      });
      expect(trailers['grpc-status']).toBe(String(grpc.status.DEADLINE_EXCEEDED));
      await waitFor('the handler to be cancelled', () => seen.includes('cancelled:true'));
    } finally {
      session.destroy();
    }
  });

  it('serves 1000 concurrent calls on one connection', async () => {
    const res = await Promise.all(Array.from({ length: 1000 }, (_, i) => call('Echo', { i }, new grpc.Metadata(), 20_000)));
    expect(res.every((r, i) => (r.request as { i: number }).i === i)).toBe(true);
  });

  it('close() lets a unary call finish, cuts an endless stream after 1 s, and removes the socket', async () => {
    const s = (client as unknown as Record<string, (r: unknown) => grpc.ClientReadableStream<unknown>>).Ticks!({});
    s.on('error', () => {});
    s.on('data', () => {});
    await waitFor('the stream to reach the server', () => ticks.size === 1);
    const slow = call('Slow', { ms: 300 });
    await waitFor('the slow call to start', () => seen.includes('slow started'));
    const t0 = Date.now();
    await server.close();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(await slow).toEqual({});
    expect(ticks.size).toBe(0);
    expect(fs.existsSync(path.join(dir, 'api.sock'))).toBe(false);
  });

  it('refuses a unix socket another process serves and replaces a stale one', async () => {
    await expect(startServer(`unix://${path.join(dir, 'api.sock')}`, () => {})).rejects.toThrow(/served by another process/);
    const stale = path.join(dir, 'stale.sock');
    const holder = net.createServer().listen(stale);
    await new Promise((r) => holder.once('listening', r));
    // a process that died leaves its socket file behind, with nobody listening on it
    await new Promise((r) => holder.close(r));
    fs.writeFileSync(stale, '');
    const again = await startServer(`unix://${stale}`, () => {});
    await again.close();
  });
});
