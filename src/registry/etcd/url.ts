const EXPECTED = 'expected etcd://host:port[,host:port...]';

/**
 * `etcd://host:port[,host:port...]` → the client endpoints of one etcd cluster. Only plain host:port lists are
 * accepted: a path, query, credentials or a missing port would otherwise be silently ignored or misread as a
 * host name, and the registry would then fail much later with a less obvious connection error.
 */
export function parseEtcdRegistryUrl(url: string): { endpoints: string[] } {
  const fail = (why: string) => new Error(`invalid etcd registry URL ${JSON.stringify(url)}: ${why}; ${EXPECTED}`);
  const m = /^etcd:\/\/(.*)$/i.exec(url.trim());
  if (!m) throw fail('the scheme must be etcd://');
  let rest = m[1]!;
  if (rest.endsWith('/')) rest = rest.slice(0, -1);
  if (rest === '') throw fail('no endpoints given');
  const endpoints = rest.split(',').map((part) => {
    const why = hostPortProblem(part);
    if (why) throw fail(why);
    return part;
  });
  return { endpoints };
}

/** Why `s` is not a usable host:port, or undefined when it is. */
export function hostPortProblem(s: string): string | undefined {
  if (s === '') return 'empty endpoint (stray comma?)';
  if (/[/?#@\s]/.test(s)) return `endpoint ${JSON.stringify(s)} contains a path, query, credentials or spaces`;
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):([0-9]*)$/.exec(s);
  if (!m) {
    const what = `endpoint ${JSON.stringify(s)}`;
    return s.includes(':') ? `${what} is not host:port` : `${what} has no port`;
  }
  const port = m[3]!;
  if (port === '') return `endpoint ${JSON.stringify(s)} has no port`;
  const n = Number(port);
  if (!Number.isInteger(n) || n < 1 || n > 65535) return `endpoint ${JSON.stringify(s)} has port out of range`;
  return undefined;
}
