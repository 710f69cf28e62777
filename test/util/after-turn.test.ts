import { describe, expect, it } from 'vitest';
import { AfterTurn } from '../../src/util/after-turn.js';

describe('AfterTurn', () => {
  it('runs effects after the current turn, in the order they were queued', async () => {
    const later = new AfterTurn();
    const seen: string[] = [];
    later.push(() => seen.push('a'));
    later.push(() => seen.push('b'));
    await Promise.resolve(); // microtasks of this turn run before the effects
    seen.push('same turn');
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(seen).toEqual(['same turn', 'a', 'b']);
  });

  it('run() drains the queue at once, and the scheduled turn then finds nothing to do', async () => {
    const later = new AfterTurn();
    let n = 0;
    later.push(() => n++);
    later.run();
    expect(n).toBe(1);
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(n).toBe(1);
    later.push(() => n++);
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(n).toBe(2);
  });
});
