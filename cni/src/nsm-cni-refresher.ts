#!/usr/bin/env node
/**
 * nsm-cni-refresher: the node daemon that keeps the connections nsm-cni made alive. The plugin exits after ADD,
 * so without it nsmd closes each connection when its token lifetime runs out. Runs beside nsmd on every node,
 * as the plugin's SPIFFE identity (the connections' owner), and reads the plugin's records in dataDir.
 */
import { runMain } from '../../src/cli/run-main.js';
import { openTransport } from '../../src/identity/transport.js';
import { createLogger } from '../../src/util/log.js';
import { Refresher } from './refresher/refresher.js';
import { refreshIntervalOf, refresherSettings } from './refresher/settings.js';

await runMain({
  usage:
    'nsm-cni-refresher [flags]\n\nRe-requests every connection recorded in nsm-cni\'s dataDir before it expires, requests again one nsmd has lost\nwhile its pod lives, and closes and forgets those of pods deleted without CNI DEL. SIGTERM stops it and leaves the\nconnections up.',
  settings: refresherSettings,
  async main({ values: v }) {
    const log = createLogger('nsm-cni-refresher', v.logLevel);
    const transport = await openTransport({ insecure: v.insecure, workloadApi: v.workloadApi, component: 'nsm-cni-refresher', log });
    const refresher = new Refresher({
      dataDir: v.dataDir,
      connectTo: v.connectTo,
      intervalMs: refreshIntervalOf(v),
      maxTokenLifetimeMs: v.maxTokenLifetime,
      requestTimeoutMs: v.requestTimeout,
      transport,
      log,
    });
    try {
      await refresher.start();
    } catch (e) {
      await refresher.stop();
      transport.close();
      throw e;
    }
    return async () => {
      await refresher.stop();
      transport.close();
      log.info('stopped; the connections stay up');
    };
  },
});
