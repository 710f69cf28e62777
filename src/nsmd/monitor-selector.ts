import type { Connection, MonitorScopeSelector, PathSegment } from '../api/types.js';

/**
 * Upstream's monitor scope: an empty selector matches everything; network_services filters on the
 * connection's service; path_segments must appear as a contiguous run of the connection's path, with
 * empty name/id/token fields acting as wildcards.
 */
export function selectorMatches(sel: MonitorScopeSelector, conn: Connection): boolean {
  if (sel.network_services.length > 0 && !sel.network_services.includes(conn.network_service)) return false;
  if (sel.path_segments.length === 0) return true;
  const segs = conn.path?.path_segments ?? [];
  for (let start = 0; start + sel.path_segments.length <= segs.length; start++) {
    if (sel.path_segments.every((want, i) => segmentMatches(want, segs[start + i]!))) return true;
  }
  return false;
}

function segmentMatches(want: PathSegment, have: PathSegment): boolean {
  return (!want.name || want.name === have.name) && (!want.id || want.id === have.id) && (!want.token || want.token === have.token);
}
