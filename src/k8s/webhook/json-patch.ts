/**
 * The part of RFC 6902 JSON Patch the webhook emits: "add" operations, addressed with RFC 6901 JSON Pointers.
 */

export interface AddOperation {
  op: 'add';
  path: string;
  value: unknown;
}

/** RFC 6901 §3: "~" is written "~0" and "/" is written "~1" ("~" first, so that "~1" in a key stays literal). */
export function escapePointerToken(token: string): string {
  return token.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** A JSON Pointer from unescaped reference tokens: pointer('metadata', 'annotations', 'a/b') = /metadata/annotations/a~1b. */
export function pointer(...tokens: (string | number)[]): string {
  return tokens.map((t) => `/${escapePointerToken(String(t))}`).join('');
}

/**
 * Adds `items` to the array at `tokens`: the whole array when the object has none (RFC 6902 cannot append to a
 * member that does not exist), otherwise each item at `at` — an index, or "-" for the end.
 */
export function addToArray(existing: readonly unknown[] | undefined, tokens: string[], items: unknown[], at: number | '-' = '-'): AddOperation[] {
  if (items.length === 0) return [];
  if (existing === undefined) return [{ op: 'add', path: pointer(...tokens), value: items }];
  // Inserting at a fixed index in reverse keeps the items in their given order.
  const ordered = at === '-' ? items : [...items].reverse();
  return ordered.map((value) => ({ op: 'add', path: pointer(...tokens, at), value }));
}

/** Sets string entries of a map (annotations, labels), creating the map when the object has none. */
export function addToMap(existing: Readonly<Record<string, string>> | undefined, tokens: string[], entries: Record<string, string>): AddOperation[] {
  if (Object.keys(entries).length === 0) return [];
  if (existing === undefined) return [{ op: 'add', path: pointer(...tokens), value: { ...entries } }];
  // "add" on an existing member replaces its value (RFC 6902 §4.1), which is what a label we own needs.
  return Object.entries(entries).map(([k, value]) => ({ op: 'add', path: pointer(...tokens, k), value }));
}
