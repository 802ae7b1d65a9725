#!/usr/bin/env node
/**
 * The benchmark runner: `npm run bench [-- OPTIONS]` (after `npm run build`).
 *
 * Builds the C programs (make -C bench/c), runs every case K times
 * (interleaved: round 1 of every case, then round 2, ... so that a change in
 * the machine's load hits every case alike), takes medians, prints a table
 * (case, metric, median, baseline, ratio, mad = median absolute deviation in
 * % of the median) and writes
 * bench/results/latest.json.
 *
 * A case is one measurement with a list of metrics and, usually, a baseline
 * case: the ratio column is this case's median over the baseline's median for
 * the same metric (or the metric named in `baselineMetrics`). Cases whose
 * prerequisites are missing (the host CLI, the plugin SDK, the C client
 * library) are listed as "not available yet" with the reason; they are not
 * failures. See bench/README.md for what each figure means.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { PACKAGE_ROOT } from '../src/package-root.js';
import { forEachArgument } from './args.js';

// ---------------------------------------------------------------------------
// paths

const ROOT = PACKAGE_ROOT;
const BENCH_SRC = path.join(ROOT, 'bench');
const C_DIR = path.join(BENCH_SRC, 'c');
const BUILD = path.join(BENCH_SRC, 'build');
const RAW_EXIT = path.join(BUILD, 'raw_exit');
const PIPE_BASELINE = path.join(BUILD, 'pipe_baseline');
const RUSAGE_EXEC = path.join(BUILD, 'rusage_exec');
const C_PLUGIN = path.join(BUILD, 'exit_loop_plugin');
const KERNEL_NATIVE = path.join(BUILD, 'kernel_native');
const KERNEL_GUEST = path.join(BUILD, 'kernel_guest.elf');
const STARTUP_GUEST = path.join(BUILD, 'startup_guest.elf');
const HOSTCALL_GUEST = path.join(BUILD, 'hostcall_guest.elf');
/** The host CLI; --host replaces it (e.g. to compare with another build). */
let HOST_CLI = path.join(ROOT, 'dist', 'bundle', 'plugvisor.cjs');
const SDK = path.join(ROOT, 'dist', 'bundle', 'plugin.js');
const TS_PLUGIN = path.join(ROOT, 'dist', 'bench', 'plugins', 'exit-loop.js');
const HOSTCALL_PLUGIN = path.join(ROOT, 'dist', 'bench', 'plugins', 'host-call.js');
const GUEST_SDK = path.join(ROOT, 'dist', 'bundle', 'guest.js');
const CLIENT_INCLUDE = path.join(ROOT, 'clients', 'c', 'include');
const CLIENT_BUILD = path.join(ROOT, 'clients', 'c', 'build');
const DEFAULT_OUT = path.join(BENCH_SRC, 'results', 'latest.json');

// ---------------------------------------------------------------------------
// options

interface Options {
  repeat: number;
  warmup: number;
  scale: number;
  spin: number[];
  only: string[];
  out: string;
  list: boolean;
  markdown: boolean;
  timeoutSec: number;
}

const USAGE = `usage: npm run bench -- [options]

  --repeat K      runs per case, medians over them (default 7)
  --warmup W      discarded rounds before measuring (default 1)
  --scale X       multiply every case's exit count by X (default 1)
  --quick         --repeat 3 --warmup 0 --scale 0.2
  --spin N[,N..]  spin bounds for the pipe_baseline --spin cases (default 200)
  --only A[,B..]  only cases whose id contains one of these (their baselines run too)
  --out FILE      results file (default bench/results/latest.json)
  --markdown      also print the table as Markdown (for bench/README.md)
  --timeout S     per-process time limit in seconds (default 180)
  --host FILE     the host CLI to run (default dist/bundle/plugvisor.cjs)
  --list          list the cases and whether they can run, then exit`;

