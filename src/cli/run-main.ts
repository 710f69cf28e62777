import { parseSettings, settingsHelp, UsageError, type Parsed, type Setting } from '../util/settings.js';

export interface MainSpec<S extends Record<string, Setting<unknown>>> {
  usage: string;
  settings: S;
  /** Flags handled by the command itself, passed through as positionals. */
  extraFlags?: string[];
  /** Runs the command; a returned function is a long-running service's stop, called on SIGINT/SIGTERM. */
  main(parsed: Parsed<S>): Promise<void | (() => Promise<void>)>;
}

/** Shared entry point of the CLIs: --help, usage errors (exit 2), failures (exit 1) with one clear line. */
export async function runMain<S extends Record<string, Setting<unknown>>>(spec: MainSpec<S>): Promise<void> {
  let parsed: Parsed<S>;
  try {
    parsed = parseSettings(spec.settings, process.argv.slice(2), process.env, spec.extraFlags);
  } catch (e) {
    process.stderr.write(`error: ${(e as Error).message}\n`);
    process.exit(2);
  }
  if (parsed.help) {
    process.stdout.write(`usage: ${spec.usage}\n\nsettings:\n${settingsHelp(spec.settings)}\n`);
    return;
  }
  try {
    const stop = await spec.main(parsed);
    if (!stop) return;
    let stopping = false;
    const onSignal = () => {
      if (stopping) return;
      stopping = true;
      stop().then(
        () => process.exit(0),
        (e: unknown) => {
          process.stderr.write(`error while stopping: ${(e as Error).message}\n`);
          process.exit(1);
        },
      );
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  } catch (e) {
    process.stderr.write(`error: ${(e as Error).message}\n`);
    process.exit(e instanceof UsageError ? 2 : 1);
  }
}
