/** What every demo does around its own steps: print, tear down on every way out, exit with a code. */

export const say = (s: string) => process.stdout.write(`${s}\n`);

/**
 * Runs `main`, then `teardown` — also on Ctrl-C, SIGTERM and failure, and when output is piped into a reader
 * that closes early (`| head`), so no namespace or process is ever left behind.
 */
export async function runDemo(main: () => Promise<void>, teardown: () => Promise<void>, finished: string): Promise<void> {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      void teardown().then(() => process.exit(130));
    });
  }
  process.stdout.on('error', () => {
    void teardown().then(() => process.exit(1));
  });
  try {
    await main();
    await teardown();
    say(`\n${finished}`);
  } catch (e) {
    process.stderr.write(`demo failed: ${(e as Error).message}\n`);
    await teardown();
    process.exit(1);
  }
}