function parseOptions(argv: string[]): Options {
  const o: Options = {
    repeat: 7,
    warmup: 1,
    scale: 1,
    spin: [200],
    only: [],
    out: DEFAULT_OUT,
    list: false,
    markdown: false,
    timeoutSec: 180,
  };
  forEachArgument(argv, (a, value) => {
    const positive = (v: string, integer: boolean): number => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) throw new Error(`${a}: bad value ${v}`);
      return n;
    };
    switch (a) {
      case '--repeat':
        o.repeat = Math.max(1, positive(value(), true));
        break;
      case '--warmup':
        o.warmup = positive(value(), true);
        break;
      case '--scale':
        o.scale = positive(value(), false);
        break;
      case '--quick':
        o.repeat = 3;
        o.warmup = 0;
        o.scale = 0.2;
        break;
      case '--spin':
        o.spin = value()
          .split(',')
          .map((v) => positive(v, true))
          .filter((n) => n > 0);
        break;
      case '--only':
        o.only = value()
          .split(',')
          .filter((s) => s.length > 0);
        break;
      case '--out':
        o.out = path.resolve(value());
        break;
      case '--markdown':
        o.markdown = true;
        break;
      case '--timeout':
        o.timeoutSec = positive(value(), false);
        break;
      case '--list':
        o.list = true;
        break;
      case '--host':
        HOST_CLI = path.resolve(value());
        break;
      case '-h':
      case '--help':
        process.stdout.write(`${USAGE}\n`);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${a}\n${USAGE}`);
    }
  });
  return o;
}

// ---------------------------------------------------------------------------
// processes

interface ProcResult {
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall clock (epoch ms) just before spawn(). */
  spawnUnixMs: number;
}

/** Process groups this runner started and that are still running. */
const live = new Set<number>();

function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    for (const pid of live) killGroup(pid);
    process.exit(130);
  });
}

function nowUnixMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Runs a command in its own process group (so a time-out can end it and every
 * process it started, and nothing else) and collects its output.
 */
function runProcess(
  cmd: string,
  args: string[],
  timeoutSec: number,
  onSpawn?: (pid: number) => void,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ProcResult> {
  return new Promise((resolve, reject) => {
    const spawnUnixMs = nowUnixMs();
    const child = spawn(cmd, args, { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env });
    const pid = child.pid;
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    let timer: NodeJS.Timeout | undefined;
    if (pid !== undefined) {
      live.add(pid);
      timer = setTimeout(() => {
        stderr += `\n[bench] timed out after ${timeoutSec} s: killed`;
        killGroup(pid);
      }, timeoutSec * 1000);
      onSpawn?.(pid);
    }
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      if (pid !== undefined) live.delete(pid);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (pid !== undefined) live.delete(pid);
      resolve({ pid: pid ?? -1, code, signal, stdout, stderr, spawnUnixMs });
    });
  });
}

function tail(text: string, lines = 8): string {
  return text.trim().split('\n').slice(-lines).join('\n');
}

function checkExit(what: string, r: ProcResult): void {
  if (r.code === 0) return;
  const how = r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  throw new Error(`${what}: ${how}${r.stderr.trim() ? `\n${tail(r.stderr)}` : ''}`);
}

type Json = Record<string, unknown>;

function lastJsonLine(what: string, text: string): Json {
  const line = text
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .pop();
  if (!line) throw new Error(`${what}: no JSON result in its output`);
  return JSON.parse(line) as Json;
}

function readJson(file: string): Json {
  return JSON.parse(readFileSync(file, 'utf8')) as Json;
}

function num(j: Json, key: string): number {
  const v = j[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`result has no numeric '${key}': ${JSON.stringify(j)}`);
  return v;
}

function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'plugvisor-bench-'));
  return fn(dir).finally(() => rmSync(dir, { recursive: true, force: true }));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** VmHWM/VmRSS (status) and Pss (smaps_rollup) of a live process, in KiB. */
function memoryOf(pid: number): { hwmKiB: number; rssKiB: number; pssKiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (text: string, name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) : NaN;
  };
  let pss = NaN;
  try {
    pss = field(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'), 'Pss');
  } catch {
    /* kernel without smaps_rollup */
  }
  return { hwmKiB: field(status, 'VmHWM'), rssKiB: field(status, 'VmRSS'), pssKiB: pss };
}

// ---------------------------------------------------------------------------
// building and prerequisites

let cBuildError: string | undefined;
let cPluginReason: string | undefined = 'not checked';

function buildC(): void {
  const r = spawnSync('make', ['-s', '-C', C_DIR], { encoding: 'utf8' });
  if (r.error) cBuildError = `make: ${r.error.message}`;
  else if (r.status !== 0) cBuildError = `make -C bench/c failed:\n${tail(r.stderr || r.stdout)}`;
}

function findFile(dir: string, name: string, depth = 3): string | undefined {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return undefined;
  }
  if (names.includes(name)) return path.join(dir, name);
  if (depth === 0) return undefined;
  for (const n of names) {
    const full = path.join(dir, n);
    try {
      if (statSync(full).isDirectory()) {
        const found = findFile(full, name, depth - 1);
        if (found) return found;
      }
    } catch {
      /* vanished */
    }
  }
  return undefined;
}

/** Builds bench/build/exit_loop_plugin when the project's C client library exists. */
function buildCPlugin(): void {
  const header = path.join(CLIENT_INCLUDE, 'crosvm.h');
  const lib = findFile(CLIENT_BUILD, 'libcrosvm_plugin.so');
  if (!existsSync(header)) {
    cPluginReason = 'the C client library is not there yet (clients/c/include/crosvm.h)';
    return;
  }
  if (!lib) {
    cPluginReason = 'the C client library is not built yet (no libcrosvm_plugin.so under clients/c/build)';
    return;
  }
  const r = spawnSync(
    'make',
    ['-s', '-C', C_DIR, 'plugin', `CROSVM_INCLUDE=${CLIENT_INCLUDE}`, `CROSVM_LIBDIR=${path.dirname(lib)}`],
    { encoding: 'utf8' },
  );
  if (r.error || r.status !== 0)
    cPluginReason = `building exit_loop_plugin failed:\n${tail(r.stderr || r.stdout || String(r.error))}`;
  else cPluginReason = undefined;
}

function needC(): string | undefined {
  return cBuildError;
}

function needPlugvisor(): string | undefined {
  if (cBuildError) return cBuildError;
  if (!existsSync(HOST_CLI)) return `the host CLI is not built yet (${path.relative(ROOT, HOST_CLI)})`;
  if (!existsSync(SDK)) return 'the plugin SDK is not built yet (dist/bundle/plugin.js)';
  if (!existsSync(TS_PLUGIN)) return 'the benchmark plugin is not built (dist/bench/plugins/exit-loop.js: npm run build)';
  return undefined;
}

function needGuestToolkit(): string | undefined {
  if (cBuildError) return cBuildError;
  if (!existsSync(HOST_CLI)) return `the host CLI is not built yet (${path.relative(ROOT, HOST_CLI)})`;
  if (!existsSync(GUEST_SDK)) return 'plugvisor/guest is not built yet (dist/bundle/guest.js)';
  return undefined;
}

function needPlugvisorC(): string | undefined {
  return needPlugvisor() ?? cPluginReason;
}

function needJailedPlugvisorC(): string | undefined {
  const bwrap = spawnSync('bwrap', ['--version'], { stdio: 'ignore' });
  return needPlugvisorC() ?? (bwrap.error || bwrap.status !== 0 ? 'bubblewrap (bwrap), the jail, is not installed' : undefined);
}

// ---------------------------------------------------------------------------
// cases

type Metrics = Record<string, number>;

interface MetricSpec {
  key: string;
  unit: string;
  /** Which way is good, for the reader (the ratio is always case / baseline). */
  better: 'lower' | 'higher';
}

interface RunContext {
  options: Options;
  /** Scales a default exit count by --scale (at least 1). */
  exits(n: number): number;
}

interface Case {
  id: string;
  title: string;
  metrics: MetricSpec[];
  baseline?: string;
  /** This case's metric key -> the baseline case's metric key (default: the same key). */
  baselineMetrics?: Record<string, string>;
  /** Why the case cannot run here, or undefined when it can. */
  unavailable(): string | undefined;
  run(ctx: RunContext): Promise<Metrics>;
  /** At most this many measured rounds (expensive cases). */
  maxRepeat?: number;
  /** Skip warm-up rounds. */
  noWarmup?: boolean;
}

const lower = (key: string, unit: string): MetricSpec => ({ key, unit, better: 'lower' });
const higher = (key: string, unit: string): MetricSpec => ({ key, unit, better: 'higher' });

/** Round-trip metrics of the C programs (raw_exit, pipe_baseline). */
function cExitMetrics(j: Json): Metrics {
  return {
    usPerExit: num(j, 'usPerExit'),
    cpuUsPerExit: num(j, 'cpuUsPerExit'),
    exitsPerSec: num(j, 'exitsPerSec'),
    maxRssMiB: num(j, 'maxRssKiB') / 1024,
  };
}

async function runC(bin: string, args: string[], ctx: RunContext): Promise<Json> {
  const r = await runProcess(bin, args, ctx.options.timeoutSec);
  checkExit(path.basename(bin), r);
  return lastJsonLine(path.basename(bin), r.stdout);
}

/** The metrics of {@link cExitMetrics} that a C program's case shows. */
const C_EXIT_METRICS: MetricSpec[] = [lower('usPerExit', 'µs'), lower('cpuUsPerExit', 'µs'), higher('exitsPerSec', '/s')];

/** A case of one of the C programs (raw_exit, pipe_baseline): `bin EXITS args...`. */
function cCase(bin: string, id: string, title: string, exits: number, args: string[], baseline?: string): Case {
  return {
    id,
    title,
    baseline,
    metrics: C_EXIT_METRICS,
    unavailable: needC,
    run: async (ctx) => cExitMetrics(await runC(bin, [String(ctx.exits(exits)), ...args], ctx)),
  };
}

function rawCase(id: string, title: string, exits: number, args: string[], baseline?: string): Case {
  return cCase(RAW_EXIT, id, title, exits, args, baseline);
}

function pipeCase(id: string, title: string, exits: number, args: string[], baseline: string): Case {
  return cCase(PIPE_BASELINE, id, title, exits, args, baseline);
}

function spinCase(spin: number, exits: number): Case {
  return {
    id: `pipe-spin${spin}.io.1cpu`,
    title: `pipe round trip, both sides spin up to ${spin} reads before poll`,
    baseline: 'raw.io.1cpu',
    metrics: [...C_EXIT_METRICS, lower('blockedPct', '%'), lower('spinWindowUs', 'µs')],
    unavailable: needC,
    run: async (ctx) => {
      const j = await runC(PIPE_BASELINE, [String(ctx.exits(exits)), '--spin', String(spin)], ctx);
      const reads = num(j, 'vmmSpinHits') + num(j, 'vmmBlocks') + num(j, 'pluginSpinHits') + num(j, 'pluginBlocks');
      return {
        ...cExitMetrics(j),
        blockedPct: (100 * (num(j, 'vmmBlocks') + num(j, 'pluginBlocks'))) / Math.max(1, reads),
        spinWindowUs: (spin * num(j, 'spinReadNs')) / 1000,
      };
    },
  };
}

interface HostRunOptions {
  /** PLUGVISOR_SPIN_US for the host and the plugin (default: theirs). */
  spinUs?: number;
  /** Run the plugin in plugvisor's jail (the CLI's default) instead of with --disable-sandbox. */
  sandboxed?: boolean;
}

/** Runs `node HOST run --plugin PLUGIN ...` under rusage_exec; returns the plugin's result and the rusage. */
async function runPlugvisor(
  ctx: RunContext,
  plugin: string,
  cpus: number,
  pluginArgs: string[],
  opts: HostRunOptions = {},
): Promise<{ plugin: Json; rusage: Json; proc: ProcResult }> {
  return withTempDir(async (dir) => {
    const pluginOut = path.join(dir, 'plugin.json');
    const rusageOut = path.join(dir, 'rusage.json');
    // In the jail the plugin sees only what is bound: give it the result directory, writable.
    const sandboxArgs = opts.sandboxed ? ['--plugin-mount', `${dir}:${dir}:true`] : ['--disable-sandbox'];
    const env = opts.spinUs === undefined ? process.env : { ...process.env, PLUGVISOR_SPIN_US: String(opts.spinUs) };
    const proc = await runProcess(
      RUSAGE_EXEC,
      [
        rusageOut,
        process.execPath,
        HOST_CLI,
        'run',
        '--plugin',
        plugin,
        '--cpus',
        String(cpus),
        ...sandboxArgs,
        '--',
        ...pluginArgs,
        '--out',
        pluginOut,
      ],
      ctx.options.timeoutSec,
      undefined,
      env,
    );
    checkExit('plugvisor', proc);
    if (!existsSync(pluginOut)) throw new Error(`plugvisor exited 0 but the plugin wrote no result\n${tail(proc.stderr)}`);
    return { plugin: readJson(pluginOut), rusage: readJson(rusageOut), proc };
  });
}

function roundTripMetrics(p: Json): Metrics {
  const exits = num(p, 'exits');
  const host = num(p, 'loopHostCpuSec');
  const plugin = num(p, 'loopPluginCpuSec');
  return {
    usPerExit: num(p, 'usPerExit'),
    cpuUsPerExit: ((host + plugin) * 1e6) / exits,
    hostCpuUsPerExit: (host * 1e6) / exits,
    pluginCpuUsPerExit: (plugin * 1e6) / exits,
    exitsPerSec: num(p, 'exitsPerSec'),
  };
}

/** `spinUs`: PLUGVISOR_SPIN_US for both sides; `pluginArgs`: more arguments for the plugin (e.g. --threads). */
function plugvisorCase(
  id: string,
  title: string,
  kind: 'ts' | 'c',
  cpus: number,
  exits: number,
  mode: 'io' | 'mmio',
  baseline: string,
  opts: { spinUs?: number; pluginArgs?: string[] } = {},
): Case {
  return {
    id,
    title,
    baseline,
    metrics: [
      lower('usPerExit', 'µs'),
      lower('cpuUsPerExit', 'µs'),
      lower('hostCpuUsPerExit', 'µs'),
      lower('pluginCpuUsPerExit', 'µs'),
      higher('exitsPerSec', '/s'),
    ],
    baselineMetrics: { usPerExit: 'usPerExit', cpuUsPerExit: 'cpuUsPerExit', exitsPerSec: 'exitsPerSec' },
    unavailable: kind === 'ts' ? needPlugvisor : needPlugvisorC,
    run: async (ctx) => {
      const args = ['--exits', String(ctx.exits(exits)), ...(mode === 'mmio' ? ['--mmio'] : []), ...(opts.pluginArgs ?? [])];
      const { plugin } = await runPlugvisor(ctx, kind === 'ts' ? TS_PLUGIN : C_PLUGIN, cpus, args, { spinUs: opts.spinUs });
      return roundTripMetrics(plugin);
    },
  };
}

function asyncCase(kind: 'ts' | 'c', exits: number): Case {
  return {
    id: `plugvisor.${kind}.async`,
    title: `async-write notifications, ${kind === 'ts' ? 'TypeScript' : 'C'} plugin, 1 VCPU`,
    baseline: 'raw.io.1cpu',
    metrics: [higher('notificationsPerSec', '/s'), lower('cpuUsPerNotification', 'µs')],
    baselineMetrics: { notificationsPerSec: 'exitsPerSec', cpuUsPerNotification: 'cpuUsPerExit' },
    unavailable: kind === 'ts' ? needPlugvisor : needPlugvisorC,
    run: async (ctx) => {
      const { plugin } = await runPlugvisor(ctx, kind === 'ts' ? TS_PLUGIN : C_PLUGIN, 1, [
        '--exits',
        String(ctx.exits(exits)),
        '--async',
      ]);
      const m = roundTripMetrics(plugin);
      return { notificationsPerSec: m.exitsPerSec, cpuUsPerNotification: m.cpuUsPerExit };
    },
  };
}

/**
 * The main thread under a VCPU exit storm (issue 16): 4 VCPUs make async-write
 * exits as fast as they can (a worker thread of the plugin each), while the
 * plugin's main thread times main requests on a connection of its own; then
 * as many again with the VCPUs idle. `host`: requests the host answers
 * without KVM (reserve + unreserve + pause of no VCPU), so what they wait for
 * is the host's one main thread; `kvm`: an io event and a memory slot created
 * and destroyed, so the kernel's cost of changing a running VM is in it too.
 * The ratio that matters is within the case: storm p99 over idle p99.
 */
function stormCase(kind: 'host' | 'kvm'): Case {
  return {
    id: `plugvisor.ts.storm.4cpu.${kind}`,
    title: `${kind === 'host' ? 'reserve/unreserve/pause' : 'io event + memory slot create/destroy'} latency while 4 VCPUs exit as fast as they can (async writes)`,
    metrics: [
      lower('stormP50Ms', 'ms'),
      lower('stormP99Ms', 'ms'),
      lower('stormMaxMs', 'ms'),
      lower('idleP50Ms', 'ms'),
      lower('idleP99Ms', 'ms'),
      lower('stormOverIdleP99', 'x'),
      higher('probes', ''),
    ],
    unavailable: needPlugvisor,
    run: async (ctx) => {
      const { plugin } = await runPlugvisor(ctx, TS_PLUGIN, 4, [
        '--exits',
        String(ctx.exits(200_000)),
        '--async',
        '--threads',
        '--probe-main',
        kind,
      ]);
      return {
        stormP50Ms: num(plugin, 'probeStormP50Ms'),
        stormP99Ms: num(plugin, 'probeStormP99Ms'),
        stormMaxMs: num(plugin, 'probeStormMaxMs'),
        idleP50Ms: num(plugin, 'probeIdleP50Ms'),
        idleP99Ms: num(plugin, 'probeIdleP99Ms'),
        stormOverIdleP99: num(plugin, 'probeStormP99Ms') / num(plugin, 'probeIdleP99Ms'),
        probes: num(plugin, 'probeStormCount'),
      };
    },
  };
}

/**
 * Steady state of a long 1-VCPU round-trip run: the plugin times the exits
 * after each VCPU's first `warmupExits` apart (a TypeScript plugin's loop is
 * interpreted by V8 for the first few thousand exits), and reports the
 * warm-up's one-time cost on top of steady state. With `spinUs` = 0 it is
 * crosvm's design (blocking reads), against the C pipe baseline; otherwise
 * plugvisor's default (bounded spin), against the same pipe design spinning
 * (`spinBaseline`).
 */
function steadyCase(kind: 'ts' | 'c', exits: number, warmupExits: number, spinBaseline: string, spinUs?: 0): Case {
  const lang = kind === 'ts' ? 'TypeScript' : 'C';
  const baseline = spinUs === 0 ? 'pipe.io.1cpu' : spinBaseline;
  return {
    id: `plugvisor.${kind}.io.1cpu${spinUs === 0 ? '.nospin' : ''}.steady`,
    title:
      spinUs === 0
        ? `plugvisor round trip, no spin (PLUGVISOR_SPIN_US=0), ${lang} plugin: steady state after warm-up`
        : `plugvisor round trip, port write, ${lang} plugin: steady state after warm-up`,
    baseline,
    metrics: [lower('usPerExitSteady', 'µs'), lower('cpuUsPerExitSteady', 'µs'), lower('warmupExtraMs', 'ms')],
    baselineMetrics: { usPerExitSteady: 'usPerExit', cpuUsPerExitSteady: 'cpuUsPerExit' },
    unavailable: kind === 'ts' ? needPlugvisor : needPlugvisorC,
    run: async (ctx) => {
      const { plugin } = await runPlugvisor(
        ctx,
        kind === 'ts' ? TS_PLUGIN : C_PLUGIN,
        1,
        ['--exits', String(ctx.exits(exits)), '--warmup-exits', String(ctx.exits(warmupExits))],
        { spinUs },
      );
      return {
        usPerExitSteady: num(plugin, 'usPerExitSteady'),
        cpuUsPerExitSteady: num(plugin, 'cpuUsPerExitSteady'),
        warmupExtraMs: num(plugin, 'warmupExtraMs'),
      };
    },
  };
}

const startupMetrics = [lower('msToFirstExit', 'ms'), lower('msWholeRun', 'ms'), lower('cpuMsWholeRun', 'ms')];

/**
 * Start-up of a whole plugvisor run with 1 exit per VCPU. With 1 VCPU,
 * against an empty node's whole run (a node host cannot start faster than
 * node itself); with more, against the same run with 1 VCPU.
 */
function plugvisorStartupCase(kind: 'ts' | 'c', sandboxed = false, cpus = 1): Case {
  const lang = kind === 'ts' ? 'TypeScript' : 'C';
  const needCPlugin = sandboxed ? needJailedPlugvisorC : needPlugvisorC;
  const variant = `${sandboxed ? '.sandboxed' : ''}${cpus > 1 ? `.${cpus}cpu` : ''}`;
  return {
    id: `plugvisor.${kind}.startup${variant}`,
    title:
      `start-up to first guest exit, and a whole 1-exit run (${lang} plugin${sandboxed ? ', in the jail: the CLI default' : ''}` +
      `${cpus > 1 ? `, ${cpus} VCPUs` : ''})`,
    ...(cpus > 1
      ? { baseline: `plugvisor.${kind}.startup${sandboxed ? '.sandboxed' : ''}` }
      : {
          baseline: 'node.empty',
          baselineMetrics: { msToFirstExit: 'msWholeRun', msWholeRun: 'msWholeRun', cpuMsWholeRun: 'cpuMsWholeRun' },
        }),
    metrics: startupMetrics,
    unavailable: kind === 'ts' ? needPlugvisor : needCPlugin,
    run: async (ctx) => {
      const { plugin, rusage, proc } = await runPlugvisor(ctx, kind === 'ts' ? TS_PLUGIN : C_PLUGIN, cpus, ['--exits', '1'], {
        sandboxed,
      });
      return {
        msToFirstExit: num(plugin, 'firstExitUnixMs') - proc.spawnUnixMs,
        msWholeRun: num(rusage, 'wallSec') * 1000,
        cpuMsWholeRun: (num(rusage, 'userSec') + num(rusage, 'sysSec')) * 1000,
      };
    },
  };
}

/**
 * Starts `vms` hosts at once (TypeScript plugin, `cpus` VCPUs each), waits
 * until every plugin has run its exits and is holding its VM, reads each
 * host's memory from /proc, then lets them all finish.
 */
async function holdVms(
  ctx: RunContext,
  vms: number,
  cpus: number,
): Promise<{ hosts: ReturnType<typeof memoryOf>[]; plugins: Json[] }> {
  return withTempDir(async (dir) => {
    const release = path.join(dir, 'release');
    const pids: number[] = [];
    const runs: Promise<ProcResult>[] = [];
    for (let i = 0; i < vms; i++) {
      runs.push(
        runProcess(
          process.execPath,
          [
            HOST_CLI,
            'run',
            '--plugin',
            TS_PLUGIN,
            '--cpus',
            String(cpus),
            '--disable-sandbox',
            '--',
            '--exits',
            '1000',
            '--out',
            path.join(dir, `plugin-${i}.json`),
            '--hold',
            release,
          ],
          ctx.options.timeoutSec,
          (pid) => pids.push(pid),
        ),
      );
    }
    let exited: ProcResult | undefined;
    const watchers = runs.map((r) =>
      r.then((res) => {
        exited ??= res;
        return res;
      }),
    );
    try {
      const deadline = Date.now() + ctx.options.timeoutSec * 1000;
      const outs = Array.from({ length: vms }, (_, i) => path.join(dir, `plugin-${i}.json`));
      while (!outs.every((f) => existsSync(f))) {
        if (exited) {
          checkExit('plugvisor (holding a VM)', exited);
          throw new Error('a host exited before its plugin reported');
        }
        if (Date.now() > deadline) throw new Error('timed out waiting for the VMs to come up');
        await sleep(10);
      }
      const hosts = pids.map((pid) => memoryOf(pid));
      const plugins = outs.map((f) => readJson(f));
      writeFileSync(release, '');
      for (const r of await Promise.all(watchers)) checkExit('plugvisor (after holding)', r);
      return { hosts, plugins };
    } finally {
      writeFileSync(release, '');
      for (const pid of pids) if (live.has(pid)) killGroup(pid);
      await Promise.allSettled(runs);
    }
  });
}

function rssCase(id: string, title: string, vms: number, cpus: number): Case {
  const perVm = vms > 1;
  const base: Case = {
    id,
    title,
    baseline: 'node.empty',
    metrics: perVm
      ? [
          lower('perVmHostPeakRssMiB', 'MiB'),
          lower('perVmHostPssMiB', 'MiB'),
          lower('totalHostPssMiB', 'MiB'),
          lower('perVmPluginPeakRssMiB', 'MiB'),
        ]
      : [
          lower('hostPeakRssMiB', 'MiB'),
          lower('hostPssMiB', 'MiB'),
          lower('hostPeakRssAboveNodeMiB', 'MiB'),
          lower('pluginPeakRssMiB', 'MiB'),
        ],
    baselineMetrics: perVm
      ? { perVmHostPeakRssMiB: 'peakRssMiB', perVmHostPssMiB: 'pssMiB' }
      : { hostPeakRssMiB: 'peakRssMiB', hostPssMiB: 'pssMiB' },
    unavailable: needPlugvisor,
    run: async (ctx): Promise<Metrics> => {
      const { hosts, plugins } = await holdVms(ctx, vms, cpus);
      const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
      const hwm = sum(hosts.map((h) => h.hwmKiB)) / 1024;
      const pss = sum(hosts.map((h) => h.pssKiB)) / 1024;
      const pluginHwm = sum(plugins.map((p) => num(p, 'pluginMaxRssKiB'))) / 1024;
      if (perVm)
        return {
          perVmHostPeakRssMiB: hwm / vms,
          perVmHostPssMiB: pss / vms,
          totalHostPssMiB: pss,
          perVmPluginPeakRssMiB: pluginHwm / vms,
        };
      // The target is a difference (at most 8 MiB above an empty node), measured in the same round.
      const node = await emptyNode(ctx);
      return {
        hostPeakRssMiB: hwm,
        hostPssMiB: pss,
        hostPeakRssAboveNodeMiB: hwm - node.peakRssMiB,
        pluginPeakRssMiB: pluginHwm,
      };
    },
  };
  if (perVm) {
    base.maxRepeat = 3;
    base.noWarmup = true;
  }
  return base;
}

/** An empty node process's whole run and memory (node.empty; and the floor the memory cases subtract). */
async function emptyNode(ctx: RunContext): Promise<Metrics> {
  return withTempDir(async (dir) => {
    const out = path.join(dir, 'rusage.json');
    const r = await runProcess(RUSAGE_EXEC, [out, process.execPath, '-e', NODE_EMPTY_SCRIPT], ctx.options.timeoutSec);
    checkExit('node -e', r);
    const j = lastJsonLine('node -e', r.stdout);
    const ru = readJson(out);
    return {
      msWholeRun: num(ru, 'wallSec') * 1000,
      cpuMsWholeRun: (num(ru, 'userSec') + num(ru, 'sysSec')) * 1000,
      peakRssMiB: num(j, 'peakRssKiB') / 1024,
      pssMiB: num(j, 'pssKiB') / 1024,
    };
  });
}

/**
 * What each VCPU beyond the first costs the host: the peak RSS of one VM with
 * `cpus` VCPUs and of one with 1, measured in the same round, and their
 * difference per extra VCPU (the target is at most 1 MiB).
 */
function vcpuMemoryCase(cpus: number): Case {
  return {
    id: `plugvisor.rss.1vm.${cpus}cpu`,
    title: `host memory, 1 VM with ${cpus} VCPUs, and per VCPU beyond the first`,
    baseline: 'plugvisor.rss.1vm.1cpu',
    metrics: [lower('hostPeakRssMiB', 'MiB'), lower('hostPssMiB', 'MiB'), lower('perExtraVcpuMiB', 'MiB')],
    unavailable: needPlugvisor,
    run: async (ctx) => {
      const one = (await holdVms(ctx, 1, 1)).hosts[0];
      const many = (await holdVms(ctx, 1, cpus)).hosts[0];
      return {
        hostPeakRssMiB: many.hwmKiB / 1024,
        hostPssMiB: many.pssKiB / 1024,
        perExtraVcpuMiB: (many.hwmKiB - one.hwmKiB) / 1024 / (cpus - 1),
      };
    },
  };
}

/** `plugvisor exec PROGRAM` under rusage_exec (unsandboxed unless `sandboxed`): the program's JSON line and the rusage. */
async function runExec(
  ctx: RunContext,
  program: string,
  sandboxed = false,
): Promise<{ guest: Json; rusage: Json; proc: ProcResult }> {
  return withTempDir(async (dir) => {
    const rusageOut = path.join(dir, 'rusage.json');
    const proc = await runProcess(
      RUSAGE_EXEC,
      [rusageOut, process.execPath, HOST_CLI, 'exec', ...(sandboxed ? [] : ['--disable-sandbox']), program],
      ctx.options.timeoutSec,
    );
    checkExit('plugvisor exec', proc);
    return { guest: lastJsonLine('plugvisor exec', proc.stdout), rusage: readJson(rusageOut), proc };
  });
}

/** The compute kernel natively, once per round: the baseline of guest.kernel. */
const kernelNativeCase: Case = {
  id: 'c.kernel',
  title: 'compute kernel (bench/c/kernel.h: sieve, CRC-32, matrix product) as a Linux process: 2nd pass, 1st pass',
  metrics: [lower('kernelMs', 'ms'), lower('firstPassMs', 'ms')],
  unavailable: needC,
  run: async (ctx) => {
    const j = await runC(KERNEL_NATIVE, [], ctx);
    nativeKernelChecksum = j['checksum'];
    return { kernelMs: num(j, 'kernelMs'), firstPassMs: num(j, 'firstPassMs') };
  },
};

/** The checksum the native kernel printed (c.kernel runs first in every round), to check that the guest computed the same. */
let nativeKernelChecksum: unknown;

const kernelGuestCase: Case = {
  id: 'guest.kernel',
  title: 'the same compute kernel as a plugvisor program (plugvisor exec, CPL 3, timed with host calls)',
  baseline: 'c.kernel',
  metrics: [lower('kernelMs', 'ms'), lower('firstPassMs', 'ms')],
  unavailable: needGuestToolkit,
  run: async (ctx) => {
    nativeKernelChecksum ??= (await runC(KERNEL_NATIVE, [], ctx))['checksum'];
    const { guest } = await runExec(ctx, KERNEL_GUEST);
    if (guest['checksum'] !== nativeKernelChecksum) {
      throw new Error(
        `the guest's checksum ${String(guest['checksum'])} differs from the native ${String(nativeKernelChecksum)}`,
      );
    }
    return { kernelMs: num(guest, 'kernelMs'), firstPassMs: num(guest, 'firstPassMs') };
  },
};

