import { describe, expect, it } from 'vitest';
import { RoundRobin } from '../../src/select/round-robin.js';

describe('RoundRobin', () => {
  it('rotates the starting candidate per call, so every candidate is tried in turn', () => {
    const rr = new RoundRobin();
    const c = ['a', 'b', 'c'];
    expect(rr.order('svc', c)).toEqual(['a', 'b', 'c']);
    expect(rr.order('svc', c)).toEqual(['b', 'c', 'a']);
    expect(rr.order('svc', c)).toEqual(['c', 'a', 'b']);
    expect(rr.order('svc', c)).toEqual(['a', 'b', 'c']);
  });

  it('keeps one counter per network service name', () => {
    const rr = new RoundRobin();
    expect(rr.order('one', ['a', 'b'])[0]).toBe('a');
    expect(rr.order('one', ['a', 'b'])[0]).toBe('b');
    expect(rr.order('two', ['x', 'y'])[0]).toBe('x');
    expect(rr.order('one', ['a', 'b'])[0]).toBe('a');
  });

  it('pick advances like upstream selectEndpoint', () => {
    const rr = new RoundRobin();
    expect([1, 2, 3, 4].map(() => rr.pick('s', ['a', 'b', 'c']))).toEqual(['a', 'b', 'c', 'a']);
  });

  it('copes with an empty or shrinking candidate list', () => {
    const rr = new RoundRobin();
    expect(rr.order('s', [])).toEqual([]);
    expect(rr.pick('s', [])).toBeUndefined();
    rr.order('s', ['a', 'b', 'c']);
    rr.order('s', ['a', 'b', 'c']);
    expect(rr.order('s', ['a'])).toEqual(['a']);
    rr.forget('s');
    expect(rr.order('s', ['a', 'b'])).toEqual(['a', 'b']);
  });

  it('does not mutate the input', () => {
    const rr = new RoundRobin();
    const c = ['a', 'b'];
    rr.order('s', c);
    rr.order('s', c);
    expect(c).toEqual(['a', 'b']);
  });
});
