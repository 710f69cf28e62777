/**
 * Trust nobody by default: every refusal below happens over real mutual TLS on a real unix socket, leaves
 * nothing plumbed in the client's namespace, and says why.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import { ApiClient } from '../../src/api/grpc.js';
import type { DeepPartial } from '../../src/api/codec.js';
import type { Connection, NetworkServiceRequest } from '../../src/api/types.js';
import { inodeUrlOf } from '../../src/dataplane/netns.js';
import { createNetlinkDataplane } from '../../src/dataplane/veth/index.js';
import type { Dataplane } from '../../src/dataplane/types.js';
import { signOwnSegment } from '../../src/identity/outgoing.js';
import { setTokenMetadata } from '../../src/identity/path-tokens.js';
import { StaticX509Source } from '../../src/identity/source.js';
import { signToken } from '../../src/identity/token.js';
import { sourceTransport, type Transport } from '../../src/identity/transport.js';
import { createCa } from '../../src/identity/x509.js';
import { Metadata } from '@grpc/grpc-js';
import { cleanupNetns, createNetns, ping, tag, type Netns } from '../helpers/netns.js';
import { ids, testCa, testTransport, TRUST_DOMAIN } from '../helpers/identity.js';
import { nsmctl, startIcmpResponder, startNsmd, type NsmdProc } from '../helpers/mesh.js';
import { leafSignedBy, selfSignedLeaf, svidFrom } from '../identity/helpers.js';

let nsmd: NsmdProc;
let dp: Dataplane;
let client: Netns;
let nsePod: Netns;
let me: Transport;
let ns: ApiClient<'networkservice.NetworkService'>;
const service = `${tag}-sec`;

const POLICY = `
rules:
  - action: request
    effect: deny
    spiffeIds: ["${ids.pod(`${tag}-guest`)}"]
  - action: request
    spiffeIds: ["spiffe://${TRUST_DOMAIN}/*"]
`;

function req(id: string, ifname = `${tag}i`): DeepPartial<NetworkServiceRequest> {
  return {
    connection: { id, network_service: service, path: { index: 0, path_segments: [{ name: 'client', id }] } },
    mechanism_preferences: [{ cls: 'LOCAL', type: 'KERNEL', parameters: { name: ifname, inodeURL: inodeUrlOf(client.path) } }],
  };
}

async function requestAs(t: Transport, r: DeepPartial<NetworkServiceRequest>): Promise<Connection> {
  const c = new ApiClient('networkservice.NetworkService', nsmd.url, t);
  try {
    const metadata = await signOwnSegment(t, c, r.connection!, 60_000, 2000);
    return await c.unary('Request', r, { timeoutMs: 5000, metadata });
  } finally {
    c.close();
  }
}

const clientLinks = async () => (await dp.snapshot(client.path)).links.filter((l) => l.ifname !== 'lo');

/** A refusal: the call fails with `code` and a message matching `why`, and nothing was plumbed. */
async function refused(p: Promise<unknown>, code: status, why: RegExp): Promise<void> {
  const err = (await p.then(
    () => undefined,
    (e: unknown) => e,
  )) as { code: number; details: string } | undefined;
  expect(err, 'the call should have been refused').toBeDefined();
  expect(err!.code).toBe(code);
  expect((err as { details?: string }).details ?? (err as unknown as Error).message).toMatch(why);
  expect(await clientLinks()).toEqual([]);
}

/** A transport that presents `svid` but trusts the mesh's real bundle. */
async function presenting(svid: ReturnType<typeof svidFrom>): Promise<Transport> {
  const ca = await testCa();
  return sourceTransport(new StaticX509Source(svid, new Map([[TRUST_DOMAIN, [ca.cert]]])));
}

beforeAll(async () => {
  client = await createNetns('client');
  nsePod = await createNetns('nse');
  dp = await createNetlinkDataplane();
  const policyFile = path.join(fs.mkdtempSync('/tmp/nsmpol-'), 'policy.yaml');
  fs.writeFileSync(policyFile, POLICY);
  nsmd = await startNsmd({ env: { NSM_AUTHZ_POLICY: policyFile } });
  await startIcmpResponder(nsePod, { name: `${tag}-nse`, connectTo: nsmd.url, services: [service] });
  me = await testTransport(ids.pod(`${tag}-client`));
  ns = new ApiClient('networkservice.NetworkService', nsmd.url, me);
});

afterAll(async () => {
  ns?.close();
  await nsmd?.stop();
  await dp?.close();
  await cleanupNetns();
});

