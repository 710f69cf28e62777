import { describe, expect, it } from 'vitest';
import {
  DEFAULT_PAYLOAD,
  MAX_LABEL_VALUE_LENGTH,
  NetworkServiceYamlError,
  parseNetworkServiceYaml,
} from '../../src/registry/yaml.js';
import { SEED_NETWORK_SERVICE_YAML } from '../helpers/fixtures.js';

const SEED_TALK = SEED_NETWORK_SERVICE_YAML;

function yamlError(text: string): NetworkServiceYamlError {
  try {
    parseNetworkServiceYaml(text);
  } catch (e) {
    expect(e).toBeInstanceOf(NetworkServiceYamlError);
    return e as NetworkServiceYamlError;
  }
  throw new Error('expected a NetworkServiceYamlError');
}

describe('parseNetworkServiceYaml', () => {
  it('parses the seed talk v0.2 example, falling through on every match', () => {
    expect(parseNetworkServiceYaml(SEED_TALK)).toEqual([
      {
        name: 'secure-intranet-connectivity',
        payload: 'IP',
        matches: [
          {
            source_selector: { app: 'firewall' },
            routes: [{ destination_selector: { app: 'vpn-gateway' }, weight: 0 }],
            fallthrough: true,
            metadata: null,
          },
          {
            source_selector: {},
            routes: [{ destination_selector: { app: 'firewall' }, weight: 0 }],
            fallthrough: true,
            metadata: null,
          },
        ],
        path_ids: [],
      },
    ]);
  });

  it('parses the v1 CRD form with snake_case keys, templates and metadata', () => {
    const [svc] = parseNetworkServiceYaml(`
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata:
  name: scale-from-zero
  namespace: nsm-system
  labels: {team: net}
spec:
  payload: ETHERNET
  matches:
    - source_selector:
        app: client
      fallthrough: true
      routes:
        - destination_selector:
            nodeName: "{{.nodeName}}"
          weight: 10
    - metadata:
        labels:
          my_forwarder_capability: "true"
`);
    expect(svc).toEqual({
      name: 'scale-from-zero',
      payload: 'ETHERNET',
      matches: [
        {
          source_selector: { app: 'client' },
          routes: [{ destination_selector: { nodeName: '{{.nodeName}}' }, weight: 10 }],
          fallthrough: true,
          metadata: null,
        },
        {
          source_selector: {},
          routes: [],
          fallthrough: false,
          metadata: { labels: { my_forwarder_capability: 'true' } },
        },
      ],
      path_ids: [],
    });
  });

  it('parses a bare object and several documents, skipping empty ones', () => {
    const out = parseNetworkServiceYaml(`
name: icmp-responder@my.cluster2
matches:
  - routes:
      - destination_selector: {app: icmp}
---
---
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {name: second}
`);
    expect(out.map((s) => s.name)).toEqual(['icmp-responder@my.cluster2', 'second']);
    expect(out[0]!.payload).toBe(DEFAULT_PAYLOAD);
    expect(DEFAULT_PAYLOAD).toBe('IP');
    expect(out[1]!.matches).toEqual([]);
    expect(parseNetworkServiceYaml('')).toEqual([]);
    expect(parseNetworkServiceYaml('# only a comment\n')).toEqual([]);
  });

  it('names the document, the field path, the problem and what is accepted', () => {
    const err = yamlError(`
name: ok
---
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {name: bad}
spec:
  matches:
    - routes:
        - destination_selector: [app, firewall]
`);
    expect(err.message).toContain(
      'document 2: spec.matches[0].routes[0].destination_selector: expected a map of string to string, got a list',
    );
    expect(err.issues).toHaveLength(1);
    expect(err.issues[0]).toMatchObject({ document: 2, path: 'spec.matches[0].routes[0].destination_selector', line: 10 });
  });

  it('points a camelCase key in a v1 document at its snake_case name', () => {
    const err = yamlError(`
apiVersion: networkservicemesh.io/v1
kind: NetworkService
metadata: {name: x}
spec:
  matches:
    - sourceSelector: {app: a}
`);
    expect(err.message).toMatch(/document 1: spec\.matches\[0\]: unknown field "sourceSelector".*accepted: source_selector/);
    expect(err.message).toContain('did you mean "source_selector"');
  });

  it('suggests "route" for "routes" in a v1alpha1 document', () => {
    const err = yamlError(`
apiVersion: networkservicemesh.io/v1alpha1
kind: NetworkService
metadata: {name: x}
spec:
  matches:
    - routes: []
`);
    expect(err.message).toContain('did you mean "route"');
  });

  it('rejects unquoted non-string label values with a hint', () => {
    const err = yamlError(`
name: fwd
matches:
  - metadata:
      labels: {p2p: true}
`);
    expect(err.message).toContain('document 1: matches[0].metadata.labels.p2p: expected a string value, got the boolean true');
    expect(err.message).toContain('quote it: "true"');
  });

  it('validates name, payload, apiVersion, kind, weight and label limits', () => {
    expect(yamlError('name: Bad_Name').message).toMatch(/document 1: name: expected a DNS-1123 name.*got "Bad_Name"/);
    expect(yamlError('payload: IP').message).toMatch(/document 1: name: .*got nothing/);
    expect(yamlError('name: x\npayload: ip').message).toMatch(/payload: expected IP or ETHERNET.*got the string "ip"/);
    expect(yamlError('apiVersion: v1\nkind: NetworkService').message).toMatch(
      /document 1: apiVersion: expected "networkservicemesh.io\/v1" or "networkservicemesh.io\/v1alpha1"/,
    );
    expect(yamlError('apiVersion: networkservicemesh.io/v1\nkind: Service\nmetadata: {name: x}').message).toMatch(
      /document 1: kind: expected "NetworkService"; got the string "Service"/,
    );
    expect(yamlError('name: x\nmatches:\n  - routes:\n      - weight: -1').message).toMatch(
      /matches\[0\]\.routes\[0\]\.weight: expected a whole number/,
    );
    const long = 'v'.repeat(MAX_LABEL_VALUE_LENGTH + 1);
    expect(MAX_LABEL_VALUE_LENGTH).toBe(63);
    expect(yamlError(`name: x\nmatches:\n  - source_selector: {app: ${long}}`).message).toMatch(
      /matches\[0\]\.source_selector\.app: label value is 64 characters; at most 63/,
    );
    expect(yamlError('name: x\nmatches:\n  - source_selector: {"bad key": v}').message).toMatch(
      /source_selector\["bad key"\]: label key "bad key" is not a valid key/,
    );
    expect(parseNetworkServiceYaml(`name: x\nmatches:\n  - source_selector: {app: ${'v'.repeat(63)}}`)).toHaveLength(1);
  });

  it('reports every problem at once and YAML syntax errors with their line', () => {
    const err = yamlError('name: x\nextra: 1\n---\nname: [unclosed\n');
    expect(err.issues.map((i) => i.document)).toEqual([1, 2]);
    expect(err.issues[0]!.message).toMatch(/unknown field "extra".*accepted: name, payload, matches/);
    expect(err.issues[1]!.message).toMatch(/^invalid YAML/);
    expect(err.message.split('\n')).toHaveLength(2);
  });

  it('rejects a document that is not a mapping', () => {
    expect(yamlError('- a\n- b').message).toBe('document 1: expected a NetworkService mapping, got a list (line 1)');
  });
});