function execStartupCase(sandboxed: boolean): Case {
  return {
    id: `guest.exec.startup${sandboxed ? '.sandboxed' : ''}`,
    title: `plugvisor exec: start to the program's first instruction (a host call), whole run${sandboxed ? ' (in the jail: the default)' : ''}`,
    baseline: 'node.empty',
    metrics: [lower('msToFirstInstruction', 'ms'), lower('msWholeRun', 'ms'), lower('cpuMsWholeRun', 'ms')],
    baselineMetrics: { msToFirstInstruction: 'msWholeRun', msWholeRun: 'msWholeRun', cpuMsWholeRun: 'cpuMsWholeRun' },
    unavailable: needGuestToolkit,
    run: async (ctx) => {
      const { guest, rusage, proc } = await runExec(ctx, STARTUP_GUEST, sandboxed);
      return {
        msToFirstInstruction: num(guest, 'firstInstructionUnixMs') - proc.spawnUnixMs,
        msWholeRun: num(rusage, 'wallSec') * 1000,
        cpuMsWholeRun: (num(rusage, 'userSec') + num(rusage, 'sysSec')) * 1000,
      };
    },
  };
}

/**
 * An idle guest: after its exits every VCPU halts (HLT, which the in-kernel
 * irqchip handles without leaving KVM_RUN) and the plugin sleeps; the host's
 * CPU time over that window, in % of one core (its resolution is 10 ms in
 * 2 s: 0.5 %). The target is none at all.
 */
