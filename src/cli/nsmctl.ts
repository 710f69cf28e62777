#!/usr/bin/env node
import fs from 'node:fs';
import { ApiClient } from '../api/grpc.js';
import type { Connection } from '../api/types.js';
import { DEFAULT_NSM_SOCKET } from '../nsmd/config.js';
import { parseNetworkServiceYaml } from '../registry/yaml.js';
import { messageOf } from '../util/errors.js';
import { bool, dur, str, UsageError } from '../util/settings.js';
import { openTransport, type Transport } from '../identity/transport.js';
import { createLogger } from '../util/log.js';
import { connectionsTable } from './connection-view.js';
import { runMain } from './run-main.js';
import { formatTable } from './table.js';

const settings = {
  connectTo: str('NSM_CONNECT_TO', 'connect-to', DEFAULT_NSM_SOCKET, "nsmd's local API"),
  output: str('NSM_OUTPUT', 'output', 'table', 'table or json'),
  timeout: dur('NSM_REQUEST_TIMEOUT', 'timeout', '10s', 'deadline of each call to nsmd'),
  insecure: bool('NSM_INSECURE', 'insecure', false, 'development only: talk to an nsmd running without identity'),
  workloadApi: str('SPIFFE_ENDPOINT_SOCKET', 'spiffe-endpoint-socket', 'unix:///run/spire/sockets/agent.sock', "SPIFFE Workload API giving nsmctl its X.509-SVID (an admin identity sees everything)"),
};

const USAGE = `nsmctl <command> [flags]

commands:
  apply -f FILE                  register the NetworkServices in a YAML file (v1 or v0.2 form; - reads stdin)
  get services [NAME]            NetworkServices (NAME@domain: asked of that domain through nsmd)
  get endpoints [SERVICE]        endpoints, all or those serving SERVICE (SERVICE@domain: that domain's)
  get connections
  delete service NAME            unregister a NetworkService
  close ID                       close a connection (its id, or any path segment id)`;

await runMain({
  usage: USAGE,
  settings,
  async main({ values: v, positional }) {
    if (v.output !== 'table' && v.output !== 'json') throw new UsageError(`--output must be table or json, not "${v.output}"`);
    const [cmd, ...args] = positional;
    if (!cmd || !['apply', 'get', 'delete', 'close'].includes(cmd)) {
      throw new UsageError(cmd ? `unknown command "${cmd}"\n\nusage: ${USAGE}` : `usage: ${USAGE}`);
    }
    const transport = await openTransport({ insecure: v.insecure, workloadApi: v.workloadApi, component: 'nsmctl', log: createLogger('nsmctl', 'ERROR') });
    try {
      await run(cmd, args);
    } finally {
      transport.close();
    }
    async function run(cmd: string | undefined, args: string[]): Promise<void> {
      const opts = { timeoutMs: v.timeout };
      const out = (json: unknown, table: () => string): void => {
        process.stdout.write(v.output === 'json' ? JSON.stringify(json, null, 2) + '\n' : table());
      };
      const wrap = async <T>(what: string, p: Promise<T>) => {
        try {
          return await p;
        } catch (e) {
          throw new Error(`${what} failed (nsmd at ${v.connectTo}): ${messageOf(e)}`);
        }
      };
      switch (cmd) {
        case 'apply': {
          if (args[0] !== '-f' || !args[1]) throw new UsageError('usage: nsmctl apply -f FILE');
          const text = fs.readFileSync(args[1] === '-' ? 0 : args[1], 'utf8');
          const services = parseNetworkServiceYaml(text);
          const ns = new ApiClient('registry.NetworkServiceRegistry', v.connectTo, transport);
          for (const s of services) {
            await wrap(`registering network service "${s.name}"`, ns.unary('Register', s, opts));
            process.stdout.write(`networkservice/${s.name} registered\n`);
          }
          ns.close();
          return;
        }
        case 'get': {
          const what = args[0];
          if (what === 'services' || what === 'ns') {
            const c = new ApiClient('registry.NetworkServiceRegistry', v.connectTo, transport);
            const name = args[1] ?? '';
            const res = await wrap(name ? `finding service "${name}"` : 'listing services', c.collect('Find', { network_service: { name } }, opts));
            c.close();
            const list = res.map((r) => r.network_service!);
            return out(list, () =>
              formatTable(['NAME', 'PAYLOAD', 'MATCHES'], list.map((s) => [s.name, s.payload, String(s.matches.length)])),
            );
          }
          if (what === 'endpoints' || what === 'nse') {
            const c = new ApiClient('registry.NetworkServiceEndpointRegistry', v.connectTo, transport);
            const service = args[1];
            const query = { network_service_endpoint: service ? { network_service_names: [service] } : {} };
            const res = await wrap(service ? `finding endpoints of "${service}"` : 'listing endpoints', c.collect('Find', query, opts));
            c.close();
            const list = res.map((r) => r.network_service_endpoint!);
            return out(list, () =>
              formatTable(
                ['NAME', 'SERVICES', 'LABELS', 'URL', 'EXPIRES'],
                list.map((e) => [
                  e.name,
                  e.network_service_names.join(','),
                  Object.entries(e.network_service_labels[e.network_service_names[0] ?? '']?.labels ?? {}).map(([k, x]) => `${k}=${x}`).join(','),
                  e.url,
                  e.expiration_time ? new Date(e.expiration_time.seconds * 1000).toISOString() : '',
                ]),
              ),
            );
          }
          if (what === 'connections' || what === 'conn') {
            const list = await wrap('listing connections', listConnections(v.connectTo, v.timeout, transport));
            return out(list, () => connectionsTable(list));
          }
          throw new UsageError('usage: nsmctl get services [NAME] | endpoints [SERVICE] | connections');
        }
        case 'delete': {
          if (args[0] !== 'service' || !args[1]) throw new UsageError('usage: nsmctl delete service NAME');
          const c = new ApiClient('registry.NetworkServiceRegistry', v.connectTo, transport);
          await wrap(`unregistering "${args[1]}"`, c.unary('Unregister', { name: args[1] }, opts));
          c.close();
          process.stdout.write(`networkservice/${args[1]} deleted\n`);
          return;
        }
        case 'close': {
          const id = args[0];
          if (!id) throw new UsageError('usage: nsmctl close ID');
          const list = await wrap('listing connections', listConnections(v.connectTo, v.timeout, transport));
          const conn = list.find((c) => c.id === id || c.path?.path_segments.some((s) => s.id === id));
          const c = new ApiClient('networkservice.NetworkService', v.connectTo, transport);
          // An unknown id still goes to nsmd, whose NOT_FOUND explains itself.
          await wrap(`closing "${id}"`, c.unary('Close', conn ?? { id }, opts));
          c.close();
          process.stdout.write(`connection/${id} closed\n`);
          return;
        }
        default:
          throw new UsageError(`usage: ${USAGE}`);
      }
    }
  },
});

/** The connections nsmd holds: the monitor's initial state transfer, then the stream is dropped. */
async function listConnections(url: string, timeoutMs: number, transport: Transport): Promise<Connection[]> {
  const c = new ApiClient('connection.MonitorConnection', url, transport);
  try {
    const stream = c.stream('MonitorConnections', {}, { timeoutMs });
    for await (const ev of stream) {
      stream.cancel();
      return Object.values((ev as { connections: Record<string, Connection> }).connections);
    }
    return [];
  } finally {
    c.close();
  }
}
