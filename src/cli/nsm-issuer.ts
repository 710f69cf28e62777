#!/usr/bin/env node
import fs from 'node:fs';
import path from 'node:path';
import { EmbeddedIssuer } from '../identity/issuer.js';
import { fromPem, toPem } from '../identity/der.js';
import { parseSpiffeId, parseTrustDomain } from '../identity/spiffe-id.js';
import { parseList } from '../util/labels.js';
import { createLogger } from '../util/log.js';
import { dur, str, UsageError, type Setting } from '../util/settings.js';
import { runMain } from './run-main.js';

interface Workload {
  spiffeId: string;
  socket: string;
}

const workloads: Setting<Workload[]> = {
  env: 'NSM_WORKLOADS',
  flag: 'workloads',
  description: 'comma list of SPIFFE_ID=SOCKET_PATH: one Workload API socket per identity (attestation by socket)',
  default: [],
  parse: (t) =>
    parseList(t).map((w) => {
      const i = w.lastIndexOf('=');
      if (i < 0) throw new Error(`"${w}" is not SPIFFE_ID=SOCKET_PATH`);
      const spiffeId = parseSpiffeId(w.slice(0, i)).id;
      const socket = w.slice(i + 1);
      if (!path.isAbsolute(socket)) throw new Error(`socket path "${socket}" must be absolute`);
      return { spiffeId, socket };
    }),
  format: (v) => v.map((w) => `${w.spiffeId}=${w.socket}`).join(','),
};

interface Federation {
  trustDomain: string;
  /** https:// bundle endpoint, or a PEM file holding the trust domain's bundle. */
  source: string;
}

const federatesWith: Setting<Federation[]> = {
  env: 'NSM_FEDERATES_WITH',
  flag: 'federates-with',
  description: 'comma list of TRUST_DOMAIN=https://bundle-endpoint (followed at its refresh hint) or TRUST_DOMAIN=/path/bundle.pem: bundles workloads receive as federated bundles',
  default: [],
  parse: (t) =>
    parseList(t).map((item) => {
      const i = item.indexOf('=');
      if (i < 0) throw new Error(`"${item}" is not TRUST_DOMAIN=https://… or TRUST_DOMAIN=/path/bundle.pem`);
      const source = item.slice(i + 1);
      if (!source.startsWith('https://') && !path.isAbsolute(source)) throw new Error(`"${item}": give an https:// bundle endpoint or an absolute PEM file path`);
      return { trustDomain: parseTrustDomain(item.slice(0, i)), source };
    }),
  format: (v) => v.map((f) => `${f.trustDomain}=${f.source}`).join(','),
};

const settings = {
  trustDomain: str('NSM_TRUST_DOMAIN', 'trust-domain', 'nsmesh.local', 'trust domain of the CA'),
  stateDir: str('NSM_ISSUER_STATE_DIR', 'state-dir', '/var/lib/networkservicemesh/issuer', 'where the CA is kept (key mode 0600), so restarts keep the trust bundle'),
  svidTtl: dur('NSM_SVID_TTL', 'svid-ttl', '1h', 'lifetime of each X.509-SVID; each is renewed at half its life'),
  bundleOut: str('NSM_BUNDLE_OUT', 'bundle-out', '', 'also write the trust bundle (PEM) to this file, for federation'),
  workloads,
  federatesWith,
  bundleEndpoint: str('NSM_BUNDLE_ENDPOINT', 'bundle-endpoint', '', "serve this trust domain's bundle to federated peers at https://HOST:PORT/ (listen address host:port)"),
  bundleEndpointCert: str('NSM_BUNDLE_ENDPOINT_CERT', 'bundle-endpoint-cert', '', "PEM certificate chain of the bundle endpoint (web PKI: peers check it against their CA store)"),
  bundleEndpointKey: str('NSM_BUNDLE_ENDPOINT_KEY', 'bundle-endpoint-key', '', 'PEM private key of the bundle endpoint certificate'),
  logLevel: str('NSM_LOG_LEVEL', 'log-level', 'INFO', 'TRACE, DEBUG, INFO, WARN or ERROR'),
};

await runMain({
  usage:
    'nsm-issuer [flags]\n\nAn embedded SPIFFE issuer for a single machine: a CA for one trust domain serving the SPIFFE Workload API,\none unix socket per workload identity. Point each component\'s SPIFFE_ENDPOINT_SOCKET at its socket.\nIn production use a SPIRE agent instead.',
  settings,
  async main({ values: v }) {
    if (v.workloads.length === 0) throw new UsageError('no workloads: set NSM_WORKLOADS (or --workloads) to SPIFFE_ID=SOCKET_PATH,...');
    const log = createLogger('nsm-issuer', v.logLevel);
    const issuer = await EmbeddedIssuer.start({ trustDomain: v.trustDomain, stateDir: v.stateDir, svidTtlMs: v.svidTtl, log });
    for (const w of v.workloads) {
      fs.mkdirSync(path.dirname(w.socket), { recursive: true, mode: 0o755 });
      log.info({ spiffeId: w.spiffeId, socket: await issuer.addWorkload(w.spiffeId, w.socket) }, 'serving workload identity');
    }
    if (v.bundleOut) fs.writeFileSync(v.bundleOut, toPem(issuer.bundleDer()));
    for (const f of v.federatesWith) {
      if (f.source.startsWith('https://')) {
        const ok = await issuer.followFederatedBundle(f.trustDomain, f.source);
        if (!ok) log.warn({ federated: f.trustDomain, url: f.source }, 'federated bundle not fetched yet; retrying in the background');
      } else {
        const certs = fromPem(fs.readFileSync(f.source, 'utf8'));
        if (certs.length === 0) throw new UsageError(`${f.source} holds no PEM certificate for ${f.trustDomain}`);
        issuer.addFederatedBundle(f.trustDomain, certs.map((c) => c.raw));
      }
    }
    if (v.bundleEndpoint) {
      if (!v.bundleEndpointCert || !v.bundleEndpointKey) throw new UsageError('--bundle-endpoint needs --bundle-endpoint-cert and --bundle-endpoint-key');
      const ep = await issuer.serveBundleEndpoint({
        listen: v.bundleEndpoint,
        certPem: fs.readFileSync(v.bundleEndpointCert),
        keyPem: fs.readFileSync(v.bundleEndpointKey),
      });
      log.info({ url: ep.url }, 'serving the trust bundle for federation');
    }
    return () => issuer.close();
  },
});
