import { pino, type Logger } from 'pino';

export type { Logger };

const LEVELS: Record<string, string> = {
  TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', WARNING: 'warn', ERROR: 'error', FATAL: 'fatal',
};

/** Accepts upstream's upper-case level names (NSM_LOG_LEVEL=INFO) as well as pino's. */
export function normalizeLevel(level: string): string {
  const l = LEVELS[level.toUpperCase()];
  if (!l) throw new Error(`unknown log level "${level}": use one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL`);
  return l;
}

/** Logs go to stderr so that command output on stdout (tables, JSON) stays machine-readable. */
export function createLogger(name: string, level = 'INFO'): Logger {
  return pino({ name, level: normalizeLevel(level) }, pino.destination({ fd: 2, sync: false }));
}

/** A logger that drops everything, for library users that pass none. */
export const silentLogger: Logger = pino({ level: 'silent' });
