import { describe, expect, it } from 'vitest';
import { parseSpiffeId, podId, trustDomainOf, trustDomainId, parseTrustDomain, isSpiffeId } from '../../src/identity/spiffe-id.js';

describe('SPIFFE IDs', () => {
  it('parses trust domain and path', () => {
    expect(parseSpiffeId('spiffe://k8s.nsm/ns/default/pod/nsc-1')).toEqual({
      id: 'spiffe://k8s.nsm/ns/default/pod/nsc-1',
      trustDomain: 'k8s.nsm',
      path: '/ns/default/pod/nsc-1',
    });
    expect(parseSpiffeId('spiffe://example.org').path).toBe('');
    expect(trustDomainOf('spiffe://nsm.cluster2/x')).toBe('nsm.cluster2');
  });

  it.each([
    ['http://example.org/x', 'must start with "spiffe://"'],
    ['SPIFFE://example.org/x', 'scheme must be lower-case'],
    ['spiffe://Example.org/x', 'lower-case'],
    ['spiffe://example.org:8443/x', 'port'],
    ['spiffe://user@example.org/x', 'userinfo'],
    ['spiffe://example.org/x?a=b', 'query'],
    ['spiffe://example.org/x#frag', 'fragment'],
    ['spiffe://example.org/x/', 'must not end with "/"'],
    ['spiffe://example.org//x', 'empty segment'],
    ['spiffe://example.org/a/../b', '".."'],
    ['spiffe://example.org/a%20b', 'percent-encoding'],
    ['spiffe:///x', 'trust domain is empty'],
    ['spiffe://exa mple.org/x', 'may contain only'],
    ['spiffe://example.org/a b', 'path segment'],
    ['', 'empty'],
  ])('refuses %s', (id, reason) => {
    expect(() => parseSpiffeId(id)).toThrow(reason);
    expect(isSpiffeId(id)).toBe(false);
  });

  it("builds upstream's pod IDs and checks their parts", () => {
    expect(podId('k8s.nsm', 'default', 'nsc-kernel-5d8f')).toBe('spiffe://k8s.nsm/ns/default/pod/nsc-kernel-5d8f');
    expect(() => podId('k8s.nsm', 'a/b', 'p')).toThrow();
    expect(() => podId('K8S.nsm', 'default', 'p')).toThrow('lower-case');
  });

  it('accepts a trust domain by name or by ID', () => {
    expect(parseTrustDomain('spiffe://td.x')).toBe('td.x');
    expect(parseTrustDomain('td.x')).toBe('td.x');
    expect(trustDomainId('td.x')).toBe('spiffe://td.x');
    expect(() => parseTrustDomain('td.x:80')).toThrow('port');
  });
});
