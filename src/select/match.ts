import type { NetworkService, NetworkServiceEndpoint } from '../api/types.js';
import { renderTemplate } from './template.js';

type Labels = Readonly<Record<string, string>>;

/**
 * Upstream `matchutils.IsSubset`: every (k, v) of `subset` is in `labels`, where v is compared first literally and
 * then rendered as a template against `vars`. The length pre-check and the "missing key reads as empty string"
 * rule are kept because they decide edge cases (a selector value of "" matches an absent key).
 */
export function isSubset(labels: Labels | undefined, subset: Labels | undefined, vars: Labels): boolean {
  const a = labels ?? {};
  const b = subset ?? {};
  if (Object.keys(a).length < Object.keys(b).length) return false;
  for (const [k, v] of Object.entries(b)) {
    const actual = Object.prototype.hasOwnProperty.call(a, k) ? a[k] : '';
    if (actual !== v && actual !== renderTemplate(v, vars)) return false;
  }
  return true;
}

/** The endpoints a Request may use, and the labels of the match that chose them (its `metadata`). */
export interface Selection {
  candidates: NetworkServiceEndpoint[];
  /** `metadata.labels` of the match that applied; empty when none applied or it carried none. */
  matchLabels: Record<string, string>;
}

/**
 * Upstream v1 `matchutils.MatchEndpoint`. Returns the candidates in route order, then NSE order; an NSE that
 * satisfies several routes appears several times, as upstream. An empty result means "no candidates": a match
 * whose source selector fits ends the search unless it has `fallthrough` set, and no fitting match yields [].
 */
export function selectEndpoints(
  requestLabels: Labels,
  ns: NetworkService,
  nses: readonly NetworkServiceEndpoint[],
): Selection {
  const matches = ns.matches ?? [];
  if (matches.length === 0) return { candidates: [...nses], matchLabels: {} };
  for (const match of matches) {
    if (!isSubset(requestLabels, match.source_selector, requestLabels)) continue;
    const routes = match.routes ?? [];
    const candidates: NetworkServiceEndpoint[] = [];
    for (const route of routes) {
      for (const nse of nses) {
        const labels = nse.network_service_labels?.[ns.name]?.labels;
        if (isSubset(labels, route.destination_selector, requestLabels)) candidates.push(nse);
      }
    }
    if (match.fallthrough && candidates.length === 0) continue;
    const matchLabels = { ...(match.metadata?.labels ?? {}) };
    // A match that only carries metadata (used for forwarder selection) places no constraint on the NSE.
    if (match.metadata != null && routes.length === 0 && candidates.length === 0) return { candidates: [...nses], matchLabels };
    return { candidates, matchLabels };
  }
  return { candidates: [], matchLabels: {} };
}

export function matchEndpoints(
  requestLabels: Labels,
  ns: NetworkService,
  nses: readonly NetworkServiceEndpoint[],
): NetworkServiceEndpoint[] {
  return selectEndpoints(requestLabels, ns, nses).candidates;
}
