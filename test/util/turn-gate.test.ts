import { describe, expect, it } from 'vitest';
import { TurnGate } from '../../src/util/turn-gate.js';

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('TurnGate', () => {
  it('lets a burst through a few per turn, in arrival order, until all are through', async () => {
    const gate = new TurnGate(4);
    const entered: number[] = [];
    const all = Array.from({ length: 10 }, (_, i) => gate.enter().then(() => entered.push(i)));
    await Promise.resolve();
    expect(entered).toEqual([0, 1, 2, 3]);
    await nextTurn();
    expect(entered).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    await Promise.all(all);
    expect(entered).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('holds nothing after entering: work that comes back through the gate is never stuck behind itself', async () => {
    const gate = new TurnGate(1);
    const outer = Array.from({ length: 3 }, async () => {
      await gate.enter();
      await gate.enter(); // an onward Request through the same nsmd
      return true;
    });
    expect(await Promise.all(outer)).toEqual([true, true, true]);
  });
});
