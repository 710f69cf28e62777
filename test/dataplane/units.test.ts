import { describe, expect, it } from 'vitest';
import { formatIp, maskBytes, normaliseCidr, parseCidr, parseIp } from '../../src/dataplane/ip.js';
import { Limiter } from '../../src/dataplane/veth/limiter.js';
import { codeOf } from '../../src/dataplane/veth/protocol.js';

describe('ip', () => {
  it('round-trips addresses in canonical form', () => {
    for (const [input, out] of [
      ['169.254.0.1', '169.254.0.1'],
      ['fd00::1', 'fd00::1'],
      ['FD00:0:0:0:0:0:0:1', 'fd00::1'],
      ['fd00:0:0:1:0:0:0:1', 'fd00:0:0:1::1'],
      ['fd00:1:0:0:1:0:0:0', 'fd00:1:0:0:1::'],
      ['fd00:0:0:1:0:0:1:1', 'fd00::1:0:0:1:1'],
      ['::', '::'],
      ['::1', '::1'],
      ['fd00:1:2:3:4:5:6:7', 'fd00:1:2:3:4:5:6:7'],
      ['fd00:0:1:2:3:4:5:6', 'fd00:0:1:2:3:4:5:6'],
      ['::ffff:198.18.0.1', '::ffff:c612:1'],
    ]) {
      const p = parseIp(input as string);
      expect(p, input).toBeDefined();
      expect(formatIp(p!.bytes)).toBe(out);
    }
  });

  it('rejects malformed addresses and prefixes', () => {
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.0.0.1', '01.2.3.4', 'fd00::1::2', 'fd00:12345::', '1:2:3:4:5:6:7:8:9', 'g::1', ':1']) {
      expect(parseIp(bad), bad).toBeUndefined();
    }
    expect(() => parseCidr('169.254.0.1')).toThrow(/prefix-length/);
    expect(() => parseCidr('169.254.0.1/33')).toThrow(/0..32/);
    expect(() => parseCidr('fd00::1/129')).toThrow(/0..128/);
    expect(() => parseCidr('fd00::x/64')).toThrow(/bad address/);
    expect(normaliseCidr('FD00:0::1/64')).toBe('fd00::1/64');
  });

  it('masks host bits', () => {
    expect(formatIp(maskBytes(parseCidr('198.18.7.9/24').bytes, 24))).toBe('198.18.7.0');
    expect(formatIp(maskBytes(parseCidr('198.18.7.9/0').bytes, 0))).toBe('0.0.0.0');
    expect(formatIp(maskBytes(parseCidr('fd00:1:2:3::9/49').bytes, 49))).toBe('fd00:1:2::');
  });
});

describe('Limiter', () => {
  it('caps requests in flight, keeps FIFO order and runs exclusive work alone', async () => {
    const l = new Limiter(2);
    const log: string[] = [];
    let active = 0;
    let maxActive = 0;
    const gates: Array<() => void> = [];
    const job = (name: string, exclusive = false) =>
      l.run(async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        log.push(`start ${name}${exclusive ? ' (alone)' : ''} with ${active}`);
        await new Promise<void>((r) => gates.push(r));
        active--;
      }, exclusive);
    const all = [job('a'), job('b'), job('dump', true), job('c'), job('d')];
    const drain = async () => {
      for (let i = 0; i < 100 && (gates.length > 0 || active > 0); i++) {
        gates.splice(0).forEach((g) => g());
        await new Promise((r) => setImmediate(r));
      }
    };
    await drain();
    await Promise.all(all);
    expect(maxActive).toBe(2);
    expect(log).toEqual(['start a with 1', 'start b with 2', 'start dump (alone) with 1', 'start c with 1', 'start d with 2']);
  });
});

describe('codeOf', () => {
  it('recovers errno names from the netlink package messages', () => {
    expect(codeOf(new Error('Request rejected: EEXIST'))).toBe('EEXIST');
    expect(codeOf(new Error('Request rejected: -19'))).toBe('ENODEV');
    expect(codeOf(Object.assign(new Error('x'), { code: 'ENOENT' }))).toBe('ENOENT');
    expect(codeOf('weird')).toBe('EUNKNOWN');
  });
});
