/**
 * The firewall's configuration and the nftables ruleset made from it, checked by the real nft in a test
 * namespace; and the prefix arithmetic behind excluded prefixes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfigFile } from '../../src/endpoint/config-file.js';
import { overlaps, readNftCounters, replaceNftTable, routesOutside } from '../../src/endpoint/index.js';
import { DEFAULT_DENY_COUNTER, FIREWALL_CONFIG_SHAPE, FIREWALL_TABLE, firewallConfigSchema, firewallRuleset, type FirewallRule } from '../../examples/firewall/rules.js';
import { cleanupNetns, createNetns, execIn, type Netns } from '../helpers/netns.js';

const EXAMPLE = path.resolve(import.meta.dirname, '../../examples/firewall/firewall.yaml');
const ifaces = { clients: 'fwc', onward: 'fwo' };
let dir: string;
let ns: Netns;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsmfw-'));
  ns = await createNetns('nft');
});

afterAll(async () => {
  await cleanupNetns();
  fs.rmSync(dir, { recursive: true, force: true });
});

function load(text: string) {
  const f = path.join(dir, `c${Math.random().toString(16).slice(2)}.yaml`);
  fs.writeFileSync(f, text);
  return loadConfigFile(f, firewallConfigSchema, FIREWALL_CONFIG_SHAPE);
}

describe('firewall configuration', () => {
  it('accepts the shipped example', () => {
    const { rules } = loadConfigFile(EXAMPLE, firewallConfigSchema, FIREWALL_CONFIG_SHAPE);
    expect(rules.map((r) => r.name)).toEqual(['intranet-web', 'no-ssh', 'ping']);
  });

  it.each([
    ['ports on icmp', '- {action: allow, protocol: icmp, ports: [7]}', /rules\.0\.ports: icmp has no ports/],
    ['a bad prefix', '- {action: allow, protocol: tcp, destinations: [198.19.10.0/33]}', /rules\.0\.destinations\.0: invalid CIDR/],
    ['a reversed port range', '- {action: allow, protocol: udp, ports: ["90-80"]}', /rules\.0\.ports\.0: .*1 <= from < to/],
    ['an unknown key', '- {action: allow, protocol: tcp, port: 80}', /Unrecognized key/],
    ['an unknown protocol', '- {action: allow, protocol: sctp}', /rules\.0\.protocol/],
    ['families that never meet', '- {action: allow, protocol: tcp, sources: [fd00::/8], destinations: [198.19.0.0/16]}', /share no address family/],
  ])('refuses %s, naming the field', (_what, rule, msg) => {
    expect(() => load(`rules:\n  ${rule}\n`)).toThrow(msg);
  });
});

describe('nftables ruleset', () => {
  const rules: FirewallRule[] = [
    { name: 'web', action: 'allow', protocol: 'tcp', ports: [80, '8000-8080'], destinations: ['198.19.10.0/24', 'fd00:10::/64'] },
    { action: 'deny', protocol: 'udp', sources: ['169.254.64.0/24'] },
    { action: 'allow', protocol: 'icmp' },
  ];

  it('matches client-to-onward traffic, one line per address family, each rule with its counter', () => {
    const text = firewallRuleset(rules, ifaces);
    expect(text).toContain('iifname "fwc*" oifname "fwo*" ip daddr { 198.19.10.0/24 } tcp dport { 80, 8000-8080 } counter name "rule_1_web" accept');
    expect(text).toContain('iifname "fwc*" oifname "fwo*" ip6 daddr { fd00:10::/64 } tcp dport { 80, 8000-8080 } counter name "rule_1_web" accept');
    expect(text).toContain('ip saddr { 169.254.64.0/24 } meta l4proto udp counter name "rule_2" drop');
    expect(text).toContain('meta l4proto { icmp, ipv6-icmp } counter name "rule_3" accept');
    expect(text).toMatch(/policy drop;\n\s+ct state established,related accept/);
    expect(text.trimEnd().split('\n').at(-2)!.trim()).toBe(`counter name "${DEFAULT_DENY_COUNTER}" drop`);
  });

  it('is accepted by nft, replaces itself atomically, and exposes its counters', async () => {
    await replaceNftTable('inet', FIREWALL_TABLE, firewallRuleset(rules, ifaces), { netns: ns.name });
    await replaceNftTable('inet', FIREWALL_TABLE, firewallRuleset(rules.slice(0, 1), ifaces), { netns: ns.name });
    const counters = await readNftCounters('inet', FIREWALL_TABLE, { netns: ns.name });
    expect(counters.map((c) => c.name)).toEqual(['rule_1_web', DEFAULT_DENY_COUNTER]);
    const listed = String((await execIn(ns, ['nft', 'list', 'table', 'inet', FIREWALL_TABLE])).stdout);
    expect(listed).toContain('policy drop');
  });
});

describe('excluded prefixes', () => {
  it('knows when prefixes overlap', () => {
    expect(overlaps('198.19.10.0/24', '198.19.10.128/25')).toBe(true);
    expect(overlaps('198.19.10.128/25', '198.19.0.0/16')).toBe(true);
    expect(overlaps('198.19.10.0/25', '198.19.10.128/25')).toBe(false);
    expect(overlaps('198.19.10.0/24', 'fd00::/8')).toBe(false);
  });

  it('drops only the routes that overlap what the client uses', () => {
    expect(routesOutside(['198.19.10.0/24', '198.19.20.0/24', 'fd00:10::/64'], ['198.19.20.7/32', 'fd00::/8'])).toEqual({
      handed: ['198.19.10.0/24'],
      dropped: [
        { prefix: '198.19.20.0/24', excluded: '198.19.20.7/32' },
        { prefix: 'fd00:10::/64', excluded: 'fd00::/8' },
      ],
    });
  });
});
