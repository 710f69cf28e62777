/**
 * Keeps nsm-cni's connections on this node alive. Each record in dataDir gets its own timer: due after the
 * refresh interval, or sooner when a recorded expiry requires it (records.ts dueAt). Records appear and change
 * under its feet (ADD, DEL), so dataDir is watched, with a full scan every interval to catch anything a watch
 * missed. Stopping leaves every connection as it is: they belong to the pods, not to this process.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ApiClient, parseSocketUrl } from '../../../src/api/grpc.js';
import type { Transport } from '../../../src/identity/transport.js';
import { messageOf } from '../../../src/util/errors.js';
import type { Logger } from '../../../src/util/log.js';
import { refreshRecord, type RecordRefreshOptions } from './record-refresh.js';
import { dueAt, isRecordFile, networkDirs, peekRecord, recordFiles } from './records.js';

/** Records worked on at once: enough to keep up, few enough that a node full of pods does not flood nsmd. */
const CONCURRENCY = 8;
/**
 * The next try after a record was busy or nsmd's socket missing, and after a first failed refresh; repeated
 * failures (no endpoint for the service, say) back off, doubling up to 30 s (or the refresh interval if
 * shorter). An expiry still ahead brings a retry forward.
 */
const RETRY_MS = 1000;
const MAX_BACKOFF_MS = 30_000;
/** Never spin: even a record already past its expiry waits this long between tries. */
const MIN_DELAY_MS = 100;
/** setTimeout's limit. */
const MAX_DELAY_MS = 2 ** 31 - 1;

export interface RefresherOptions {
  dataDir: string;
  connectTo: string;
  intervalMs: number;
  maxTokenLifetimeMs: number;
  requestTimeoutMs: number;
  transport: Transport;
  log: Logger;
}

interface Entry {
  due: number;
  /** Failed attempts in a row. */
  failures: number;
  timer?: NodeJS.Timeout;
  running?: Promise<void>;
}

export class Refresher {
  private readonly api: ApiClient<'networkservice.NetworkService'>;
  private readonly entries = new Map<string, Entry>();
  private readonly watchers = new Map<string, fs.FSWatcher>();
  private scanTimer: NodeJS.Timeout | undefined;
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  private stopped = false;
  /** nsmd's socket was missing at the last try: said once, not once per record. */
  private nsmdMissing = false;

  constructor(private readonly o: RefresherOptions) {
    this.api = new ApiClient('networkservice.NetworkService', o.connectTo, o.transport);
  }

  async start(): Promise<void> {
    await fs.promises.mkdir(this.o.dataDir, { recursive: true, mode: 0o700 });
    this.watch(this.o.dataDir);
    await this.scan();
    this.o.log.info({ dataDir: this.o.dataDir, nsmd: this.o.connectTo, intervalMs: this.o.intervalMs, records: this.entries.size }, 'keeping nsm-cni connections alive');
  }

  /** Stops refreshing and waits for the records being worked on; the connections stay as they are. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.scanTimer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    for (const e of this.entries.values()) clearTimeout(e.timer);
    await Promise.allSettled([...this.entries.values()].map((e) => e.running));
    this.api.close();
  }

  /** Every network directory and record in dataDir; forgets records that are gone. */
  private async scan(): Promise<void> {
    clearTimeout(this.scanTimer);
    const seen = new Set<string>();
    for (const dir of await networkDirs(this.o.dataDir)) {
      this.watch(dir);
      for (const file of await recordFiles(dir)) {
        seen.add(file);
        await this.consider(file);
      }
    }
    for (const [file, e] of this.entries) {
      if (!seen.has(file) && !e.running) this.forget(file);
    }
    if (!this.stopped) this.scanTimer = setTimeout(() => void this.scanSafely(), Math.min(this.o.intervalMs, MAX_DELAY_MS));
  }

  private async scanSafely(): Promise<void> {
    try {
      await this.scan();
    } catch (e) {
      this.o.log.warn({ err: messageOf(e), dataDir: this.o.dataDir }, 'scanning dataDir failed; will retry');
      if (!this.stopped) this.scanTimer = setTimeout(() => void this.scanSafely(), RETRY_MS);
    }
  }

