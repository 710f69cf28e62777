/**
 * nsmesh's own gRPC server and unary client against gRPC's C core (Debian python3-grpcio, installed by
 * scripts/install-deps.sh): an implementation that shares no code with ours or with grpc-js, standing in for
 * upstream NSM's Go peers (Go is not on this machine). Plaintext on a unix socket: the C core checks a server
 * certificate's DNS name, which SPIFFE SVIDs (URI SANs only) do not carry, so mutual TLS is covered by the
 * grpc-js tests instead.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { messageCodec } from '../../src/api/codec.js';
import { addService, ApiClient, startServer, unary, type RunningServer } from '../../src/api/grpc.js';
import type { Connection, NetworkServiceRequest } from '../../src/api/types.js';
import { notFound } from '../../src/util/errors.js';
import { waitFor } from '../helpers/wait.js';

const PYTHON = '/usr/bin/python3';
const PEER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'grpc_core_peer.py');
const connCodec = messageCodec('connection.Connection');
const reqCodec = messageCodec('networkservice.NetworkServiceRequest');
const eventCodec = messageCodec('connection.ConnectionEvent');

const connection = connCodec.normalize({
  id: 'interop-1',
  network_service: 'secure-intranet-connectivity',
  mechanism: { cls: 'LOCAL', type: 'KERNEL', parameters: { name: 'nsm0', inodeURL: 'inode://4/4026532000' } },
  context: { ip_context: { src_ip_addrs: ['169.254.0.1/32'], dst_ip_addrs: ['169.254.0.2/32'] } },
  labels: { app: 'interop' },
  path: { index: 0, path_segments: [{ name: 'client', id: 'interop-1', token: 't'.repeat(700) }] },
});
const request: NetworkServiceRequest = reqCodec.normalize({ connection, mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: {} }] });

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsm-interop-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('gRPC C core client → nsmesh server', () => {
  let server: RunningServer;
  const streamsCancelled: string[] = [];

  beforeAll(async () => {
    server = await startServer(`unix://${path.join(dir, 'ours.sock')}`, (s) => {
      addService(s, 'networkservice.NetworkService', {
        Request: unary<NetworkServiceRequest, Connection>(async (req, call) => {
          const delay = Number(call.metadata.get('x-delay-ms')[0] ?? 0);
          if (delay) await new Promise((r) => setTimeout(r, delay));
          // What arrived as metadata goes back in the answer, so the peer can check it crossed.
          const token = String(call.metadata.get('nsm-client-token')[0] ?? '');
          const bin = (call.metadata.get('x-bin')[0] as Buffer | undefined)?.toString('hex') ?? '';
          const conn = req.connection!;
          return { ...conn, labels: { ...conn.labels, token, bin } };
        }),
        Close: unary<Connection, object>(async (conn) => {
          throw notFound(`no connection "${conn.id}" here ✗`);
        }),
      });
      addService(s, 'connection.MonitorConnection', {
        MonitorConnections: (call: grpc.ServerWritableStream<unknown, unknown>) => {
          for (let i = 0; i < 3; i++) call.write({ type: i === 0 ? 'INITIAL_STATE_TRANSFER' : 'UPDATE', connections: { [`c${i}`]: { ...connection, id: `c${i}` } } });
          call.on('cancelled', () => streamsCancelled.push('monitor'));
        },
      });
    });
  });
  afterAll(() => server?.close());

  it('answers unary calls, statuses, deadlines, unknown methods and a server stream as the C core expects', async () => {
    const r = await execa(PYTHON, [PEER, 'client', path.join(dir, 'ours.sock'), reqCodec.encode(request).toString('hex'), connCodec.encode(connection).toString('hex')], { timeout: 30_000 });
    const out = JSON.parse(r.stdout) as { request: string; close: { code: string; details: string }; deadline: string; unknown: string; events: string[] };

    const answered = connCodec.decode(Buffer.from(out.request, 'hex'));
    expect(answered.id).toBe('interop-1');
    expect(answered.labels).toEqual({ app: 'interop', token: 'tok-1', bin: '0001' });
    expect(answered.path!.path_segments[0]!.token).toBe('t'.repeat(700));
    // grpc-message is percent-encoded by us and decoded by the C core.
    expect(out.close).toEqual({ code: 'NOT_FOUND', details: 'no connection "interop-1" here ✗' });
    expect(out.deadline).toBe('DEADLINE_EXCEEDED');
    expect(out.unknown).toBe('UNIMPLEMENTED');
    const events = out.events.map((h) => eventCodec.decode(Buffer.from(h, 'hex')));
    expect(events.map((e) => [e.type, Object.keys(e.connections)])).toEqual([
      ['INITIAL_STATE_TRANSFER', ['c0']],
      ['UPDATE', ['c1']],
      ['UPDATE', ['c2']],
    ]);
    // The C core's cancel reached the handler as a cancelled call.
    await waitFor('the monitor stream to be cancelled', async () => streamsCancelled.includes('monitor'), 5000);
  });
});

describe('nsmesh unary client → gRPC C core server', () => {
  let peer: ChildProcess;
  let client: ApiClient<'networkservice.NetworkService'>;

  beforeAll(async () => {
    const sock = path.join(dir, 'core.sock');
    peer = spawn(PYTHON, [PEER, 'server', sock, connCodec.encode(connection).toString('hex')], { stdio: ['pipe', 'pipe', 'inherit'] });
    const ready = new Promise<void>((resolve, reject) => {
      readline.createInterface({ input: peer.stdout! }).once('line', (l) => (l === 'ready' ? resolve() : reject(new Error(l))));
      peer.once('exit', (code) => reject(new Error(`python gRPC peer exited with ${code}`)));
    });
    await Promise.race([ready, new Promise((_, reject) => setTimeout(() => reject(new Error('python gRPC peer did not start in 15 s')), 15_000))]);
    client = new ApiClient('networkservice.NetworkService', `unix://${sock}`);
  });
  afterAll(async () => {
    client?.close();
    peer?.stdin?.end();
    if (peer && peer.exitCode === null) await new Promise((r) => peer.once('exit', r));
  });

  it('gets answers, statuses with their details and metadata across, and gives up at its deadline', async () => {
    expect(await client.unary('Request', request, { timeoutMs: 5000 })).toEqual(connection);

    const md = new grpc.Metadata();
    md.set('nsm-client-token', 'tok-9');
    const err = await client.unary('Close', connection, { timeoutMs: 5000, metadata: md }).catch((e: grpc.ServiceError) => e);
    expect(err).toMatchObject({ code: grpc.status.NOT_FOUND, details: `unknown connection ✗ token=tok-9 bytes=${connCodec.encode(connection).length}` });

    const slow = new grpc.Metadata();
    slow.set('x-delay-ms', '2000');
    const late = await client.unary('Request', request, { timeoutMs: 200, metadata: slow }).catch((e: grpc.ServiceError) => e);
    expect(late).toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
    // The session survives all of it.
    expect(await client.unary('Request', request, { timeoutMs: 5000 })).toEqual(connection);
    expect(client.unarySessionsOpened()).toBe(1);
  });
});
