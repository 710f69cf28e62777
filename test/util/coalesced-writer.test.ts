import { describe, expect, it, vi } from 'vitest';
import { CoalescedWriter } from '../../src/util/coalesced-writer.js';
import { waitFor } from '../helpers/wait.js';

describe('CoalescedWriter', () => {
  it('folds many schedules into one write', async () => {
    let writes = 0;
    const w = new CoalescedWriter(async () => void writes++, 10, () => undefined);
    for (let i = 0; i < 1000; i++) w.schedule();
    await waitFor('the coalesced write', () => writes === 1, 5000);
    await w.flush();
    expect(writes).toBe(1);
  });

  it('writes again when a change arrives during a write, never two writes at once', async () => {
    let active = 0;
    let maxActive = 0;
    let writes = 0;
    let release!: () => void;
    const w = new CoalescedWriter(
      async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        writes++;
        if (writes === 1) await new Promise<void>((r) => (release = r));
        active--;
      },
      1,
      () => undefined,
    );
    w.schedule();
    await waitFor('the first write to start', () => writes === 1, 5000);
    w.schedule();
    w.schedule();
    release();
    await waitFor('the follow-up write', () => writes === 2, 5000);
    await w.flush();
    expect(writes).toBe(2);
    expect(maxActive).toBe(1);
  });

  it('flush writes pending changes immediately and is a no-op when clean', async () => {
    let writes = 0;
    const w = new CoalescedWriter(async () => void writes++, 60_000, () => undefined);
    await w.flush();
    expect(writes).toBe(0);
    w.schedule();
    await w.flush();
    expect(writes).toBe(1);
  });

  it('reports a failed background write and retries on flush', async () => {
    let fail = true;
    let writes = 0;
    const onError = vi.fn();
    const w = new CoalescedWriter(
      async () => {
        writes++;
        if (fail) throw new Error('disk full');
      },
      1,
      onError,
    );
    w.schedule();
    await waitFor('the error report', () => onError.mock.calls.length === 1, 5000);
    fail = true;
    await expect(w.flush()).rejects.toThrow('disk full');
    fail = false;
    await w.flush();
    expect(writes).toBe(3);
  });
});
