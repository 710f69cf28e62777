import fs from 'node:fs';
import path from 'node:path';

/** The seed talk's secure-intranet-connectivity NetworkService (v0.2 YAML), as shipped in examples/. */
export const SEED_NETWORK_SERVICE_YAML = fs.readFileSync(
  path.resolve(import.meta.dirname, '../../examples/secure-intranet-connectivity/network-service.yaml'),
  'utf8',
);
