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

/**
 * Upstream v1 `matchutils.MatchEndpoint`. Returns the candidates in route order, then NSE order; an NSE that
 * satisfies several routes appears several times, as upstream. An empty result means "no candidates": a match
 * whose source selector fits ends the search unless it has `fallthrough` set, and no fitting match yields [].
 */
export function matchEndpoints(
  requestLabels: Labels,
  ns: NetworkService,
  nses: readonly NetworkServiceEndpoint[],
): NetworkServiceEndpoint[] {
  const matches = ns.matches ?? [];
  if (matches.length === 0) return [...nses];
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
    // A match that only carries metadata (used for forwarder selection) places no constraint on the NSE.
    if (match.metadata != null && routes.length === 0 && candidates.length === 0) return [...nses];
    return candidates;
  }
  return [];
}
