import { z } from 'zod';
import { parseCidr } from '../../src/dataplane/ip.js';
import { cidrProblem } from '../../src/endpoint/config-file.js';

export const FIREWALL_TABLE = 'nsmesh_firewall';
export const DEFAULT_DENY_COUNTER = 'default_deny';

const cidr = z.string().superRefine((s, ctx) => {
  const p = cidrProblem(s);
  if (p) ctx.addIssue({ code: z.ZodIssueCode.custom, message: p });
});
const port = z.union([
  z.number().int().min(1).max(65535),
  z.string().regex(/^\d{1,5}-\d{1,5}$/, 'a port range is written "from-to", e.g. "8000-8080"').refine((r) => {
    const [a, b] = r.split('-').map(Number) as [number, number];
    return a >= 1 && b <= 65535 && a < b;
  }, 'a port range needs 1 <= from < to <= 65535'),
]);

const ruleSchema = z
  .object({
    /** Shown in logs and in the rule's counter name. */
    name: z.string().regex(/^[a-z][a-z0-9-]{0,30}$/, 'a name is 1 to 31 characters [a-z0-9-], starting with a letter').optional(),
    action: z.enum(['allow', 'deny']),
    protocol: z.enum(['tcp', 'udp', 'icmp']),
    /** Destination ports (tcp and udp only); any port when absent. */
    ports: z.array(port).min(1).optional(),
    /** Destination prefixes; any destination when absent. */
    destinations: z.array(cidr).min(1).optional(),
    /** Source prefixes (the clients' addresses); any source when absent. */
    sources: z.array(cidr).min(1).optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.ports && r.protocol === 'icmp') ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'icmp has no ports', path: ['ports'] });
    if (r.sources && r.destinations && familiesOf(r).length === 0) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'sources and destinations share no address family, so the rule can never match' });
    }
  });

export const firewallConfigSchema = z.object({ rules: z.array(ruleSchema).default([]) }).strict();
export type FirewallRule = z.infer<typeof ruleSchema>;
export type FirewallConfig = z.infer<typeof firewallConfigSchema>;
export const FIREWALL_CONFIG_SHAPE =
  '{rules: [{name?, action: allow|deny, protocol: tcp|udp|icmp, ports?: [80, "8000-8080"], destinations?: [cidr], sources?: [cidr]}]}';

type Fam = 4 | 6;
const famOf = (c: string): Fam => parseCidr(c).family;
const ipx = (f: Fam) => (f === 4 ? 'ip' : 'ip6');

/** The address families a rule can match: those its prefixes name, both when it names none. */
function familiesOf(r: Pick<FirewallRule, 'sources' | 'destinations'>): Fam[] {
  return ([4, 6] as const).filter((f) => (!r.sources || r.sources.some((c) => famOf(c) === f)) && (!r.destinations || r.destinations.some((c) => famOf(c) === f)));
}

export function counterName(r: FirewallRule, index: number): string {
  return `rule_${index + 1}${r.name ? `_${r.name.replace(/-/g, '_')}` : ''}`;
}

/** How a rule reads in logs and in the demo's output. */
export function describeRule(r: FirewallRule): string {
  const ports = r.ports ? ` port ${r.ports.join(',')}` : '';
  const to = r.destinations ? ` to ${r.destinations.join(',')}` : '';
  const from = r.sources ? ` from ${r.sources.join(',')}` : '';
  return `${r.action} ${r.protocol}${ports}${to}${from}`;
}

function protoMatch(r: FirewallRule, f: Fam | undefined): string {
  if (r.protocol === 'icmp') return f === 4 ? 'meta l4proto icmp' : f === 6 ? 'meta l4proto ipv6-icmp' : 'meta l4proto { icmp, ipv6-icmp }';
  return r.ports ? `${r.protocol} dport { ${r.ports.join(', ')} }` : `meta l4proto ${r.protocol}`;
}

/**
 * The nftables table enforcing `rules` on traffic forwarded from client-facing interfaces (`clients*`) to
 * onward ones (`onward*`): replies to allowed traffic pass, the first matching rule decides the rest, and
 * whatever no rule allows is dropped — in either direction. Every rule and the default deny count what they
 * decided in named counters, which show a rule being hit.
 */
export function firewallRuleset(rules: FirewallRule[], ifaces: { clients: string; onward: string }): string {
  const lines: string[] = [];
  const path = `iifname "${ifaces.clients}*" oifname "${ifaces.onward}*"`;
  rules.forEach((r, i) => {
    const counter = `counter name "${counterName(r, i)}" ${r.action === 'allow' ? 'accept' : 'drop'}`;
    if (!r.sources && !r.destinations) {
      lines.push(`${path} ${protoMatch(r, undefined)} ${counter}`);
      return;
    }
    for (const f of familiesOf(r)) {
      const src = r.sources?.filter((c) => famOf(c) === f);
      const dst = r.destinations?.filter((c) => famOf(c) === f);
      const addr = [src ? `${ipx(f)} saddr { ${src.join(', ')} }` : '', dst ? `${ipx(f)} daddr { ${dst.join(', ')} }` : ''].filter(Boolean).join(' ');
      lines.push(`${path} ${addr} ${protoMatch(r, f)} ${counter}`);
    }
  });
  return [
    ...rules.map((r, i) => `  counter ${counterName(r, i)} { }`),
    `  counter ${DEFAULT_DENY_COUNTER} { }`,
    '  chain forward {',
    '    type filter hook forward priority filter; policy drop;',
    '    ct state established,related accept',
    ...lines.map((l) => `    ${l}`),
    `    counter name "${DEFAULT_DENY_COUNTER}" drop`,
    '  }',
    '',
  ].join('\n');
}
