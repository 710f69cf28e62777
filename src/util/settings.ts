import { parseDuration, formatDuration } from './duration.js';

/** One configuration setting: read from its environment variable, overridden by its flag. */
export interface Setting<T> {
  env: string;
  flag: string;
  description: string;
  default: T;
  parse(text: string): T;
  format?(value: T): string;
}

export const str = (env: string, flag: string, def: string, description: string): Setting<string> => ({
  env, flag, description, default: def, parse: (t) => t,
});
export const dur = (env: string, flag: string, def: string, description: string): Setting<number> => ({
  env, flag, description, default: parseDuration(def), parse: parseDuration, format: formatDuration,
});
export const int = (env: string, flag: string, def: number, description: string, min: number, max: number): Setting<number> => ({
  env, flag, description, default: def,
  parse: (t) => {
    const n = Number(t);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`expected a whole number from ${min} to ${max}, got "${t}"`);
    return n;
  },
});
export const bool = (env: string, flag: string, def: boolean, description: string): Setting<boolean> => ({
  env, flag, description, default: def,
  parse: (t) => {
    if (/^(1|true|yes|on)$/i.test(t)) return true;
    if (/^(0|false|no|off)$/i.test(t)) return false;
    throw new Error(`expected true or false, got "${t}"`);
  },
});

export type Values<S extends Record<string, Setting<unknown>>> = { [K in keyof S]: S[K] extends Setting<infer T> ? T : never };

export class UsageError extends Error {}

export interface Parsed<S extends Record<string, Setting<unknown>>> {
  values: Values<S>;
  /** Arguments that are not flags, in order. */
  positional: string[];
  help: boolean;
}

/**
 * Environment first, then `--flag value` / `--flag=value`. Unknown flags and bad values are usage errors
 * naming the setting, so a typo never silently falls back to a default.
 */
export function parseSettings<S extends Record<string, Setting<unknown>>>(
  settings: S,
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  extraFlags: string[] = [],
): Parsed<S> {
  const values = {} as Record<string, unknown>;
  const byFlag = new Map<string, string>();
  for (const [key, s] of Object.entries(settings)) {
    byFlag.set(s.flag, key);
    const raw = env[s.env];
    values[key] = raw === undefined || raw === '' ? s.default : parseOne(s, raw, `environment variable ${s.env}`);
  }
  const positional: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    if (!arg.startsWith('--')) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const flag = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
    if (extraFlags.includes(flag)) {
      positional.push(arg);
      continue;
    }
    const key = byFlag.get(flag);
    if (!key) throw new UsageError(`unknown flag --${flag} (see --help)`);
    const s = settings[key]!;
    let raw: string | undefined;
    if (eq >= 0) raw = arg.slice(eq + 1);
    else if (s.default === false || s.default === true) raw = 'true';
    else raw = argv[++i];
    if (raw === undefined) throw new UsageError(`flag --${flag} needs a value`);
    values[key] = parseOne(s, raw, `--${flag}`);
  }
  return { values: values as Values<S>, positional, help };
}

function parseOne<T>(s: Setting<T>, raw: string, where: string): T {
  try {
    return s.parse(raw);
  } catch (e) {
    throw new UsageError(`${where}: ${(e as Error).message}`);
  }
}

export function settingsHelp(settings: Record<string, Setting<unknown>>): string {
  const rows = Object.values(settings).map((s) => {
    const def = s.format ? s.format(s.default as never) : String(s.default);
    return `  --${s.flag.padEnd(24)} ${s.env.padEnd(28)} ${s.description} (default: ${def === '' ? '""' : def})`;
  });
  return `  ${'flag'.padEnd(26)} ${'environment'.padEnd(28)} meaning\n${rows.join('\n')}`;
}
