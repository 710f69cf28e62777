/**
 * Keeps the embedded issuer's CA on disk so that a restart keeps the trust bundle every peer already holds.
 * The key file is mode 0600 in a 0700 directory: it is the whole trust domain.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import type { Logger } from '../util/log.js';
import { createCa, caFromDer, type Ca } from './x509.js';

const CERT_FILE = 'ca.crt';
const KEY_FILE = 'ca.key';

function writeAtomically(file: string, data: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.rmSync(tmp, { force: true });
  // 'wx' creates the file with `mode` from the start: the key is never readable by others, not even briefly.
  fs.writeFileSync(tmp, data, { mode, flag: 'wx' });
  fs.renameSync(tmp, file);
}

export interface LoadCaOptions {
  stateDir: string;
  trustDomain: string;
  caTtlMs?: number;
  /** A stored CA that expires sooner than this is replaced (its SVIDs could not live their full TTL). */
  minRemainingMs: number;
  log: Logger;
}

/** Loads the stored CA or creates (and stores) a new one; `created` says which, since a new CA means a new bundle. */
export function loadOrCreateCa(opts: LoadCaOptions): { ca: Ca; created: boolean } {
  fs.mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  const certFile = path.join(opts.stateDir, CERT_FILE);
  const keyFile = path.join(opts.stateDir, KEY_FILE);
  const haveCert = fs.existsSync(certFile);
  const haveKey = fs.existsSync(keyFile);
  if (haveCert && haveKey) {
    const st = fs.statSync(keyFile);
    if (st.mode & 0o077) {
      opts.log.warn({ file: keyFile, mode: (st.mode & 0o777).toString(8) }, 'CA key file was readable by others; setting mode 0600');
      fs.chmodSync(keyFile, 0o600);
    }
    const cert = new X509Certificate(fs.readFileSync(certFile));
    const key = createPrivateKey(fs.readFileSync(keyFile));
    let ca: Ca;
    try {
      ca = caFromDer(opts.trustDomain, cert.raw, key);
    } catch (e) {
      throw new Error(
        `${opts.stateDir} holds a CA that cannot serve trust domain ${opts.trustDomain} (${(e as Error).message}); ` +
          `move ${CERT_FILE} and ${KEY_FILE} away to start a new trust domain`,
      );
    }
    if (ca.notAfter - Date.now() >= opts.minRemainingMs) return { ca, created: false };
    opts.log.warn(
      { trustDomain: opts.trustDomain, notAfter: new Date(ca.notAfter).toISOString() },
      'stored CA expires too soon; creating a new one (peers holding the old bundle must be given the new one)',
    );
  } else if (haveCert || haveKey) {
    opts.log.warn({ stateDir: opts.stateDir }, `only one of ${CERT_FILE} and ${KEY_FILE} exists; creating a new CA`);
  }
  const ca = createCa(opts.trustDomain, { ttlMs: opts.caTtlMs });
  writeAtomically(keyFile, ca.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600);
  writeAtomically(certFile, ca.cert.toString(), 0o644);
  return { ca, created: true };
}
