/**
 * The soak run: VMs created and torn down in a loop inside this one node
 * process through `runPlugin` (as an application embedding plugvisor would),
 * with this process's descriptors, threads and RSS sampled after every VM.
 * Reports the trend; exits 1 when descriptors or threads grew, or a VM failed.
 *
 *   npm run soak [-- --minutes 5] [--sandbox both|on|off]
 *
 * Each VM is the fault plugin (test/plugins/fault.ts) run to a clean end at
 * the "mid-exit" point (memory, an io event, an irq event, a reservation, the
 * guest running on every VCPU into a port write) or at "after-start",
 * alternating 1 and 4 VCPUs and the sandbox modes.
 */
import { readdirSync } from 'node:fs';
import { runPlugin } from '../../src/host/run.js';
import { testPlugin } from '../support/run.js';

interface Sample {
  run: number;
  fds: number;
  threads: number;
  rssMiB: number;
}

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main(argv: string[]): Promise<void> {
  const flag = (name: string, fallback: string): string => {
    const at = argv.indexOf(`--${name}`);
    return at >= 0 && argv[at + 1] !== undefined ? argv[at + 1] : fallback;
  };
  const minutes = Number(flag('minutes', '5'));
  const sandbox = flag('sandbox', 'both');
  const modes = sandbox === 'on' ? [true] : sandbox === 'off' ? [false] : [false, true];
  const until = Date.now() + minutes * 60_000;
  const samples: Sample[] = [];
  const failures: string[] = [];
  const take = (run: number): Sample => ({
    run,
    fds: readdirSync('/proc/self/fd').length,
    threads: readdirSync('/proc/self/task').length,
    rssMiB: process.memoryUsage().rss / 2 ** 20,
  });
  for (let run = 0; Date.now() < until; run++) {
    const sandboxed = modes[run % modes.length];
    const cpus = Math.floor(run / modes.length) % 2 === 0 ? 1 : 4;
    const point = run % 3 === 2 ? 'after-start' : 'mid-exit';
    const outcome = await runPlugin({
      plugin: testPlugin('fault'),
      args: ['exit0', point, 'soak'],
      cpus,
      sandbox: sandboxed ? { mounts: [], gidMaps: [] } : false,
      log: () => {},
      pluginStderr: () => {},
    });
    if (!outcome.ok)
      failures.push(`run ${run} (${cpus} VCPUs, ${sandboxed ? 'sandboxed' : 'unsandboxed'}, ${point}): ${outcome.message}`);
    // Worker threads end a moment after the run: let them go before sampling.
    await new Promise((r) => setTimeout(r, 50));
    const sample = take(run);
    samples.push(sample);
    if (run % 25 === 0) {
      process.stdout.write(`run ${run}: ${sample.fds} fds, ${sample.threads} threads, ${sample.rssMiB.toFixed(1)} MiB RSS\n`);
    }
  }
  if (samples.length < 8) throw new Error(`only ${samples.length} VMs ran: too short a soak for a trend`);
  // The first runs load code and warm the JIT: the trend is taken after them.
  const steady = samples.slice(Math.floor(samples.length / 4));
  const runs = steady.map((s) => s.run);
  const quarter = Math.max(1, Math.floor(steady.length / 4));
  const firstQ = steady.slice(0, quarter);
  const lastQ = steady.slice(-quarter);
  const trend = {
    vms: samples.length,
    minutes,
    fdsPer100Vms:
      100 *
      slope(
        runs,
        steady.map((s) => s.fds),
      ),
    threadsPer100Vms:
      100 *
      slope(
        runs,
        steady.map((s) => s.threads),
      ),
    rssMiBPer100Vms:
      100 *
      slope(
        runs,
        steady.map((s) => s.rssMiB),
      ),
    fds: { firstQuarter: mean(firstQ.map((s) => s.fds)), lastQuarter: mean(lastQ.map((s) => s.fds)) },
    threads: { firstQuarter: mean(firstQ.map((s) => s.threads)), lastQuarter: mean(lastQ.map((s) => s.threads)) },
    rssMiB: {
      firstQuarter: mean(firstQ.map((s) => s.rssMiB)),
      lastQuarter: mean(lastQ.map((s) => s.rssMiB)),
      max: Math.max(...samples.map((s) => s.rssMiB)),
    },
    failures: failures.length,
  };
  process.stdout.write(`\n${JSON.stringify(trend, null, 2)}\n`);
  for (const line of failures.slice(0, 20)) process.stdout.write(`FAILED ${line}\n`);
  const grew = trend.fds.lastQuarter > trend.fds.firstQuarter + 1 || trend.threads.lastQuarter > trend.threads.firstQuarter + 1;
  if (grew) process.stdout.write('descriptors or threads grew over the soak\n');
  process.exitCode = grew || failures.length > 0 ? 1 : 0;
}

await main(process.argv.slice(2));
