import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeToken, signToken, TokenError, verifyToken } from '../../src/identity/token.js';
import { Policy, PolicyError } from '../../src/identity/policy.js';

const keys = () => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });

describe('path tokens', () => {
  const claims = { sub: 'spiffe://td/a', aud: ['spiffe://td/b'], exp: Math.floor(Date.now() / 1000) + 60, iat: 0 };

  it('round-trips and verifies with the signer key', () => {
    const k = keys();
    const t = signToken(k.privateKey, claims);
    expect(verifyToken(t, k.publicKey)).toEqual(claims);
  });

  it('refuses a token signed by another key', () => {
    const t = signToken(keys().privateKey, claims);
    expect(() => verifyToken(t, keys().publicKey)).toThrow(/not signed by the caller/);
  });

  it('refuses tampered claims', () => {
    const k = keys();
    const [h, , s] = signToken(k.privateKey, claims).split('.');
    const forged = Buffer.from(JSON.stringify({ ...claims, sub: 'spiffe://td/evil' })).toString('base64url');
    expect(() => verifyToken(`${h}.${forged}.${s}`, k.publicKey)).toThrow(TokenError);
  });

  it('refuses malformed tokens and other algorithms', () => {
    expect(() => decodeToken('abc')).toThrow(/not a JWT/);
    const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.`;
    expect(() => decodeToken(none)).toThrow(/not ES256/);
  });
});

describe('authorization policy', () => {
  const policy = Policy.parse(`
rules:
  - action: request
    effect: deny
    spiffeIds: ["spiffe://td/ns/guest/*"]
  - action: request
    spiffeIds: ["spiffe://td/ns/*"]
    resources: ["secure-*"]
`);

  it('lets the first matching rule decide and names it', () => {
    expect(policy.decide('request', 'spiffe://td/ns/prod/pod/a', 'secure-intranet')).toMatchObject({ allowed: true });
    const d = policy.decide('request', 'spiffe://td/ns/guest/pod/x', 'secure-intranet')!;
    expect(d.allowed).toBe(false);
    expect(d.reason).toMatch(/rule 1 \(deny request/);
  });

  it('is default-deny for an action it has rules for, and silent for others', () => {
    expect(policy.decide('request', 'spiffe://td/ns/prod/pod/a', 'other')).toMatchObject({ allowed: false, reason: expect.stringMatching(/default-deny/) });
    expect(policy.decide('register', 'spiffe://td/x', 'nse')).toBeUndefined();
  });

  it('explains a malformed policy', () => {
    expect(() => Policy.parse('rules: [{action: fly, spiffeIds: []}]')).toThrow(PolicyError);
    expect(() => Policy.parse('rules: [{action: fly, spiffeIds: []}]')).toThrow(/rules\.0\.action/);
  });
});