  /** dataDir itself (new network directories) and each network directory (records written, renamed, removed). */
  private watch(dir: string): void {
    if (this.stopped || this.watchers.has(dir)) return;
    try {
      const w = fs.watch(dir, (_event, name) => {
        if (this.stopped) return;
        if (dir === this.o.dataDir) void this.scanSafely();
        else if (name && isRecordFile(name.toString())) void this.consider(path.join(dir, name.toString()));
      });
      w.on('error', (e) => {
        this.o.log.warn({ dir, err: e.message }, 'watch failed; relying on the periodic scan');
        w.close();
        this.watchers.delete(dir);
      });
      this.watchers.set(dir, w);
    } catch (e) {
      this.o.log.warn({ dir, err: messageOf(e) }, 'cannot watch; relying on the periodic scan');
    }
  }

  /** A record that is new, changed or removed: (re)schedule it, keeping the sooner of its old and new due times. */
  private async consider(file: string): Promise<void> {
    const e = this.entries.get(file);
    // Its run reschedules it; and a failing record keeps its backoff, whatever its lapsed expiries say.
    if (e?.running || e?.failures) return;
    const att = await peekRecord(file);
    if (!att) {
      // Gone, or unreadable: a locked read sorts out which.
      if (!fs.existsSync(file)) this.forget(file);
      else this.schedule(file, Date.now());
      return;
    }
    const due = dueAt(att, Date.now(), this.o.intervalMs);
    if (!e || due < e.due) this.schedule(file, due);
  }

  private schedule(file: string, due: number): void {
    if (this.stopped) return;
    const e = this.entries.get(file) ?? { due, failures: 0 };
    clearTimeout(e.timer);
    e.due = due;
    e.timer = setTimeout(() => void this.run(file), Math.min(MAX_DELAY_MS, Math.max(MIN_DELAY_MS, due - Date.now())));
    this.entries.set(file, e);
  }

  private forget(file: string): void {
    clearTimeout(this.entries.get(file)?.timer);
    this.entries.delete(file);
  }

  private run(file: string): void {
    const e = this.entries.get(file);
    if (!e || e.running || this.stopped) return;
    e.running = this.limited(async () => {
      if (this.stopped) return;
      const next = await this.attempt(file, e);
      e.running = undefined;
      if (next === undefined) this.forget(file);
      else this.schedule(file, next);
    });
  }

  /** Works on one record; returns when it is next due, or undefined when there is no record any more. */
  private async attempt(file: string, e: Entry): Promise<number | undefined> {
    // Without its socket nsmd is not running (restarting, say): a Request would wait out its whole deadline
    // holding the record's lock, and keep a DEL waiting that long.
    if (!this.nsmdPresent()) return Date.now() + RETRY_MS;
    try {
      const out = await refreshRecord(file, this.recordOptions());
      if (out.kind === 'removed' || out.kind === 'absent') return undefined;
      if (out.kind === 'busy') return Date.now() + RETRY_MS;
      const now = Date.now();
      const due = dueAt(out.record, now, this.o.intervalMs);
      if (!out.failed) {
        e.failures = 0;
        return due;
      }
      const retry = this.retryAt(e);
      // A connection whose recorded expiry has passed has nothing left to save: only the backoff counts.
      return due > now ? Math.min(due, retry) : retry;
    } catch (err) {
      this.o.log.warn({ record: file, err: messageOf(err) }, 'refreshing the record failed; will retry');
      return this.retryAt(e);
    }
  }

  private retryAt(e: Entry): number {
    const backoff = Math.min(RETRY_MS * 2 ** Math.min(e.failures, 20), Math.max(RETRY_MS, Math.min(MAX_BACKOFF_MS, this.o.intervalMs)));
    e.failures++;
    return Date.now() + backoff;
  }

  private nsmdPresent(): boolean {
    const addr = parseSocketUrl(this.o.connectTo);
    const present = addr.kind !== 'unix' || fs.existsSync(addr.path!);
    if (present === this.nsmdMissing) {
      this.nsmdMissing = !present;
      if (present) this.o.log.info({ nsmd: this.o.connectTo }, "nsmd's socket is back; refreshing");
      else this.o.log.warn({ nsmd: this.o.connectTo }, "nsmd's socket is missing (nsmd not running?); retrying every second");
    }
    return present;
  }

  private recordOptions(): RecordRefreshOptions {
    const { connectTo, maxTokenLifetimeMs, requestTimeoutMs, transport, log } = this.o;
    return { api: this.api, connectTo, maxTokenLifetimeMs, requestTimeoutMs, transport, log };
  }

  /** Runs `task` once fewer than CONCURRENCY others are running. */
  private async limited(task: () => Promise<void>): Promise<void> {
    if (this.active >= CONCURRENCY) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      await task();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}
