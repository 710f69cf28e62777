import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { globToRegExp as glob } from '../util/glob.js';

/**
 * Authorization policy: which SPIFFE IDs may request which network services, register which endpoint
 * names, and monitor connections. Rules are tried in order and the first that matches the action, the
 * resource and the caller decides. Once a policy has rules for an action, anything they do not allow is
 * denied; an action without rules keeps the defaults (any authenticated identity may request, endpoint
 * names belong to their first registrant, monitors see only the caller's own connections).
 */
export type Action = 'request' | 'register' | 'monitor';

const ruleSchema = z
  .object({
    action: z.enum(['request', 'register', 'monitor']),
    effect: z.enum(['allow', 'deny']).default('allow'),
    /** Globs over the SPIFFE ID of the caller ("*" matches any run of characters). */
    spiffeIds: z.array(z.string().min(1)).min(1),
    /** Globs over network service names (request, monitor) or endpoint names (register); default: all. */
    resources: z.array(z.string().min(1)).default(['*']),
  })
  .strict();

const policySchema = z.object({ rules: z.array(ruleSchema).default([]) }).strict();

export type Rule = z.infer<typeof ruleSchema>;

export interface Decision {
  allowed: boolean;
  /** Which rule decided, in words, for the PERMISSION_DENIED message and the log. */
  reason: string;
}

export class PolicyError extends Error {
  override name = 'PolicyError';
}

export class Policy {
  private readonly compiled: { rule: Rule; index: number; ids: RegExp[]; resources: RegExp[] }[];

  constructor(readonly rules: Rule[] = []) {
    this.compiled = rules.map((rule, index) => ({ rule, index, ids: rule.spiffeIds.map(glob), resources: rule.resources.map(glob) }));
  }

  static parse(text: string, source = 'policy'): Policy {
    let doc: unknown;
    try {
      doc = parseYaml(text) ?? {};
    } catch (e) {
      throw new PolicyError(`${source}: not valid YAML: ${(e as Error).message}`);
    }
    const r = policySchema.safeParse(doc);
    if (!r.success) {
      const issues = r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ');
      throw new PolicyError(
        `${source}: ${issues}. Expected {rules: [{action: request|register|monitor, effect: allow|deny, spiffeIds: [glob], resources: [glob]}]}`,
      );
    }
    return new Policy(r.data.rules);
  }

  static load(file: string): Policy {
    return Policy.parse(fs.readFileSync(file, 'utf8'), file);
  }

  /** Whether any rule speaks about this action (then the action is default-deny). */
  governs(action: Action): boolean {
    return this.rules.some((r) => r.action === action);
  }

  decide(action: Action, spiffeId: string, resource: string): Decision | undefined {
    for (const c of this.compiled) {
      if (c.rule.action !== action) continue;
      if (!c.ids.some((re) => re.test(spiffeId)) || !c.resources.some((re) => re.test(resource))) continue;
      const what = `rule ${c.index + 1} (${c.rule.effect} ${action} of [${c.rule.resources.join(', ')}] for [${c.rule.spiffeIds.join(', ')}])`;
      return { allowed: c.rule.effect === 'allow', reason: what };
    }
    if (this.governs(action)) return { allowed: false, reason: `no ${action} rule allows it (rules for ${action} are default-deny)` };
    return undefined;
  }
}
