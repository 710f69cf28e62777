import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { createEtcdRegistry } from '../../src/registry/etcd/index.js';
import type { NseEvent, Registry } from '../../src/registry/types.js';
import { startEtcdCluster, type EtcdCluster } from '../helpers/etcd.js';
import { endpoint, nse } from '../registry/helpers.js';
import { waitFor } from '../helpers/wait.js';
import { freshPrefix, recorder } from './util.js';

let cluster: EtcdCluster;
const opened: Registry[] = [];

beforeAll(async () => {
  cluster = await startEtcdCluster(3);
});
afterAll(async () => {
  await cluster?.cleanup();
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((r) => r.close()));
});

async function open(prefix: string): Promise<Registry> {
  const r = await createEtcdRegistry({ endpoints: cluster.endpoints, prefix, callTimeoutMs: 2_000 });
  opened.push(r);
  return r;
}

it('a failed member is skipped: calls keep succeeding and watches move to a live member', async () => {
  const prefix = freshPrefix();
  const node1 = await open(prefix);
  const node2 = await open(prefix);
  const rec = recorder<NseEvent>();
  node2.watchEndpoints(nse({}), rec.push);
  await node1.registerEndpoint(endpoint('e0', 'svc'));
  await waitFor('e0 seen', () => rec.has('e0', false));

  for (const [i, victim] of cluster.members.entries()) {
    await victim.stop();
    // Hosts are picked at random per call; enough calls that some of them first try the dead member.
    for (let j = 0; j < 10; j++) {
      await node1.registerEndpoint(endpoint(`e${i + 1}-${j}`, 'svc'));
      expect((await node2.findEndpoints(nse({ name: `e${i + 1}-${j}` }))).length).toBe(1);
    }
    await waitFor(`watch delivers while member ${i} is down`, () => rec.has(`e${i + 1}-9`, false));
    await victim.start();
  }
  expect(rec.of('e0')).toHaveLength(1);
  expect(rec.events.filter((e) => e.deleted)).toEqual([]);
});
