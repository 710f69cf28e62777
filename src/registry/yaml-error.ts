export interface NetworkServiceYamlIssue {
  /** 1-based position of the document in a multi-document stream. */
  document: number;
  /** Field path inside the document, e.g. `spec.matches[0].routes`; empty for the document itself. */
  path: string;
  /** What is wrong and what is accepted. */
  message: string;
  /** 1-based source line, when the offending node could be located. */
  line?: number;
}

export function formatIssue(issue: NetworkServiceYamlIssue): string {
  const where = issue.path === '' ? `document ${issue.document}` : `document ${issue.document}: ${issue.path}`;
  return `${where}: ${issue.message}${issue.line === undefined ? '' : ` (line ${issue.line})`}`;
}

/** Every problem found in the input, one per line in `message`, so a user can fix them all in one go. */
export class NetworkServiceYamlError extends Error {
  override name = 'NetworkServiceYamlError';

  constructor(readonly issues: readonly NetworkServiceYamlIssue[]) {
    super(issues.map(formatIssue).join('\n'));
  }
}

/** `spec.matches[0]["app.kubernetes.io/name"]`: readable for identifiers, unambiguous for anything else. */
export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}
