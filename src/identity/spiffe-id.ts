/**
 * SPIFFE IDs as the SPIFFE ID standard defines them: spiffe://<trust-domain>/<path>.
 * Parsing is strict on purpose: an ID is compared as a string everywhere (authorisation, token
 * audiences), so two spellings of one identity must not both be accepted.
 */

export class SpiffeIdError extends Error {
  constructor(
    readonly input: string,
    readonly reason: string,
  ) {
    super(`"${input}" is not a valid SPIFFE ID: ${reason}`);
    this.name = 'SpiffeIdError';
  }
}

export interface ParsedSpiffeId {
  /** The whole ID, exactly as given (already canonical when it parses). */
  id: string;
  trustDomain: string;
  /** "" or "/seg/seg". */
  path: string;
}

const SCHEME = 'spiffe://';
const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[a-zA-Z0-9._-]+$/;
/** URI SANs longer than this are refused by common X.509 stacks; the standard sets the same limit. */
const MAX_ID_BYTES = 2048;
const MAX_TRUST_DOMAIN_BYTES = 255;

/** Why a trust domain name is invalid, or undefined when it is valid. */
function trustDomainProblem(td: string): string | undefined {
  if (td === '') return 'the trust domain is empty';
  if (td.length > MAX_TRUST_DOMAIN_BYTES) return `the trust domain is longer than ${MAX_TRUST_DOMAIN_BYTES} characters`;
  if (td.includes('@')) return 'userinfo (user@) is not allowed';
  if (td.includes(':')) return 'a port is not allowed';
  if (td !== td.toLowerCase()) return 'the trust domain must be lower-case';
  if (!TRUST_DOMAIN_CHARS.test(td)) return 'the trust domain may contain only a-z, 0-9, ".", "-" and "_"';
  return undefined;
}

export function parseSpiffeId(input: string): ParsedSpiffeId {
  const fail = (reason: string): never => {
    throw new SpiffeIdError(input, reason);
  };
  if (typeof input !== 'string' || input === '') fail('it is empty');
  if (Buffer.byteLength(input) > MAX_ID_BYTES) fail(`it is longer than ${MAX_ID_BYTES} bytes`);
  if (!input.startsWith(SCHEME)) {
    fail(input.toLowerCase().startsWith(SCHEME) ? 'the scheme must be lower-case "spiffe://"' : 'it must start with "spiffe://"');
  }
  if (input.includes('?')) fail('a query is not allowed');
  if (input.includes('#')) fail('a fragment is not allowed');
  if (input.includes('%')) fail('percent-encoding is not allowed');
  const rest = input.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash);
  const tdProblem = trustDomainProblem(trustDomain);
  if (tdProblem) fail(tdProblem);
  if (path !== '') {
    if (path.endsWith('/')) fail('the path must not end with "/"');
    for (const segment of path.slice(1).split('/')) {
      if (segment === '') fail('the path has an empty segment ("//")');
      if (segment === '.' || segment === '..') fail('the path must not contain "." or ".." segments');
      if (!SEGMENT_CHARS.test(segment)) fail(`path segment "${segment}" may contain only a-z, A-Z, 0-9, ".", "-" and "_"`);
    }
  }
  return { id: input, trustDomain, path };
}

export function isSpiffeId(input: string): boolean {
  try {
    parseSpiffeId(input);
    return true;
  } catch {
    return false;
  }
}

/** The trust domain name ("example.org") of a SPIFFE ID. */
export function trustDomainOf(spiffeId: string): string {
  return parseSpiffeId(spiffeId).trustDomain;
}

/**
 * Accepts a trust domain as a name ("example.org") or as its ID ("spiffe://example.org") and returns
 * the name; the Workload API keys bundles by ID, configuration usually says the name.
 */
export function parseTrustDomain(input: string): string {
  const name = input.startsWith(SCHEME) ? input.slice(SCHEME.length) : input;
  const problem = trustDomainProblem(name);
  if (problem) throw new Error(`"${input}" is not a valid trust domain: ${problem}`);
  return name;
}

/** The trust domain ID, spiffe://<td>: the form the Workload API uses as a bundle key and the CA's URI SAN. */
export function trustDomainId(trustDomain: string): string {
  return SCHEME + parseTrustDomain(trustDomain);
}

/** Builds spiffe://<td>/<seg>/<seg>..., refusing segments that would not parse back to the same ID. */
export function spiffeIdFromSegments(trustDomain: string, ...segments: string[]): string {
  for (const s of segments) {
    // Checked one by one: "a/b" as one segment would silently become two.
    if (s === '' || s === '.' || s === '..' || !SEGMENT_CHARS.test(s)) {
      throw new Error(`"${s}" cannot be a SPIFFE ID path segment: use a-z, A-Z, 0-9, ".", "-" and "_", not only dots`);
    }
  }
  const id = `${SCHEME}${parseTrustDomain(trustDomain)}${segments.map((s) => '/' + s).join('')}`;
  parseSpiffeId(id);
  return id;
}

/** Upstream NSM's SPIRE template (ClusterSPIFFEID): spiffe://<td>/ns/<namespace>/pod/<pod>. */
export function podId(trustDomain: string, namespace: string, pod: string): string {
  return spiffeIdFromSegments(trustDomain, 'ns', namespace, 'pod', pod);
}
