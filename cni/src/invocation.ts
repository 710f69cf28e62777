import type { Logger } from '../../src/util/log.js';
import type { CniEnv, NetConf } from './config.js';
import type { AttachmentKey } from './state.js';

/** One run of the plugin for ADD, DEL or CHECK, with its inputs already checked. */
export interface Invocation {
  conf: NetConf;
  env: CniEnv;
  key: AttachmentKey;
  log: Logger;
}
