import { it, afterAll } from 'vitest';
import { Etcd3 } from 'etcd3';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';

let etcd: EtcdServer;
afterAll(() => etcd?.cleanup());

it('etcd3 watcher across restart and wipe', async () => {
  let t = Date.now();
  etcd = await startEtcd();
  console.log('start ms', Date.now() - t);
  const c = new Etcd3({ hosts: etcd.endpoint });
  for (let i = 0; i < 5; i++) await c.put('/p/k' + i).value('v');
  const w = await c.watch().prefix('/p/').create();
  const log: string[] = [];
  w.on('put', (kv) => log.push('put ' + kv.key.toString() + ' ' + kv.mod_revision));
  w.on('delete', (kv) => log.push('del ' + kv.key.toString()));
  w.on('disconnected', (e) => log.push('disconnected ' + e.message));
  w.on('connected', (r) => log.push('connected rev ' + r.header.revision));
  w.on('error', (e) => log.push('error ' + e.message));
  await c.put('/p/a').value('1');
  await new Promise((r) => setTimeout(r, 100));
  t = Date.now();
  await etcd.restart();
  console.log('restart ms', Date.now() - t);
  await new Promise((r) => setTimeout(r, 3000));
  try { await c.put('/p/b').value('2'); log.push('put b ok'); } catch (e) { log.push('put b failed ' + (e as Error).message); }
  await new Promise((r) => setTimeout(r, 500));
  await etcd.restart({ wipe: true });
  await new Promise((r) => setTimeout(r, 3000));
  for (let i = 0; i < 3; i++) {
    try { await c.put('/p/c' + i).value('3'); log.push('put c ok'); } catch (e) { log.push('put c failed ' + (e as Error).message); }
  }
  await new Promise((r) => setTimeout(r, 1000));
  console.log(log.join('\n'));
  await w.cancel().catch(() => {});
  c.close();
}, 30000);
