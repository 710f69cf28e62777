/**
 * A real nsmd with NSM_REGISTRY_URL=k8s://nsm-system: endpoints register through it into NetworkServiceEndpoint
 * objects, the NetworkService it selects with comes from an object applied with kubectl, and clients get connected.
 *
 * There is no Kubernetes API server on these machines, so the API is FakeApiServer (./fake-api-server.ts: HTTPS,
 * bearer token, the API server's custom-object and watch semantics) and nsmd reaches it through a kubeconfig file
 * (NSM_KUBECONFIG), exactly as it would reach a cluster from outside. Everything else is real: nsmd, the endpoints
 * and the client are processes from dist/, in their own network namespaces, with SPIFFE identities.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Connection } from '../../src/api/types.js';
import { ids } from '../helpers/identity.js';
import { runNsc, startIcmpResponder, startNsmd, waitFor, type EndpointProc, type NsmdProc } from '../helpers/mesh.js';
import { cleanupNetns, createNetns, ping, tag, type Netns } from '../helpers/netns.js';
import { FakeApiServer } from './fake-api-server.js';

const NSES = 'networkserviceendpoints';
const service = `${tag}-k8s`;
let api: FakeApiServer;
let nsmd: NsmdProc;
let blue: EndpointProc;
const pods: Record<string, Netns> = {};

beforeAll(async () => {
  api = await FakeApiServer.start();
  // What `kubectl apply -f` of a v0.2-style manifest leaves in the cluster.
  api.apply({
    apiVersion: 'networkservicemesh.io/v1',
    kind: 'NetworkService',
    metadata: { name: service },
    spec: {
      payload: 'IP',
      matches: [
        { sourceSelector: { app: 'blue' }, route: [{ destinationSelector: { color: 'blue' } }] },
        { route: [{ destinationSelector: { color: 'green' } }] },
      ],
    },
  });
  // A blue endpoint of a node that died long ago: lapsed, so it must never be chosen (its socket does not exist).
  api.apply({
    apiVersion: 'networkservicemesh.io/v1',
    kind: 'NetworkServiceEndpoint',
    metadata: { name: `${tag}-lapsed` },
    spec: {
      network_service_names: [service],
      network_service_labels: { [service]: { labels: { color: 'blue' } } },
      url: 'unix:///nonexistent/lapsed.sock',
      expiration_time: { seconds: Math.floor(Date.now() / 1000) - 600, nanos: 0 },
    },
  });
  nsmd = await startNsmd({ env: { NSM_REGISTRY_URL: 'k8s://nsm-system', NSM_KUBECONFIG: api.kubeconfigPath } });
  for (const p of ['blue', 'green', 'c1', 'c2']) pods[p] = await createNetns(p);
  blue = await startIcmpResponder(pods.blue!, { name: `${tag}-blue`, connectTo: nsmd.url, services: [service], labels: { color: 'blue' }, cidr: '169.254.40.0/24' });
  await startIcmpResponder(pods.green!, { name: `${tag}-green`, connectTo: nsmd.url, services: [service], labels: { color: 'green' }, cidr: '169.254.41.0/24' });
});

afterAll(async () => {
  await nsmd?.stop();
  await cleanupNetns();
  await api?.close();
});

describe('nsmd on the Kubernetes registry', () => {
  it('stores registrations as NetworkServiceEndpoint objects', () => {
    const obj = api.object(NSES, `${tag}-blue`)!;
    expect(obj.apiVersion).toBe('networkservicemesh.io/v1');
    expect(obj.spec).toMatchObject({
      name: `${tag}-blue`,
      network_service_names: [service],
      network_service_labels: { [service]: { labels: { color: 'blue' } } },
      path_ids: [ids.pod(`${tag}-blue`)],
    });
    const spec = obj.spec as { url: string; expiration_time: { seconds: number } };
    expect(spec.url).toMatch(/^unix:\/\//);
    // nsmd's default NSM_REGISTRY_EXPIRATION (1 min) caps it.
    expect(spec.expiration_time.seconds * 1000).toBeLessThanOrEqual(Date.now() + 61_000);
  });

  it('selects by the applied NetworkService and connects clients', async () => {
    const r1 = await runNsc(pods.c1!, { name: `${tag}-c1`, connectTo: nsmd.url, services: `kernel://${service}/${tag}a?app=blue` });
    expect(r1.stderr).toBe('');
    expect(r1.exitCode).toBe(0);
    const c1 = r1.json[0] as Connection;
    expect(c1.network_service_endpoint_name).toBe(`${tag}-blue`);
    expect(await ping(pods.c1!, c1.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!)).toBe(true);

    const r2 = await runNsc(pods.c2!, { name: `${tag}-c2`, connectTo: nsmd.url, services: `kernel://${service}/${tag}b` });
    expect(r2.exitCode).toBe(0);
    const c2 = r2.json[0] as Connection;
    expect(c2.network_service_endpoint_name).toBe(`${tag}-green`);
    expect(await ping(pods.c2!, c2.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!)).toBe(true);
  });

  it('deletes the lapsed object and, when an endpoint stops, its object', async () => {
    await waitFor('lapsed object cleaned up', () => api.object(NSES, `${tag}-lapsed`) === undefined, 30_000);
    await blue.stop();
    await waitFor('blue endpoint object deleted', () => api.object(NSES, `${tag}-blue`) === undefined);
    expect(api.object(NSES, `${tag}-green`)).toBeDefined();
  });
});
