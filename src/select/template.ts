/**
 * Selector values in a NetworkService are Go `text/template` strings executed against the request's labels
 * (upstream `matchutils.processLabels`). Running Go templates in full is out of scope; this renders the subset
 * that selectors use and treats everything else as a template error, which upstream answers by comparing the
 * literal value. Supported, with Go's behaviour:
 *   - plain text, copied through;
 *   - `{{.key}}` / `{{ .key }}`: the label value; a missing key prints "<no value>" (Go's default for maps);
 *   - `{{.}}`: the whole map, printed as Go's fmt does (`map[a:1 b:2]`, keys sorted);
 *   - `{{/* comment *\/}}` and the trim markers `{{- ` / ` -}}`.
 * Anything else (functions, pipelines, `if`/`range`, variables, literals, `.a.b` chains on a string map) and any
 * malformed action (unclosed `{{`, empty action) make renderTemplate return the input unchanged.
 */

const OPEN = '{{';
const CLOSE = '}}';
/** Go's template lexer accepts these after a left trim marker and before a right one. */
const TRIM_SPACE = /[ \t\r\n]/;
/** Go identifiers; map keys are only reachable through field syntax when they are identifiers. */
const FIELD = /^\.([\p{L}_][\p{L}\p{N}_]*)$/u;
export const NO_VALUE = '<no value>';

class TemplateError extends Error {}

/** Renders `text` against `vars`; on any parse or execution error returns `text` itself, as upstream does. */
export function renderTemplate(text: string, vars: Readonly<Record<string, string>>): string {
  if (!text.includes(OPEN)) return text;
  try {
    return execute(text, vars);
  } catch (e) {
    if (e instanceof TemplateError) return text;
    throw e;
  }
}

function execute(text: string, vars: Readonly<Record<string, string>>): string {
  let out = '';
  let pos = 0;
  let trimNextText = false;
  while (pos <= text.length) {
    const open = text.indexOf(OPEN, pos);
    let chunk = open === -1 ? text.slice(pos) : text.slice(pos, open);
    if (trimNextText) chunk = chunk.replace(/^[ \t\r\n]+/, '');
    if (open === -1) return out + chunk;

    let inner = open + OPEN.length;
    if (text[inner] === '-' && TRIM_SPACE.test(text[inner + 1] ?? '')) {
      chunk = chunk.replace(/[ \t\r\n]+$/, '');
      inner += 2;
    }
    out += chunk;

    const action = readAction(text, inner);
    if (action.body !== undefined) out += evaluate(action.body, vars);
    trimNextText = action.trimRight;
    pos = action.end;
  }
  return out;
}

interface Action {
  /** undefined for a comment, which renders nothing. */
  body: string | undefined;
  trimRight: boolean;
  /** Index just past the closing delimiter. */
  end: number;
}

function readAction(text: string, start: number): Action {
  // Comments may contain "}}", so they are delimited by "*/" rather than by the first closing braces.
  if (text.startsWith('/*', start)) {
    const endComment = text.indexOf('*/', start + 2);
    if (endComment === -1) throw new TemplateError('unclosed comment');
    let after = endComment + 2;
    let trimRight = false;
    if (TRIM_SPACE.test(text[after] ?? '') && text[after + 1] === '-') {
      trimRight = true;
      after += 2;
    }
    if (!text.startsWith(CLOSE, after)) throw new TemplateError('comment ends before closing delimiter');
    return { body: undefined, trimRight, end: after + CLOSE.length };
  }
  const close = text.indexOf(CLOSE, start);
  if (close === -1) throw new TemplateError('unclosed action');
  let body = text.slice(start, close);
  let trimRight = false;
  if (body.length >= 2 && body.endsWith('-') && TRIM_SPACE.test(body[body.length - 2]!)) {
    trimRight = true;
    body = body.slice(0, -2);
  }
  return { body: body.trim(), trimRight, end: close + CLOSE.length };
}

function evaluate(body: string, vars: Readonly<Record<string, string>>): string {
  if (body === '') throw new TemplateError('missing value for command');
  if (body === '.') return formatGoMap(vars);
  const field = FIELD.exec(body);
  if (!field) throw new TemplateError(`unsupported action {{${body}}}`);
  const key = field[1]!;
  return Object.prototype.hasOwnProperty.call(vars, key) ? vars[key]! : NO_VALUE;
}

function formatGoMap(vars: Readonly<Record<string, string>>): string {
  const keys = Object.keys(vars).sort();
  return `map[${keys.map((k) => `${k}:${vars[k]}`).join(' ')}]`;
}
