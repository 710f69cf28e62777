#!/usr/bin/env node
/**
 * nsm-cni: a CNI plugin (spec 1.0.0) chained after a pod's primary network plugin. It connects the pod to the
 * network services it asks for through the node's nsmd, and hands the runtime the previous result with those
 * interfaces added. Input is CNI_* environment variables and the network configuration on stdin; the result,
 * or a CNI error object, goes to stdout; logs go to stderr.
 */
import { pino } from 'pino';
import { normalizeLevel } from '../../src/util/log.js';
import { add } from './add.js';
import { check } from './check.js';
import { commandOf, parseEnv, parseNetConf, versionOf } from './config.js';
import { del } from './del.js';
import { cniErrorObject } from './errors.js';
import type { Invocation } from './invocation.js';
import { CURRENT_VERSION, SUPPORTED_VERSIONS } from './version.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The version to answer in: the configuration's when this plugin speaks it, else its own. */
function answerVersion(stdin: string): string {
  const v = versionOf(stdin);
  return v && (SUPPORTED_VERSIONS as readonly string[]).includes(v) ? v : CURRENT_VERSION;
}

async function run(stdin: string): Promise<unknown> {
  const command = commandOf(process.env);
  if (command === 'VERSION') return { cniVersion: answerVersion(stdin), supportedVersions: SUPPORTED_VERSIONS };
  const conf = parseNetConf(stdin);
  const env = parseEnv(command, process.env);
  // Synchronous: the process exits right after answering and must not lose the lines that explain a failure.
  const log = pino({ name: 'nsm-cni', level: normalizeLevel(conf.logLevel) }, pino.destination({ fd: 2, sync: true })).child({
    command,
    containerId: env.containerId,
    ifname: env.ifname,
  });
  const inv: Invocation = { conf, env, log, key: { dataDir: conf.dataDir, network: conf.name, containerId: env.containerId, ifname: env.ifname } };
  switch (env.command) {
    case 'ADD':
      return add(inv);
    case 'CHECK':
      return check(inv);
    case 'DEL':
      return del(inv);
  }
}

const stdin = await readStdin();
try {
  const out = await run(stdin);
  if (out !== undefined) process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
} catch (e) {
  process.stdout.write(JSON.stringify(cniErrorObject(answerVersion(stdin), e)) + '\n');
  process.exit(1);
}
