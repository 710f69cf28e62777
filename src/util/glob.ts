/** "*" matches any run of characters, "?" one character; everything else is literal. */
export function globToRegExp(pattern: string): RegExp {
  const esc = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${esc}$`);
}

/** A predicate that is true when any of the globs matches. */
export function globMatcher(patterns: string[]): (s: string) => boolean {
  const res = patterns.map(globToRegExp);
  return (s) => res.some((re) => re.test(s));
}
