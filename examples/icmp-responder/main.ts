#!/usr/bin/env node
// nse-icmp-responder: the smallest useful endpoint. nsmd plumbs the endpoint's side of each connection
// into this process's namespace with the addresses handed out here, so the kernel answers ping on it.
import { runMain } from '../../src/cli/run-main.js';
import { startEndpoint } from '../../src/endpoint/index.js';
import { endpointOptionsFrom, endpointSettings } from '../../src/endpoint/settings.js';
import { createLogger } from '../../src/util/log.js';
import { openTransport } from '../../src/identity/transport.js';

await runMain({
  usage: 'nse-icmp-responder [flags]\n\nA network service endpoint whose side of every connection answers ping.',
  settings: endpointSettings,
  async main({ values: v }) {
    const log = createLogger(v.name, v.logLevel);
    const transport = await openTransport({ insecure: v.insecure, workloadApi: v.workloadApi, component: v.name, log });
    const ep = await startEndpoint({
      ...endpointOptionsFrom(v, transport),
      log,
    });
    return async () => {
      await ep.stop();
      transport.close();
    };
  },
});
