#!/usr/bin/env node
import os from 'node:os';
import { MeshClient } from '../client/nsc.js';
import { parseNsUrlList } from '../client/nsurl.js';
import { DEFAULT_NSM_SOCKET } from '../nsmd/config.js';
import { messageOf } from '../util/errors.js';
import { parseLabelList } from '../util/labels.js';
import { createLogger } from '../util/log.js';
import { bool, dur, str } from '../util/settings.js';
import { connectionsTable } from './connection-view.js';
import { runMain } from './run-main.js';
import { openTransport } from '../identity/transport.js';

const settings = {
  name: str('NSM_NAME', 'name', process.env.POD_NAME || `nsc-${os.hostname()}`, 'client name; connection ids are <name>-<i>'),
  connectTo: str('NSM_CONNECT_TO', 'connect-to', DEFAULT_NSM_SOCKET, "nsmd's local API"),
  networkServices: str(
    'NSM_NETWORK_SERVICES',
    'network-services',
    process.env.NS_NETWORKSERVICEMESH_IO ?? '',
    'comma list of kernel://service[@domain]/ifname?label=value or service[/ifname][?labels]',
  ),
  labels: str('NSM_LABELS', 'labels', '', 'labels added to every request, key:value,key2:value2'),
  podName: str('POD_NAME', 'pod-name', '', 'pod name, given to selectors as {{.podName}}'),
  nodeName: str('NODE_NAME', 'node-name', '', 'node name, given to selectors as {{.nodeName}} (nsmd fills it when empty)'),
  requestTimeout: dur('NSM_REQUEST_TIMEOUT', 'request-timeout', '15s', 'deadline of each Request'),
  maxTokenLifetime: dur('NSM_MAX_TOKEN_LIFETIME', 'max-token-lifetime', '10m', 'connection lifetime between refreshes'),
  output: str('NSM_OUTPUT', 'output', 'table', 'what to print on success: table or json'),
  keepAlive: bool('NSM_KEEP_ALIVE', 'keep-alive', false, 'stay running, refresh the connections, close them on SIGTERM'),
  logLevel: str('NSM_LOG_LEVEL', 'log-level', 'WARN', 'TRACE, DEBUG, INFO, WARN or ERROR'),
  insecure: bool('NSM_INSECURE', 'insecure', false, 'development only: no mutual TLS, no path tokens'),
  workloadApi: str('SPIFFE_ENDPOINT_SOCKET', 'spiffe-endpoint-socket', 'unix:///run/spire/sockets/agent.sock', 'SPIFFE Workload API giving this client its X.509-SVID'),
};

await runMain({
  usage:
    'nsc [flags]\n\nRequests network services into the namespace it runs in (an init container, or `ip netns exec`), prints what it got and exits;\nwith --keep-alive it stays to refresh them and closes them on SIGTERM.',
  settings,
  async main({ values: v }) {
    if (v.output !== 'table' && v.output !== 'json') throw new Error(`--output must be table or json, not "${v.output}"`);
    const log = createLogger('nsc', v.logLevel);
    const services = parseNsUrlList(v.networkServices);
    const transport = await openTransport({ insecure: v.insecure, workloadApi: v.workloadApi, component: 'nsc', log });
    const client = new MeshClient({
      transport,
      name: v.name,
      connectTo: v.connectTo,
      services,
      labels: parseLabelList(v.labels),
      podName: v.podName,
      nodeName: v.nodeName,
      requestTimeoutMs: v.requestTimeout,
      maxTokenLifetimeMs: v.maxTokenLifetime,
      log,
    });
    let conns;
    try {
      conns = await client.requestAll();
    } catch (e) {
      client.dispose();
      throw new Error(`could not connect through nsmd at ${v.connectTo}: ${messageOf(e)}`);
    }
    process.stdout.write(v.output === 'json' ? JSON.stringify(conns, null, 2) + '\n' : connectionsTable(conns));
    if (!v.keepAlive) {
      client.dispose();
      return;
    }
    client.startRefresh();
    return async () => {
      await client.closeAll();
      client.dispose();
    };
  },
});
