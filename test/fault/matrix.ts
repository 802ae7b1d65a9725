/**
 * Fault injection: the fault plugin (test/plugins/fault.ts) ends in every way
 * at every point of a run, for 1 and 4 VCPUs, in and out of the sandbox. The
 * host here is this very process (runPlugin), so that what a run leaves
 * behind shows in /proc/self: each run must end within a bound with the
 * documented outcome (the CLI's exit status), and afterwards this process
 * must have the descriptors, threads and KVM/memfd mappings it had before,
 * and no process carrying the run's token may be left.
 *
 * The suite runs a part of the matrix (test/faults.test.ts); all of it:
 *
 *   npm run faults [-- --sandbox both|on|off]
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { runPlugin, type RunOutcome } from '../../src/host/run.js';
import { testPlugin } from '../support/run.js';

export const POINTS = ['before-connect', 'after-create', 'after-start', 'mid-exit', 'while-host-writes'] as const;
export const ENDINGS = ['exit0', 'exit3', 'sigkill', 'sigsegv', 'closeall', 'hang', 'noresume'] as const;
export type Point = (typeof POINTS)[number];
export type Ending = (typeof ENDINGS)[number];

export interface Scenario {
  ending: Ending;
  point: Point;
  cpus: number;
  sandboxed: boolean;
}

/** Endings after which the plugin never exits by itself: the runner stops the run (as an application's AbortSignal would). */
const STOPPED_BY_RUNNER: ReadonlySet<Ending> = new Set(['closeall', 'hang', 'noresume']);
/** "Never resuming" has a meaning only once there are VCPUs to resume. */
const NEEDS_VCPUS: ReadonlySet<Ending> = new Set(['noresume']);

/** A run must be over this long after it started. */
export const RUN_BOUND_MS = 15_000;
/** How long after a run its threads, descriptors and processes may take to go. */
const SETTLE_MS = 3_000;
const SHUTDOWN_TIMEOUT_MS = 500;

/** The documented outcome of each ending (see `plugvisor run --help`: Exit status). */
export function expectedOutcome(ending: Ending): { exitCodes: number[]; message: RegExp } {
  const killedAfterGrace = /^plugin did not exit within timeout \(killed\)$/;
  switch (ending) {
    case 'exit0':
      return { exitCodes: [0], message: /^plugin exited successfully$/ };
    case 'exit3':
      return { exitCodes: [3], message: /^plugin exited with code 3/ };
    case 'sigkill':
      return { exitCodes: [128 + 9], message: /killed by signal SIGKILL/ };
    case 'sigsegv':
      return { exitCodes: [128 + 11], message: /killed by signal SIGSEGV/ };
    case 'closeall':
      // Stopped by the runner, then killed after the shutdown grace; unless
      // node itself aborts first, having lost its own descriptors (its
      // threads' epoll and signal fds): then the host reports that signal.
      return { exitCodes: [1, 128 + 6], message: new RegExp(`${killedAfterGrace.source}|killed by signal SIGABRT`) };
    case 'hang':
      // Stopped by the runner, then killed after the shutdown grace.
      return { exitCodes: [1], message: killedAfterGrace };
    case 'noresume':
      // Stopped by the runner; the plugin obeys the shutdown eventfd.
      return { exitCodes: [1], message: /^interrupted$/ };
  }
}

/** Every scenario of the matrix, or (`all` false) the suite's part: all of 1 VCPU unsandboxed, each point once elsewhere. */
export function scenarios(options: { all: boolean; sandboxModes: readonly boolean[] }): Scenario[] {
  const list: Scenario[] = [];
  let rotation = 0;
  for (const sandboxed of options.sandboxModes) {
    for (const cpus of [1, 4]) {
      const full = options.all || (cpus === 1 && !sandboxed);
      for (const point of POINTS) {
        const endings = ENDINGS.filter((e) => !NEEDS_VCPUS.has(e) || POINTS.indexOf(point) >= POINTS.indexOf('after-start'));
        if (full) for (const ending of endings) list.push({ ending, point, cpus, sandboxed });
        else list.push({ ending: endings[rotation++ % endings.length], point, cpus, sandboxed });
      }
    }
  }
  return list;
}

export function scenarioName(s: Scenario): string {
  return `${s.ending} at ${s.point}, ${s.cpus} VCPU${s.cpus > 1 ? 's' : ''}, ${s.sandboxed ? 'sandboxed' : 'unsandboxed'}`;
}

/** What this process holds that a run could leak. */
export interface Holdings {
  fds: string[];
  threads: number;
  mappings: string[];
}

export function holdings(): Holdings {
  const fds: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      fds.push(`${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`);
    } catch {
      // The directory's own descriptor, closed by now.
    }
  }
  // Guest memory (memfds), kvm_run (anon_inode:kvm-vcpu) and any other KVM
  // object mapped; the rest of the maps is node's heap, which comes and goes.
  const mappings = readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((line) => /memfd:|kvm|anon_inode/.test(line))
    .map((line) => line.replace(/^\S+ \S+ \S+ \S+ \S+\s+/, ''));
  return { fds: fds.sort(), threads: readdirSync('/proc/self/task').length, mappings: mappings.sort() };
}