describe('identity and authorization', () => {
  it('lets a client with a valid SVID and path token connect', async () => {
    const c = await requestAs(me, req(`${tag}-ok`));
    expect(await ping(client, c.context!.ip_context!.dst_ip_addrs[0]!.split('/')[0]!)).toBe(true);
    const segs = c.path!.path_segments;
    // Each hop's segment carries a JWT signed by that hop.
    expect(segs.map((s) => s.token.split('.').length)).toEqual([3, 3, 3]);
    await ns.unary('Close', c, { timeoutMs: 5000 });
    expect(await clientLinks()).toEqual([]);
  });

  it('refuses an SVID from a trust domain that is not federated', async () => {
    const foreign = createCa('evil.test');
    const t = await presenting(svidFrom(foreign, `spiffe://evil.test/ns/default/pod/${tag}`));
    await refused(requestAs(t, req(`${tag}-f1`)), status.UNAVAILABLE, /did not complete a TLS handshake/);
  });

  it('refuses an expired SVID', async () => {
    const leaf = leafSignedBy(await testCa(), ids.pod(`${tag}-old`), { notBefore: Date.now() - 7200_000, notAfter: Date.now() - 3600_000 });
    await refused(requestAs(await presenting(leaf.svid()), req(`${tag}-f2`)), status.UNAVAILABLE, /did not complete a TLS handshake/);
  });

  it('refuses a self-signed certificate', async () => {
    await refused(requestAs(await presenting(selfSignedLeaf(ids.pod(`${tag}-self`)).svid), req(`${tag}-f3`)), status.UNAVAILABLE, /did not complete a TLS handshake/);
  });

  describe('path tokens', () => {
    const svid = async () => me.svid()!;
    const nsmdId = ids.nsmd(`nsmd-${tag}`);
    const send = (r: DeepPartial<NetworkServiceRequest>, token?: string) => {
      const md = new Metadata();
      if (token) setTokenMetadata(md, { token, expires: Date.now() + 60_000 });
      return ns.unary('Request', r, { timeoutMs: 5000, metadata: md });
    };
    const exp = (ms: number) => Math.floor((Date.now() + ms) / 1000);

    it('refuses a Request without a token', async () => {
      await refused(send(req(`${tag}-t0`)), status.PERMISSION_DENIED, /no nsm-client-token/);
    });

    it('refuses a tampered token', async () => {
      const s = await svid();
      const [h, , sig] = signToken(s.privateKey, { sub: s.spiffeId, aud: [nsmdId], exp: exp(60_000), iat: 0 }).split('.');
      const forged = Buffer.from(JSON.stringify({ sub: s.spiffeId, aud: [nsmdId], exp: exp(3600_000), iat: 0 })).toString('base64url');
      await refused(send(req(`${tag}-t1`), `${h}.${forged}.${sig}`), status.PERMISSION_DENIED, /not signed by the caller/);
    });

    it('refuses a token for another audience', async () => {
      const s = await svid();
      const t = signToken(s.privateKey, { sub: s.spiffeId, aud: [ids.nsmd('someone-else')], exp: exp(60_000), iat: 0 });
      await refused(send(req(`${tag}-t2`), t), status.PERMISSION_DENIED, /is for .*someone-else, not for/);
    });

    it('refuses a token past its expiry', async () => {
      const s = await svid();
      const t = signToken(s.privateKey, { sub: s.spiffeId, aud: [nsmdId], exp: exp(-10_000), iat: 0 });
      const r = req(`${tag}-t3`);
      r.connection!.path!.path_segments![0]!.token = t;
      await refused(send(r, t), status.PERMISSION_DENIED, /expired at/);
    });
  });

  it('refuses a request the policy does not allow, naming the rule', async () => {
    await refused(requestAs(await testTransport(ids.pod(`${tag}-guest`)), req(`${tag}-p1`)), status.PERMISSION_DENIED, /may not request network service .* rule 1 \(deny request/);
  });

  it('refuses to let another identity take over a registered endpoint name', async () => {
    const intruder = new ApiClient('registry.NetworkServiceEndpointRegistry', nsmd.url, await testTransport(ids.pod(`${tag}-intruder`)));
    try {
      const err = await intruder
        .unary('Register', { name: `${tag}-nse`, network_service_names: [service], url: 'unix:///tmp/evil.sock' }, { timeoutMs: 5000 })
        .catch((e) => e);
      expect(err.code).toBe(status.PERMISSION_DENIED);
      expect(err.details).toMatch(new RegExp(`owned by ${ids.pod(`${tag}-nse`).replace(/[/.]/g, '\\$&')}, which registered it first`));
      const [still] = await intruder.collect('Find', { network_service_endpoint: { name: `${tag}-nse` } }, { timeoutMs: 5000 });
      expect(still!.network_service_endpoint!.url).not.toContain('evil');
    } finally {
      intruder.close();
    }
  });

  it('lets only the owner (or an admin) close a connection, even after its token expired', async () => {
    const r = req(`${tag}-own`);
    const c = new ApiClient('networkservice.NetworkService', nsmd.url, me);
    const metadata = await signOwnSegment(me, c, r.connection!, 1500, 5000);
    const conn = await c.unary('Request', r, { timeoutMs: 5000, metadata });
    c.close();
    const other = new ApiClient('networkservice.NetworkService', nsmd.url, await testTransport(ids.pod(`${tag}-other`)));
    const err = await other.unary('Close', conn, { timeoutMs: 5000 }).catch((e) => e);
    other.close();
    expect(err.code).toBe(status.PERMISSION_DENIED);
    expect(err.details).toMatch(/belongs to/);
    expect((await clientLinks()).map((l) => l.ifname)).toEqual([`${tag}i`]);
    // The owner's token is short-lived; its Close is authorised by its TLS identity, not by the token.
    await ns.unary('Close', conn, { timeoutMs: 5000 });
    expect(await clientLinks()).toEqual([]);
  });

  it('shows a monitor only the connections it may see', async () => {
    const conn = await requestAs(me, req(`${tag}-mon`));
    const seen = async (as?: string) => {
      const r = await nsmctl(nsmd.url, ['get', 'connections', '--output', 'json'], undefined, as ? { spiffeId: as } : {});
      return (JSON.parse(r.stdout) as Connection[]).map((c) => c.network_service);
    };
    expect(await seen()).toContain(service);
    expect(await seen(ids.pod(`${tag}-stranger`))).toEqual([]);
    await ns.unary('Close', conn, { timeoutMs: 5000 });
  });

  it('does not accept plaintext clients', async () => {
    const plain = new ApiClient('networkservice.NetworkService', nsmd.url);
    const err = await plain.unary('Request', req(`${tag}-pl`), { timeoutMs: 3000 }).catch((e) => e);
    plain.close();
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(await clientLinks()).toEqual([]);
  });
});
