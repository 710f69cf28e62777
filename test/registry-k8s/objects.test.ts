/**
 * Conversions between registry messages and NetworkService / NetworkServiceEndpoint objects, without an API server:
 * what the registry writes reads back to the same message, and hand-written objects are read or refused with a
 * message that says what is wrong.
 */
import { describe, expect, it } from 'vitest';
import { fromEndpointObject, toEndpointObject } from '../../src/registry/k8s/endpoint-object.js';
import { objectNameFor } from '../../src/registry/k8s/resources.js';
import { fromServiceObject, toServiceObject } from '../../src/registry/k8s/service-object.js';
import { ns, nse } from '../registry/helpers.js';

const object = (name: string, spec: unknown, extra: { apiVersion?: string; labels?: Record<string, string> } = {}) => ({
  apiVersion: extra.apiVersion ?? 'networkservicemesh.io/v1',
  kind: 'NetworkServiceEndpoint',
  metadata: { name, namespace: 'nsm-system', resourceVersion: '7', ...(extra.labels ? { labels: extra.labels } : {}) },
  spec,
});

describe('round trips', () => {
  it('a network service, empty payload and interdomain name included', () => {
    for (const s of [
      ns({ name: 'svc', payload: '', matches: [{ routes: [{ destination_selector: { a: 'b' } }] }] }),
      ns({ name: 'icmp@my.cluster2', payload: 'ETHERNET', matches: [{ source_selector: { x: 'y' }, fallthrough: true, metadata: { labels: { p2p: 'true' } } }], path_ids: ['spiffe://a/b'] }),
    ]) {
      const obj = toServiceObject(s, objectNameFor(s.name), 'nsm-system');
      expect(fromServiceObject(JSON.parse(JSON.stringify(obj)))).toEqual({ ok: s });
    }
  });

  it('an endpoint, timestamps and labels included', () => {
    const e = nse({
      name: 'Nse_1',
      network_service_names: ['a', 'b'],
      network_service_labels: { a: { labels: { k: 'v' } }, b: { labels: {} } },
      url: 'tcp://198.18.0.1:5001',
      expiration_time: { seconds: 1_900_000_000, nanos: 5 },
      initial_registration_time: { seconds: 1_899_999_000, nanos: 0 },
      path_ids: ['spiffe://a/b'],
    });
    const obj = toEndpointObject(e, objectNameFor(e.name), 'nsm-system');
    expect(obj.metadata.name).not.toBe('Nse_1');
    expect(fromEndpointObject(JSON.parse(JSON.stringify(obj)))).toEqual({ ok: e });
  });
});

describe('hand-written endpoint objects', () => {
  it('accepts camelCase, RFC 3339 and protojson int64 strings', () => {
    const r = fromEndpointObject(
      object('e', {
        networkServiceNames: ['s'],
        expirationTime: '2030-01-02T03:04:05.123456789Z',
        initialRegistrationTime: { seconds: '1893553445', nanos: 0 },
      }),
    );
    expect(r).toEqual({
      ok: nse({
        name: 'e',
        network_service_names: ['s'],
        expiration_time: { seconds: Date.parse('2030-01-02T03:04:05Z') / 1000, nanos: 123456789 },
        initial_registration_time: { seconds: 1893553445, nanos: 0 },
      }),
    });
  });

  it.each([
    [{ network_service_name: ['s'] }, /unknown field spec\.network_service_name; accepted: name, network_service_names/],
    [{ network_service_names: ['s'], networkServiceNames: ['s'] }, /spec\.network_service_names and spec\.networkServiceNames are the same field/],
    [{ network_service_names: 's' }, /spec\.network_service_names: expected a list of strings, got string "s"/],
    [{ expiration_time: 'tomorrow' }, /spec\.expiration_time: expected \{seconds, nanos\} or an RFC 3339 time/],
    [{ expiration_time: { seconds: 1, nanos: 1e9 } }, /nanos 0-999999999/],
    [{ network_service_labels: { s: { labels: { k: 1 } } } }, /spec\.network_service_labels\.s\.labels\.k: expected a string \(quote numbers/],
    [{ networkServiceName: 's', network_service_names: ['s'] }, /either spec\.networkServiceName \(v0\.2\) or spec\.network_service_names/],
    [{ name: 'other' }, /spec\.name "other" belongs in an object named "other", not "e"/],
  ])('refuses %j', (spec, why) => {
    const r = fromEndpointObject(object('e', spec));
    expect('problem' in r && r.problem).toMatch(why);
  });
});

describe('hand-written service objects', () => {
  it('reads v0.2 camelCase as nsmctl apply does, and refuses typos with a hint', () => {
    const v02 = fromServiceObject({
      apiVersion: 'networkservicemesh.io/v1alpha1',
      kind: 'NetworkService',
      metadata: { name: 's' },
      spec: { matches: [{ sourceSelector: { a: 'b' }, route: [{ destinationSelector: { c: 'd' } }] }] },
    });
    expect(v02).toEqual({ ok: ns({ name: 's', payload: 'IP', matches: [{ source_selector: { a: 'b' }, routes: [{ destination_selector: { c: 'd' } }], fallthrough: true }] }) });

    const typo = fromServiceObject({ kind: 'NetworkService', metadata: { name: 's' }, spec: { matches: [{ sourceSelector: { a: 'b' }, routes: [] }] } });
    expect('problem' in typo && typo.problem).toMatch(/unknown field "routes".*did you mean "route"/);
  });
});