/** Pids of processes whose command line carries `token`. */
export function processesWith(token: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(token)) pids.push(Number(name));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

function differences(before: Holdings, after: Holdings): string[] {
  const problems: string[] = [];
  const extra = (a: string[], b: string[]): string[] => {
    const left = [...b];
    return a.filter((x) => {
      const at = left.indexOf(x);
      if (at < 0) return true;
      left.splice(at, 1);
      return false;
    });
  };
  const newFds = extra(after.fds, before.fds);
  if (newFds.length > 0) problems.push(`descriptors left: ${newFds.join(', ')}`);
  if (after.threads > before.threads) problems.push(`${after.threads - before.threads} thread(s) left`);
  const newMappings = extra(after.mappings, before.mappings);
  if (newMappings.length > 0) problems.push(`mappings left: ${newMappings.join(', ')}`);
  return problems;
}

let runs = 0;

/**
 * Runs one scenario with this process as the host. Returns the problems
 * found (none when the run ended in time, as documented, leaving nothing).
 */
export async function runScenario(s: Scenario): Promise<{ problems: string[]; ms: number; outcome?: RunOutcome }> {
  const baseline = holdings();
  const token = `fault-token-${process.pid}-${++runs}`;
  const abort = new AbortController();
  const logLines: string[] = [];
  const started = Date.now();
  let bound: NodeJS.Timeout | undefined;
  const run = runPlugin({
    plugin: testPlugin('fault'),
    args: [s.ending, s.point, token],
    cpus: s.cpus,
    sandbox: s.sandboxed ? { mounts: [], gidMaps: [] } : false,
    startTimeoutMs: RUN_BOUND_MS,
    shutdownTimeoutMs: SHUTDOWN_TIMEOUT_MS,
    log: (level, message) => logLines.push(`${level}: ${message}`),
    pluginStderr: (line) => {
      if (logLines.length < 50) logLines.push(`[plugin] ${line}`);
      if (line.startsWith('fault: at') && STOPPED_BY_RUNNER.has(s.ending)) setTimeout(() => abort.abort(), 200);
    },
    signal: abort.signal,
  });
  const timedOut = new Promise<'timeout'>((resolve) => (bound = setTimeout(() => resolve('timeout'), RUN_BOUND_MS)));
  const first = await Promise.race([run, timedOut]);
  clearTimeout(bound);
  const problems: string[] = [];
  let outcome: RunOutcome | undefined;
  if (first === 'timeout') {
    problems.push(`the run did not end within ${RUN_BOUND_MS} ms`);
    abort.abort();
    outcome = await run;
  } else {
    outcome = first;
  }
  const ms = Date.now() - started;
  const expected = expectedOutcome(s.ending);
  if (!expected.exitCodes.includes(outcome.exitCode) || !expected.message.test(outcome.message)) {
    problems.push(
      `outcome ${outcome.exitCode} "${outcome.message}", expected ${expected.exitCodes.join(' or ')} ${String(expected.message)}`,
    );
  }
  // Threads and reaped children may take a moment to go: wait for it, bounded.
  const settleBy = Date.now() + SETTLE_MS;
  let left: string[] = [];
  let pids: number[] = [];
  for (;;) {
    left = differences(baseline, holdings());
    pids = processesWith(token);
    if ((left.length === 0 && pids.length === 0) || Date.now() > settleBy) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  problems.push(...left);
  if (pids.length > 0) {
    problems.push(`processes left: ${pids.join(', ')}`);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone.
      }
    }
  }
  if (problems.length > 0) problems.push(`log: ${logLines.join(' | ')}`);
  return { problems, ms, outcome };
}

/** A run in each mode to load what any run loads (libraries, node's thread pool), so that later runs start from what they end with. */
export async function warmUp(sandboxModes: readonly boolean[]): Promise<void> {
  for (const sandboxed of sandboxModes) await runScenario({ ending: 'exit0', point: 'mid-exit', cpus: 4, sandboxed });
}

async function main(argv: string[]): Promise<void> {
  const at = argv.indexOf('--sandbox');
  const sandbox = at >= 0 ? argv[at + 1] : 'both';
  const modes = sandbox === 'on' ? [true] : sandbox === 'off' ? [false] : [false, true];
  await warmUp(modes);
  const list = scenarios({ all: true, sandboxModes: modes });
  let failed = 0;
  const started = Date.now();
  for (const s of list) {
    const result = await runScenario(s);
    const verdict = result.problems.length === 0 ? 'ok' : 'FAIL';
    if (result.problems.length > 0) failed++;
    process.stdout.write(`${verdict} ${scenarioName(s)} (${result.ms} ms)${result.problems.map((p) => `\n    ${p}`).join('')}\n`);
  }
  const seconds = ((Date.now() - started) / 1000).toFixed(0);
  process.stdout.write(`\n${list.length - failed} passed, ${failed} failed in ${seconds} s\n`);
  process.exitCode = failed > 0 ? 1 : 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main(process.argv.slice(2));
