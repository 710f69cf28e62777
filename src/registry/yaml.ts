import { LineCounter, parseAllDocuments, type Document } from 'yaml';
import type { z } from 'zod';
import type { NetworkService } from '../api/types.js';
import { formatPath, NetworkServiceYamlError, type NetworkServiceYamlIssue } from './yaml-error.js';
import {
  API_VERSION_V1,
  API_VERSION_V1ALPHA1,
  bareDocument,
  describe,
  v1alpha1Document,
  v1Document,
} from './yaml-schema.js';

export { NetworkServiceYamlError, type NetworkServiceYamlIssue } from './yaml-error.js';
export {
  API_VERSION_V1,
  API_VERSION_V1ALPHA1,
  DEFAULT_PAYLOAD,
  MAX_LABEL_KEY_NAME_LENGTH,
  MAX_LABEL_VALUE_LENGTH,
  MAX_NAME_LENGTH,
  PAYLOADS,
} from './yaml-schema.js';

/**
 * Parses NetworkService definitions, one per YAML document (`---`); empty documents are skipped. Accepted forms:
 *  - `apiVersion: networkservicemesh.io/v1`, `kind: NetworkService`: upstream v1 CRD, snake_case spec;
 *  - `apiVersion: networkservicemesh.io/v1alpha1`: the v0.2 CRD (camelCase, `route`), converted with
 *    `fallthrough: true` on every match because v0.2 always tried the next match. v0.2 also skipped later matches
 *    with an empty source selector once a non-empty one had matched; v1 cannot express that, so it is not kept;
 *  - no apiVersion and no kind: a bare `{name, payload, matches}` in v1 snake_case.
 * A missing payload means DEFAULT_PAYLOAD (IP). All problems in all documents are reported together in one
 * NetworkServiceYamlError.
 */
export function parseNetworkServiceYaml(text: string): NetworkService[] {
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter });
  // A stream that is empty or only comments yields an EmptyStream, which is iterable but holds no documents.
  const list: Document.Parsed[] = Array.isArray(docs) ? docs : [];
  const issues: NetworkServiceYamlIssue[] = [];
  const services: NetworkService[] = [];

  list.forEach((doc, i) => {
    const document = i + 1;
    if (doc.errors.length > 0) {
      for (const err of doc.errors) {
        // The parser's own message repeats the position and appends a source excerpt; the issue carries the line.
        const message = err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
        issues.push({ document, path: '', message: `invalid YAML: ${message}`, line: err.linePos?.[0].line });
      }
      return;
    }
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) return;
    const result = schemaFor(value);
    if ('problem' in result) {
      issues.push({ document, ...result.problem, line: lineOf(doc, lineCounter, result.problem.segments) });
      return;
    }
    const parsed = result.schema.safeParse(value);
    if (parsed.success) {
      services.push(parsed.data);
      return;
    }
    for (const issue of parsed.error.issues) {
      issues.push({
        document,
        path: formatPath(issue.path),
        message: issue.message,
        line: lineOf(doc, lineCounter, issue.path),
      });
    }
  });

  if (issues.length > 0) throw new NetworkServiceYamlError(issues);
  return services;
}

type DocumentSchema = z.ZodType<NetworkService, z.ZodTypeDef, unknown>;
type Located = { path: string; message: string; segments: (string | number)[] };

function schemaFor(value: unknown): { schema: DocumentSchema } | { problem: Located } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return {
      problem: { path: '', segments: [], message: `expected a NetworkService mapping, got ${describe(value)}` },
    };
  }
  const { apiVersion, kind } = value as Record<string, unknown>;
  if (apiVersion === undefined && kind === undefined) return { schema: bareDocument };
  if (apiVersion === API_VERSION_V1) return { schema: v1Document };
  if (apiVersion === API_VERSION_V1ALPHA1) return { schema: v1alpha1Document };
  return {
    problem: {
      path: 'apiVersion',
      segments: apiVersion === undefined ? [] : ['apiVersion'],
      message:
        `expected ${JSON.stringify(API_VERSION_V1)} or ${JSON.stringify(API_VERSION_V1ALPHA1)} ` +
        `(or neither apiVersion nor kind, for a bare {name, payload, matches}); got ${describe(apiVersion)}`,
    },
  };
}

/** The line of the deepest node on `path` that exists, so even a missing field points near its parent. */
function lineOf(doc: Document.Parsed, lc: LineCounter, path: readonly PropertyKey[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === 'object' && node.range) return lc.linePos(node.range[0]).line;
  }
  return undefined;
}
