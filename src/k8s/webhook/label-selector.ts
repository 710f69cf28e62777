/**
 * Kubernetes label selectors in their string form (as `kubectl -l` takes them): comma separated requirements
 * `key`, `!key`, `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`. All must hold.
 */

type Requirement =
  | { key: string; op: 'exists' | 'absent' }
  | { key: string; op: 'in' | 'notin'; values: string[] };

export interface LabelSelector {
  /** The selector as given, for messages. */
  text: string;
  matches(labels: Readonly<Record<string, string>>): boolean;
}

const FORMS = '"key", "!key", "key=value", "key!=value", "key in (a,b)" or "key notin (a,b)", comma separated';
const NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

export class LabelSelectorError extends Error {}

function checkKey(key: string, where: string): string {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  const ok = NAME.test(name) && name.length <= 63 && (prefix === undefined || (DNS_SUBDOMAIN.test(prefix) && prefix.length <= 253));
  if (!ok) throw new LabelSelectorError(`${where}: "${key}" is not a label key ([prefix/]name, name up to 63 letters, digits, "-", "_", ".")`);
  return key;
}

function checkValue(value: string, where: string): string {
  if (value !== '' && !(NAME.test(value) && value.length <= 63)) {
    throw new LabelSelectorError(`${where}: "${value}" is not a label value (up to 63 letters, digits, "-", "_", ".")`);
  }
  return value;
}

/** Splits at commas that are not inside a parenthesised value list. */
function splitRequirements(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim());
}

function parseRequirement(part: string, text: string): Requirement {
  const where = `label selector "${text}"`;
  const fail = () => new LabelSelectorError(`label selector "${text}": cannot read "${part}"; accepted: ${FORMS}`);
  if (part === '') throw fail();
  let m = /^!\s*([^\s=!(),]+)$/.exec(part);
  if (m) return { key: checkKey(m[1]!, where), op: 'absent' };
  m = /^([^\s=!(),]+)$/.exec(part);
  if (m) return { key: checkKey(m[1]!, where), op: 'exists' };
  m = /^([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)$/.exec(part);
  if (m) return { key: checkKey(m[1]!, where), op: m[2] === '!=' ? 'notin' : 'in', values: [checkValue(m[3]!, where)] };
  m = /^([^\s=!(),]+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(part);
  if (m) {
    const values = m[3]!.split(',').map((v) => checkValue(v.trim(), where));
    return { key: checkKey(m[1]!, where), op: m[2] as 'in' | 'notin', values };
  }
  throw fail();
}

/** Throws when `key: value` cannot be a Kubernetes label; `where` starts the message. */
export function checkLabel(key: string, value: string, where: string): void {
  checkKey(key, where);
  checkValue(value, where);
}

export function parseLabelSelector(text: string): LabelSelector {
  const reqs = splitRequirements(text.trim()).map((p) => parseRequirement(p, text));
  return {
    text,
    matches(labels) {
      return reqs.every((r) => {
        const has = Object.hasOwn(labels, r.key);
        switch (r.op) {
          case 'exists':
            return has;
          case 'absent':
            return !has;
          case 'in':
            return has && r.values.includes(labels[r.key]!);
          case 'notin':
            // As in Kubernetes: a missing label satisfies "!=" and "notin".
            return !has || !r.values.includes(labels[r.key]!);
        }
      });
    },
  };
}
