import { describe, expect, it } from 'vitest';
import { matchNetworkService, matchNetworkServiceEndpoint } from '../../src/registry/match.js';
import { nse, ns } from './helpers.js';

describe('NSE Find template (upstream MatchNetworkServiceEndpoints)', () => {
  const stored = nse({
    name: 'icmp-responder-1',
    network_service_names: ['icmp', 'ping'],
    network_service_labels: { icmp: { labels: { app: 'icmp', nodeName: 'n1' } }, ping: { labels: {} } },
    url: 'tcp://10.0.0.5:5002',
    expiration_time: { seconds: 1_700_000_060, nanos: 5 },
  });
  const m = (t: Parameters<typeof nse>[0]) => matchNetworkServiceEndpoint(nse(t), stored);

  it('treats an empty template as a wildcard', () => {
    expect(m({})).toBe(true);
  });

  it('matches name exactly, not as a substring', () => {
    expect(m({ name: 'icmp-responder-1' })).toBe(true);
    expect(m({ name: 'icmp-responder' })).toBe(false);
  });

  it('matches network_service_labels as a subset per service', () => {
    expect(m({ network_service_labels: { icmp: { labels: { app: 'icmp' } } } })).toBe(true);
    expect(m({ network_service_labels: { icmp: { labels: {} } } })).toBe(true);
    expect(m({ network_service_labels: { icmp: { labels: { app: 'other' } } } })).toBe(false);
    expect(m({ network_service_labels: { ping: { labels: { app: 'icmp' } } } })).toBe(false);
    expect(m({ network_service_labels: { absent: { labels: {} } } })).toBe(false);
  });

  it('compares expiration_time seconds only, when set', () => {
    expect(m({ expiration_time: { seconds: 1_700_000_060 } })).toBe(true);
    expect(m({ expiration_time: { seconds: 1_700_000_061 } })).toBe(false);
  });

  it('matches network_service_names as a subset', () => {
    expect(m({ network_service_names: ['ping'] })).toBe(true);
    expect(m({ network_service_names: ['ping', 'icmp'] })).toBe(true);
    expect(m({ network_service_names: ['ping', 'vpn'] })).toBe(false);
  });

  it('matches url as a substring', () => {
    expect(m({ url: '10.0.0.5' })).toBe(true);
    expect(m({ url: 'tcp://10.0.0.5:5002' })).toBe(true);
    expect(m({ url: '10.0.0.6' })).toBe(false);
  });
});

describe('NS Find template (upstream MatchNetworkServices)', () => {
  const stored = ns({
    name: 'vpn',
    payload: 'IP',
    matches: [{ source_selector: { app: 'a' }, routes: [{ destination_selector: { app: 'b' } }] }],
  });

  it('matches name exactly and payload exactly, empty being a wildcard', () => {
    expect(matchNetworkService(ns({}), stored)).toBe(true);
    expect(matchNetworkService(ns({ name: 'vpn' }), stored)).toBe(true);
    expect(matchNetworkService(ns({ name: 'vp' }), stored)).toBe(false);
    expect(matchNetworkService(ns({ payload: 'IP' }), stored)).toBe(true);
    expect(matchNetworkService(ns({ payload: 'ETHERNET' }), stored)).toBe(false);
  });

  it('compares matches deeply when the template sets them', () => {
    const same = ns({
      matches: [{ routes: [{ destination_selector: { app: 'b' } }], source_selector: { app: 'a' } }],
    });
    expect(matchNetworkService(same, stored)).toBe(true);
    const different = ns({ matches: [{ source_selector: { app: 'a' } }] });
    expect(matchNetworkService(different, stored)).toBe(false);
    const withMetadata = ns({
      matches: [{ source_selector: { app: 'a' }, routes: [{ destination_selector: { app: 'b' } }], metadata: {} }],
    });
    expect(matchNetworkService(withMetadata, stored)).toBe(false);
  });
});