function idleCase(cpus: number): Case {
  return {
    id: `plugvisor.c.idle.${cpus}cpu`,
    title: `an idle VM (${cpus} VCPUs halted, the C plugin asleep): the host's CPU use`,
    metrics: [lower('idleHostCpuPct', '%'), lower('idlePluginCpuPct', '%')],
    unavailable: needPlugvisorC,
    run: async (ctx) => {
      const { plugin } = await runPlugvisor(ctx, C_PLUGIN, cpus, ['--exits', '100', '--idle-ms', '2000']);
      return { idleHostCpuPct: num(plugin, 'idleHostCpuPct'), idlePluginCpuPct: num(plugin, 'idlePluginCpuPct') };
    },
  };
}

function hostCallCase(calls: number, warmup: number): Case {
  return {
    id: 'guest.hostcall',
    title: 'host call round trip: program -> TypeScript function of the plugin -> program, after warm-up',
    // The floor of the same exit: from CPL 3 (raw.user.1cpu's own ratio says what CPL 3 costs against real mode).
    baseline: 'raw.user.1cpu',
    metrics: [lower('usPerCall', 'µs')],
    baselineMetrics: { usPerCall: 'usPerExit' },
    unavailable: () =>
      needGuestToolkit() ?? (existsSync(HOSTCALL_PLUGIN) ? undefined : 'dist/bench/plugins/host-call.js is not built'),
    run: async (ctx) => {
      const proc = await runProcess(
        process.execPath,
        [
          HOST_CLI,
          'run',
          '--disable-sandbox',
          '--plugin',
          HOSTCALL_PLUGIN,
          '--',
          HOSTCALL_GUEST,
          String(ctx.exits(calls)),
          String(ctx.exits(warmup)),
        ],
        ctx.options.timeoutSec,
      );
      checkExit('plugvisor run host-call.js', proc);
      return { usPerCall: num(lastJsonLine('host-call.js', proc.stdout), 'usPerCall') };
    },
  };
}

