// Started with `ip netns exec NODE node ptp-runner.js`, so that the plugin processes it starts are born in
// the node namespace, the way a runtime on the node starts them: the timings then hold no `ip netns exec`.
// Reads a PtpCyclesSpec as JSON from stdin and writes a PtpCyclesResult as JSON to stdout.
import { runPtpCycles, type PtpCyclesSpec } from './ptp.js';

const chunks: Buffer[] = [];
for await (const c of process.stdin) chunks.push(c as Buffer);
const spec = JSON.parse(Buffer.concat(chunks).toString()) as PtpCyclesSpec;
const result = await runPtpCycles({ ...spec, prefix: [] });
process.stdout.write(JSON.stringify(result));
