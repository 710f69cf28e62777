import { randomUUID } from 'node:crypto';
import type { Connection, Path } from '../../api/types.js';
import { invalidArgument } from '../../util/errors.js';
import type { BaseCloseState, BaseRequestState, Element } from '../types.js';

/**
 * Upstream's path rules: each hop owns one segment; Connection.id is that segment's id at each hop,
 * and the caller gets its own index and id back.
 *
 * `adopt` lets a hop recognise a repeat Request that lost its path (a client restarted with the same
 * connection id): it returns the segment id this hop already uses for that caller id, so the repeat is a
 * refresh rather than a second connection.
 */
export function updatePath<R extends BaseRequestState, C extends BaseCloseState>(
  name: string,
  adopt: (callerId: string) => string | undefined = () => undefined,
): Element<R, C> {
  return {
    name: 'update-path',
    async request(st, next) {
      const conn = st.request.connection;
      const path: Path = conn.path ?? { index: 0, path_segments: [] };
      conn.path = path;
      const callerIndex = path.index;
      const callerId = conn.id;
      if (path.path_segments.length === 0) {
        path.index = 0;
        path.path_segments.push(segment(name, conn.id || randomUUID()));
      } else {
        const current = path.path_segments[path.index];
        if (!current) throw invalidArgument(`path index ${path.index} is outside the path (${path.path_segments.length} segments)`);
        if (current.name !== name) {
          if (conn.id && current.id !== conn.id) {
            throw invalidArgument(`connection id "${conn.id}" does not match the id "${current.id}" of path segment ${path.index}`);
          }
          path.index += 1;
          const mine = path.path_segments[path.index];
          if (!mine) path.path_segments.push(segment(name, adopt(current.id) ?? randomUUID()));
          else if (mine.name !== name) path.path_segments[path.index] = segment(name, adopt(current.id) ?? randomUUID());
          // Later hops' segments belong to the previous attempt; the next hop rebuilds its own.
        }
      }
      conn.id = path.path_segments[path.index]!.id;
      const res = await next.request(st);
      restoreCaller(res, callerIndex, callerId);
      return res;
    },
    close: (st, next) => next.close(st),
  };
}

function segment(name: string, id: string) {
  return { name, id, token: '', expires: null, metrics: {} };
}

/** Gives the caller back its own view: its index and its segment's id. */
export function restoreCaller(conn: Connection, index: number, fallbackId: string): void {
  if (!conn.path) return;
  conn.path.index = index;
  conn.id = conn.path.path_segments[index]?.id ?? fallbackId;
}