/** A node process that does nothing but report its own memory: the floor under any node host. */
const NODE_EMPTY_SCRIPT = `
const fs = require('fs');
const f = (t, n) => Number((new RegExp('^' + n + ':\\\\s+(\\\\d+) kB', 'm').exec(t) || [])[1]);
let pss = NaN;
try { pss = f(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'), 'Pss'); } catch {}
console.log(JSON.stringify({ peakRssKiB: f(fs.readFileSync('/proc/self/status', 'utf8'), 'VmHWM'), pssKiB: pss }));
`;

function buildCases(o: Options): Case[] {
  // The design's floor when both sides spin, as plugvisor's do by default: the baseline of its round trips.
  const spinBaseline = `pipe-spin${o.spin[0] ?? 200}.io.1cpu`;
  const cases: Case[] = [
    // --- C floors and baselines ---
    rawCase('raw.io.1cpu', 'KVM exit floor: port write, VMM just re-enters (C)', 50_000, []),
    rawCase('raw.mmio.1cpu', 'KVM exit floor: MMIO write (C)', 50_000, ['--mmio'], 'raw.io.1cpu'),
    rawCase('raw.io.2cpu', 'KVM exit floor: port write, 2 VCPUs (C, a thread each)', 50_000, ['--cpus', '2'], 'raw.io.1cpu'),
    rawCase(
      'raw.user.1cpu',
      'KVM exit floor: port write from 64-bit user mode, CPL 3, as plugvisor programs exit (C)',
      50_000,
      ['--user'],
      'raw.io.1cpu',
    ),
    pipeCase('pipe.io.1cpu', 'pipe round trip per exit to a 2nd process (C)', 50_000, [], 'raw.io.1cpu'),
    pipeCase('pipe.mmio.1cpu', 'pipe round trip per MMIO exit (C)', 50_000, ['--mmio'], 'raw.mmio.1cpu'),
    pipeCase('pipe.io.2cpu', 'pipe round trip, 2 VCPUs, 1-thread plugin (C)', 50_000, ['--cpus', '2'], 'raw.io.2cpu'),
    ...(o.spin.length > 0 ? o.spin : [200]).map((s) => spinCase(s, 20_000)),
    {
      id: 'c.startup',
      title: 'C VMM process (raw_exit 1): start to first guest exit, whole run',
      metrics: [...startupMetrics, lower('peakRssMiB', 'MiB')],
      unavailable: needC,
      run: async (ctx) =>
        withTempDir(async (dir) => {
          const out = path.join(dir, 'rusage.json');
          const r = await runProcess(RUSAGE_EXEC, [out, RAW_EXIT, '1'], ctx.options.timeoutSec);
          checkExit('raw_exit', r);
          const j = lastJsonLine('raw_exit', r.stdout);
          const ru = readJson(out);
          return {
            msToFirstExit: num(j, 'firstExitUnixMs') - r.spawnUnixMs,
            msWholeRun: num(ru, 'wallSec') * 1000,
            cpuMsWholeRun: (num(ru, 'userSec') + num(ru, 'sysSec')) * 1000,
            peakRssMiB: num(j, 'maxRssKiB') / 1024,
          };
        }),
    },
    {
      id: 'node.empty',
      title: 'an empty node process (the floor under a node host)',
      baseline: 'c.startup',
      metrics: [lower('msWholeRun', 'ms'), lower('cpuMsWholeRun', 'ms'), lower('peakRssMiB', 'MiB'), lower('pssMiB', 'MiB')],
      unavailable: needC,
      run: (ctx) => emptyNode(ctx),
    },

    // --- plugvisor (wired; they run once the host, the SDK and the C library exist) ---
    // Default settings (bounded spin on the VCPU pipes): against the kernel's floor.
    plugvisorCase(
      'plugvisor.ts.io.1cpu',
      'plugvisor round trip, port write, TypeScript plugin',
      'ts',
      1,
      20_000,
      'io',
      spinBaseline,
    ),
    plugvisorCase(
      'plugvisor.ts.mmio.1cpu',
      'plugvisor round trip, MMIO write, TypeScript plugin',
      'ts',
      1,
      20_000,
      'mmio',
      'raw.mmio.1cpu',
    ),
    plugvisorCase(
      'plugvisor.ts.io.2cpu',
      'plugvisor round trip, port write, 2 VCPUs, TypeScript plugin (1 thread)',
      'ts',
      2,
      20_000,
      'io',
      'raw.io.2cpu',
    ),
    plugvisorCase(
      'plugvisor.ts.io.2cpu.threads',
      'plugvisor round trip, port write, 2 VCPUs, TypeScript plugin, worker thread per VCPU',
      'ts',
      2,
      20_000,
      'io',
      'raw.io.2cpu',
      { pluginArgs: ['--threads'] },
    ),
    plugvisorCase('plugvisor.c.io.1cpu', 'plugvisor round trip, port write, C plugin', 'c', 1, 20_000, 'io', spinBaseline),
    plugvisorCase('plugvisor.c.mmio.1cpu', 'plugvisor round trip, MMIO write, C plugin', 'c', 1, 20_000, 'mmio', 'raw.mmio.1cpu'),
    plugvisorCase(
      'plugvisor.c.io.2cpu',
      'plugvisor round trip, port write, 2 VCPUs, C plugin (thread per VCPU)',
      'c',
      2,
      20_000,
      'io',
      'raw.io.2cpu',
    ),
    // crosvm's design exactly (blocking pipe reads, no spin): against the C pipe baseline.
    plugvisorCase(
      'plugvisor.ts.io.1cpu.nospin',
      'plugvisor round trip, no spin (PLUGVISOR_SPIN_US=0), TypeScript plugin',
      'ts',
      1,
      20_000,
      'io',
      'pipe.io.1cpu',
      { spinUs: 0 },
    ),
    plugvisorCase(
      'plugvisor.c.io.1cpu.nospin',
      'plugvisor round trip, no spin (PLUGVISOR_SPIN_US=0), C plugin',
      'c',
      1,
      20_000,
      'io',
      'pipe.io.1cpu',
      { spinUs: 0 },
    ),
    // Long runs with the JIT warm-up timed apart: steady state per exit, and the one-time warm-up cost.
    steadyCase('ts', 100_000, 20_000, spinBaseline),
    steadyCase('c', 100_000, 20_000, spinBaseline),
    steadyCase('ts', 40_000, 10_000, spinBaseline, 0),
    steadyCase('c', 40_000, 10_000, spinBaseline, 0),
    asyncCase('ts', 100_000),
    asyncCase('c', 100_000),
    stormCase('host'),
    stormCase('kvm'),
    plugvisorStartupCase('ts'),
    plugvisorStartupCase('c'),
    plugvisorStartupCase('c', true),
    plugvisorStartupCase('c', false, 64),
    idleCase(4),
    rssCase('plugvisor.rss.1vm.1cpu', 'host memory, 1 VM with 1 VCPU', 1, 1),
    rssCase('plugvisor.rss.1vm.4cpu', 'host memory, 1 VM with 4 VCPUs', 1, 4),
    vcpuMemoryCase(16),
    vcpuMemoryCase(64),
    rssCase('plugvisor.rss.20vms', 'host memory, 20 VMs (20 hosts) at once, per VM', 20, 1),
    // --- compiled programs (plugvisor/guest, plugvisor exec) ---
    kernelNativeCase,
    kernelGuestCase,
    execStartupCase(false),
    execStartupCase(true),
    hostCallCase(20_000, 20_000),
  ];
  return cases;
}

