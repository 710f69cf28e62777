import { describe, expect, it } from 'vitest';
import { parseNetworkServiceYaml } from '../../src/registry/yaml.js';
import { SEED_NETWORK_SERVICE_YAML } from '../helpers/fixtures.js';
import { isSubset, matchEndpoints, selectEndpoints } from '../../src/select/match.js';
import { endpoint, ns } from '../registry/helpers.js';

const names = (list: { name: string }[]) => list.map((e) => e.name);

describe('isSubset (upstream matchutils.IsSubset)', () => {
  it('requires every selector entry in the labels', () => {
    expect(isSubset({ app: 'a', env: 'prod' }, { app: 'a' }, {})).toBe(true);
    expect(isSubset({ app: 'a' }, { app: 'b' }, {})).toBe(false);
    expect(isSubset({ app: 'a' }, {}, {})).toBe(true);
    expect(isSubset(undefined, {}, {})).toBe(true);
    expect(isSubset(undefined, { app: 'a' }, {})).toBe(false);
  });

  it('renders selector values as templates against the request labels', () => {
    expect(isSubset({ nodeName: 'n2' }, { nodeName: '{{.nodeName}}' }, { nodeName: 'n2' })).toBe(true);
    expect(isSubset({ nodeName: 'n1' }, { nodeName: '{{.nodeName}}' }, { nodeName: 'n2' })).toBe(false);
  });

  it('keeps upstream quirks: an empty selector value matches an absent key when sizes allow', () => {
    expect(isSubset({ other: 'x' }, { app: '' }, {})).toBe(true);
    expect(isSubset({}, { app: '' }, {})).toBe(false);
  });
});

