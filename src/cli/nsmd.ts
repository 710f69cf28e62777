#!/usr/bin/env node
import { startNsmd } from '../nsmd/daemon.js';
import { nsmdSettings } from '../nsmd/config.js';
import { createLogger } from '../util/log.js';
import { runMain } from './run-main.js';

await runMain({
  usage: 'nsmd [flags]\n\nThe per-node Network Service Mesh daemon. Every setting comes from its environment variable or flag.',
  settings: nsmdSettings,
  async main({ values }) {
    const log = createLogger('nsmd', values.logLevel);
    const nsmd = await startNsmd(values, log);
    return async () => {
      log.info('stopping');
      await nsmd.stop();
    };
  },
});