// ---------------------------------------------------------------------------
// statistics and reporting

interface MetricResult {
  unit: string;
  better: 'lower' | 'higher';
  samples: number[];
  median: number;
  min: number;
  max: number;
  /** Median absolute deviation from the median, in % of the median: the noise column. */
  madPct: number;
  baseline?: { case: string; metric: string; median: number };
  ratio?: number;
}

interface CaseResult {
  id: string;
  title: string;
  status: 'ok' | 'unavailable' | 'failed';
  reason?: string;
  baseline?: string;
  metrics: Record<string, MetricResult>;
  /** Errors of failed runs (one is forgiven; see main). */
  errors?: string[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function madPct(xs: number[]): number {
  const m = median(xs);
  return m === 0 ? NaN : (100 * median(xs.map((x) => Math.abs(x - m)))) / Math.abs(m);
}

function fmt(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '';
  const a = Math.abs(n);
  if (a >= 1000) return n.toFixed(0);
  if (a >= 100) return n.toFixed(1);
  if (a >= 10) return n.toFixed(2);
  return n.toFixed(3);
}

function tableRows(results: CaseResult[]): string[][] {
  const rows: string[][] = [];
  for (const r of results) {
    if (r.status !== 'ok') {
      const what = r.status === 'unavailable' ? 'not available yet' : 'FAILED';
      rows.push([r.id, what, '', '', '', '']);
      continue;
    }
    for (const [key, m] of Object.entries(r.metrics)) {
      const spread = Number.isFinite(m.madPct) ? `±${m.madPct.toFixed(1)}%` : '';
      rows.push([
        r.id,
        `${key} (${m.unit}, ${m.better})`,
        fmt(m.median),
        m.baseline ? `${fmt(m.baseline.median)} ${m.baseline.case}` : '',
        m.ratio !== undefined ? `${m.ratio.toFixed(2)}x` : '',
        spread,
      ]);
    }
  }
  return rows;
}

const HEADER = ['case', 'metric', 'median', 'baseline', 'ratio', 'mad'];

function printTable(rows: string[][]): void {
  const widths = HEADER.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 2 || i === 4 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${line(HEADER)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  let last = '';
  for (const r of rows) {
    process.stdout.write(`${line([r[0] === last ? '' : r[0], ...r.slice(1)])}\n`);
    last = r[0]!;
  }
}

function printMarkdown(rows: string[][]): void {
  process.stdout.write(
    `\n| ${HEADER.join(' | ')} |\n|${HEADER.map((_, i) => (i === 2 || i === 4 ? '---:' : '---')).join('|')}|\n`,
  );
  for (const r of rows) process.stdout.write(`| ${r.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |\n`);
}

// ---------------------------------------------------------------------------
// main

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  buildC();
  if (!cBuildError) buildCPlugin();
  let cases = buildCases(options);

  if (options.only.length > 0) {
    const wanted = new Set(cases.filter((c) => options.only.some((w) => c.id.includes(w))).map((c) => c.id));
    for (const c of cases) if (wanted.has(c.id) && c.baseline) wanted.add(c.baseline);
    for (const c of cases) if (wanted.has(c.id) && c.baseline) wanted.add(c.baseline); // baselines of baselines
    cases = cases.filter((c) => wanted.has(c.id));
    if (cases.length === 0) throw new Error(`--only ${options.only.join(',')} matches no case`);
  }

  if (options.list) {
    for (const c of cases) {
      const why = c.unavailable();
      process.stdout.write(`${c.id.padEnd(26)} ${why ? `not available yet: ${why.split('\n')[0]}` : 'ready'}\n    ${c.title}\n`);
    }
    return 0;
  }

  const ctx: RunContext = { options, exits: (n) => Math.max(1, Math.round(n * options.scale)) };
  const loadBefore = os.loadavg();
  const samples = new Map<string, Metrics[]>();
  const failed = new Map<string, string>();
  const errors = new Map<string, string[]>();
  const unavailable = new Map<string, string>();
  for (const c of cases) {
    const why = c.unavailable();
    if (why) unavailable.set(c.id, why);
    else samples.set(c.id, []);
  }
  const runnable = cases.filter((c) => samples.has(c.id));
  process.stderr.write(
    `bench: ${runnable.length} cases to run (${unavailable.size} not available yet), ` +
      `${options.warmup} warm-up + ${options.repeat} rounds, load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}\n`,
  );

  const rounds = options.warmup + options.repeat;
  for (let round = 0; round < rounds; round++) {
    const warm = round < options.warmup;
    const label = warm ? `warm-up ${round + 1}/${options.warmup}` : `round ${round - options.warmup + 1}/${options.repeat}`;
    for (const c of runnable) {
      if (failed.has(c.id)) continue;
      if (warm && c.noWarmup) continue;
      if (!warm && c.maxRepeat !== undefined && round - options.warmup >= c.maxRepeat) continue;
      try {
        const m = await c.run(ctx);
        if (!warm) samples.get(c.id)!.push(m);
        const head = c.metrics[0];
        process.stderr.write(`  ${label}  ${c.id.padEnd(26)} ${head.key}=${fmt(m[head.key])}\n`);
      } catch (e) {
        // One failure per case is forgiven (and recorded): on a machine shared
        // with builds, a run can trip over a half-rebuilt dist/. A second
        // failure marks the case failed and it is not run again.
        const msg = e instanceof Error ? e.message : String(e);
        const seen = errors.get(c.id) ?? [];
        seen.push(msg);
        errors.set(c.id, seen);
        if (seen.length > 1) failed.set(c.id, msg);
        process.stderr.write(`  ${label}  ${c.id.padEnd(26)} ${seen.length > 1 ? 'FAILED' : 'failed (will go on)'}: ${msg}\n`);
      }
    }
  }

  // medians, then ratios against the baselines' medians
  const results: CaseResult[] = cases.map((c) => {
    const base = {
      id: c.id,
      title: c.title,
      baseline: c.baseline,
      metrics: {} as Record<string, MetricResult>,
      ...(errors.has(c.id) ? { errors: errors.get(c.id) } : {}),
    };
    if (unavailable.has(c.id)) return { ...base, status: 'unavailable', reason: unavailable.get(c.id) };
    if (failed.has(c.id)) return { ...base, status: 'failed', reason: failed.get(c.id) };
    const runs = samples.get(c.id)!;
    for (const spec of c.metrics) {
      const xs = runs.map((m) => m[spec.key]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
      if (xs.length === 0) continue;
      base.metrics[spec.key] = {
        unit: spec.unit,
        better: spec.better,
        samples: xs,
        median: median(xs),
        min: Math.min(...xs),
        max: Math.max(...xs),
        madPct: madPct(xs),
      };
    }
    return { ...base, status: 'ok' };
  });
  const byId = new Map(results.map((r) => [r.id, r]));
  for (const c of cases) {
    const r = byId.get(c.id)!;
    const b = c.baseline ? byId.get(c.baseline) : undefined;
    if (r.status !== 'ok' || !b || b.status !== 'ok') continue;
    for (const [key, m] of Object.entries(r.metrics)) {
      const bkey = c.baselineMetrics ? c.baselineMetrics[key] : key;
      const bm = bkey ? b.metrics[bkey] : undefined;
      if (!bkey || !bm) continue;
      m.baseline = { case: b.id, metric: bkey, median: bm.median };
      if (bm.median !== 0) m.ratio = m.median / bm.median;
    }
  }

  const loadAfter = os.loadavg();
  const rows = tableRows(results);
  process.stdout.write('\n');
  printTable(rows);
  const notRun = results.filter((r) => r.status !== 'ok');
  if (notRun.length > 0) {
    process.stdout.write('\n');
    for (const r of notRun) {
      process.stdout.write(`${r.id}: ${r.status === 'unavailable' ? 'not available yet' : 'FAILED'}: ${r.reason ?? ''}\n`);
    }
  }
  if (options.markdown) printMarkdown(rows);
  const busy = Math.max(loadBefore[0], loadAfter[0]) > os.cpus().length * 0.5;
  if (busy)
    process.stdout.write(
      `\nnote: the machine was busy (load average up to ${Math.max(loadBefore[0], loadAfter[0]).toFixed(2)} on ${os.cpus().length} CPUs): expect noise\n`,
    );

  const report = {
    date: new Date().toISOString(),
    machine: {
      cpu: os.cpus()[0]?.model ?? 'unknown',
      cpus: os.cpus().length,
      memoryGiB: os.totalmem() / 2 ** 30,
      kernel: os.release(),
      node: process.version,
      loadAverageBefore: loadBefore,
      loadAverageAfter: loadAfter,
    },
    options: { repeat: options.repeat, warmup: options.warmup, scale: options.scale, spin: options.spin, only: options.only },
    cases: results,
  };
  mkdirSync(path.dirname(options.out), { recursive: true });
  writeFileSync(options.out, `${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(`\nwrote ${path.relative(process.cwd(), options.out) || options.out}\n`);
  return failed.size > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
    for (const pid of live) killGroup(pid);
    process.exit(2);
  },
);
