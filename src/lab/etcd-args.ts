/**
 * The etcd command line the demo, the tests and the benchmarks start (Debian's etcd-server). Short heartbeat
 * and election timers make a single member ready in tens of milliseconds instead of most of a second.
 */
export interface EtcdMember {
  name: string;
  dataDir: string;
  /** e.g. http://198.18.0.254:2379 */
  clientUrl: string;
  /** e.g. http://127.0.0.1:2380 */
  peerUrl: string;
  /** `name=peerUrl` of every member; default this member alone. */
  initialCluster?: string;
  heartbeatMs?: number;
  electionMs?: number;
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
}

export function etcdArgs(m: EtcdMember): string[] {
  return [
    '--name', m.name,
    '--data-dir', m.dataDir,
    '--listen-client-urls', m.clientUrl,
    '--advertise-client-urls', m.clientUrl,
    '--listen-peer-urls', m.peerUrl,
    '--initial-advertise-peer-urls', m.peerUrl,
    '--initial-cluster', m.initialCluster ?? `${m.name}=${m.peerUrl}`,
    '--initial-cluster-state', 'new',
    '--heartbeat-interval', String(m.heartbeatMs ?? 10),
    '--election-timeout', String(m.electionMs ?? 50),
    '--log-level', m.logLevel ?? 'warn',
    '--logger', 'zap',
  ];
}
