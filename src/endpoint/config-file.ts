import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { parseCidr } from '../dataplane/ip.js';

/** A config file an endpoint reads at start (YAML, so JSON too), checked against `schema`; every problem in one message. */
export function loadConfigFile<S extends z.ZodTypeAny>(file: string, schema: S, expected: string): z.infer<S> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new Error(`${file}: not valid YAML or JSON: ${(e as Error).message}`);
  }
  const r = schema.safeParse(doc ?? {});
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ');
    throw new Error(`${file}: ${issues}. Expected ${expected}`);
  }
  return r.data;
}

/** zod refinement message for a CIDR, or undefined when `s` is one. */
export function cidrProblem(s: string): string | undefined {
  try {
    parseCidr(s);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}