describe('matchEndpoints (upstream v1 MatchEndpoint)', () => {
  const svc = 'secure-intranet';
  const gw = endpoint('gw', svc, { app: 'vpn-gateway' });
  const fw = endpoint('fw', svc, { app: 'firewall' });
  const other = endpoint('other', svc, { app: 'other' });
  const all = [gw, fw, other];

  it('sends two clients to different endpoints by their labels', () => {
    const service = ns({
      name: svc,
      matches: [
        { source_selector: { app: 'firewall' }, routes: [{ destination_selector: { app: 'vpn-gateway' } }] },
        { source_selector: { app: 'client' }, routes: [{ destination_selector: { app: 'firewall' } }] },
      ],
    });
    expect(names(matchEndpoints({ app: 'firewall' }, service, all))).toEqual(['gw']);
    expect(names(matchEndpoints({ app: 'client' }, service, all))).toEqual(['fw']);
  });

  it('returns every endpoint when the service declares no matches', () => {
    expect(names(matchEndpoints({}, ns({ name: svc }), all))).toEqual(['gw', 'fw', 'other']);
  });

  it('selects the endpoint on the client node with a {{.nodeName}} template', () => {
    const n1 = endpoint('nse-n1', 'local', { nodeName: 'node-1' });
    const n2 = endpoint('nse-n2', 'local', { nodeName: 'node-2' });
    const service = ns({
      name: 'local',
      matches: [{ routes: [{ destination_selector: { nodeName: '{{ .nodeName }}' } }] }],
    });
    expect(names(matchEndpoints({ nodeName: 'node-2', podName: 'p' }, service, [n1, n2]))).toEqual(['nse-n2']);
    expect(names(matchEndpoints({ nodeName: 'node-1' }, service, [n1, n2]))).toEqual(['nse-n1']);
    expect(matchEndpoints({ podName: 'p' }, service, [n1, n2])).toEqual([]);
  });

  it('only looks at the labels an endpoint registered for this network service', () => {
    const elsewhere = endpoint('elsewhere', 'another-service', { app: 'vpn-gateway' });
    elsewhere.network_service_names.push(svc);
    const service = ns({ name: svc, matches: [{ routes: [{ destination_selector: { app: 'vpn-gateway' } }] }] });
    expect(names(matchEndpoints({}, service, [elsewhere, gw]))).toEqual(['gw']);
  });

  it('falls through to the next match only when the flag is set', () => {
    const withFallthrough = ns({
      name: svc,
      matches: [
        { routes: [{ destination_selector: { app: 'missing' } }], fallthrough: true },
        { routes: [{ destination_selector: { app: 'firewall' } }] },
      ],
    });
    expect(names(matchEndpoints({}, withFallthrough, all))).toEqual(['fw']);

    const without = ns({
      name: svc,
      matches: [
        { routes: [{ destination_selector: { app: 'missing' } }] },
        { routes: [{ destination_selector: { app: 'firewall' } }] },
      ],
    });
    expect(matchEndpoints({}, without, all)).toEqual([]);
  });

  it('does not fall through when the first match has candidates', () => {
    const service = ns({
      name: svc,
      matches: [
        { routes: [{ destination_selector: { app: 'vpn-gateway' } }], fallthrough: true },
        { routes: [{ destination_selector: { app: 'firewall' } }] },
      ],
    });
    expect(names(matchEndpoints({}, service, all))).toEqual(['gw']);
  });

  it('treats a metadata-only match as "any endpoint"', () => {
    const service = ns({ name: svc, matches: [{ metadata: { labels: { p2p: 'true' } } }] });
    expect(names(matchEndpoints({}, service, all))).toEqual(['gw', 'fw', 'other']);
    // Without metadata the same empty match yields no candidates.
    expect(matchEndpoints({}, ns({ name: svc, matches: [{}] }), all)).toEqual([]);
  });

  it('reports the metadata labels of the match that applied, and only of that one', () => {
    const service = ns({
      name: svc,
      matches: [
        { source_selector: { site: 'remote' }, routes: [{ destination_selector: {} }], metadata: { labels: { encryption: 'required' } } },
        { fallthrough: true, routes: [{ destination_selector: { app: 'none' } }], metadata: { labels: { skipped: 'yes' } } },
        { routes: [{ destination_selector: {} }] },
      ],
    });
    expect(selectEndpoints({ site: 'remote' }, service, all).matchLabels).toEqual({ encryption: 'required' });
    // The fallthrough match found nothing, so its labels do not apply; the last match carries none.
    expect(selectEndpoints({ site: 'local' }, service, all).matchLabels).toEqual({});
    expect(names(selectEndpoints({ site: 'local' }, service, all).candidates)).toEqual(['gw', 'fw', 'other']);
  });

  it('returns no candidates when no source selector matches', () => {
    const service = ns({
      name: svc,
      matches: [{ source_selector: { app: 'firewall' }, routes: [{ destination_selector: {} }] }],
    });
    expect(matchEndpoints({ app: 'client' }, service, all)).toEqual([]);
    expect(matchEndpoints({}, service, all)).toEqual([]);
  });

  it('lists candidates in route order, then endpoint order, keeping duplicates like upstream', () => {
    const service = ns({
      name: svc,
      matches: [
        {
          routes: [{ destination_selector: { app: 'firewall' } }, { destination_selector: {} }],
        },
      ],
    });
    expect(names(matchEndpoints({}, service, all))).toEqual(['fw', 'gw', 'fw', 'other']);
  });

  it('templates source selectors too', () => {
    const service = ns({
      name: svc,
      matches: [{ source_selector: { owner: '{{.podName}}' }, routes: [{ destination_selector: { app: 'firewall' } }] }],
    });
    expect(names(matchEndpoints({ owner: 'p1', podName: 'p1' }, service, all))).toEqual(['fw']);
    expect(matchEndpoints({ owner: 'p1', podName: 'p2' }, service, all)).toEqual([]);
  });

  it('routes the seed talk example (v0.2 YAML) as the talk describes', () => {
    const [service] = parseNetworkServiceYaml(SEED_NETWORK_SERVICE_YAML);
    const name = 'secure-intranet-connectivity';
    const eps = [endpoint('vpn', name, { app: 'vpn-gateway' }), endpoint('fw', name, { app: 'firewall' })];
    expect(names(matchEndpoints({ app: 'firewall' }, service!, eps))).toEqual(['vpn']);
    expect(names(matchEndpoints({ app: 'workload' }, service!, eps))).toEqual(['fw']);
    expect(names(matchEndpoints({}, service!, eps))).toEqual(['fw']);
  });
});
