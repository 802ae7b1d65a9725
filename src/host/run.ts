/**
 * `runPlugin`: the whole life of one plugin-driven VM, as a library call.
 * It creates the VM, spawns the plugin, serves it (the main loop is node's
 * event loop: connection fds, the plugin's exit and stderr, and the VCPU
 * threads' exits all arrive as events) and resolves to the outcome.
 */
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { Kvm, type VmFd } from '../kvm/index.js';
import { planSandboxedLaunch } from '../sandbox/bubblewrap.js';
import { diagnoseSandbox } from '../sandbox/diagnosis.js';
import { openFileLimit } from '../sandbox/limits.js';
import type { SandboxConfig } from '../sandbox/options.js';
import { createLog, stderrSink, type LogSink } from './log.js';
import { writeWithBackpressure, type LineSink } from './lines.js';
import { PluginProcess, type LaunchPlan, type PluginStatus } from './process.js';
import { openTaps, planNetwork, type NetOptions, type Tap } from './net.js';
import { MAX_CPUS } from './limits.js';
import { signalName } from '../child.js';

export { MAX_CPUS };

/** What {@link runPlugin} runs, and how; only `plugin` is required. */
export interface RunOptions {
  /** Path of the plugin executable. */
  plugin: string;
  /** Arguments passed to the plugin. */
  args?: string[];
  /** Number of VCPUs (default 1). */
  cpus?: number;
  /** The jail for the plugin (default: the default sandbox); `false` runs it as a plain child. */
  sandbox?: SandboxConfig | false;
  /** Tap devices for the plugin (crosvm's networking options); none by default. */
  net?: NetOptions;
  /** How long the plugin may take to call `start` (default 10 s). */
  startTimeoutMs?: number;
  /** How long the plugin may take to exit once the VM shuts down (default 1 s, as crosvm). */
  shutdownTimeoutMs?: number;
  /** Where the host's own log lines go (default: stderr, warnings and errors). */
  log?: LogSink;
  /**
   * Where each line the plugin writes to stderr goes (default: stderr,
   * prefixed "[plugin] "). A sink that cannot keep up returns a promise: no
   * more of the plugin's stderr is read until it settles, and the plugin
   * blocks on its full pipe meanwhile.
   */
  pluginStderr?: LineSink;
  /** Aborting stops the VM and the plugin. */
  signal?: AbortSignal;
}

/** How a run ended; `runPlugin` resolves to one for every run that got as far as spawning the plugin. */
export interface RunOutcome {
  /** True only when the plugin exited 0 and nothing failed. */
  ok: boolean;
  /** A suggested exit code for a CLI: 0, the plugin's code, 128 + signal, or 1. */
  exitCode: number;
  /** What happened, for a person. */
  message: string;
  /** The first thing that failed on the host's side (a VCPU, the start timeout, an interrupt), if anything did. */
  failure?: string;
  /** How the plugin process ended. */
  plugin: PluginStatus;
}

/**
 * A problem found before the plugin started: bad options, a missing plugin or
 * /dev/kvm, a jail that can't be planned, or a VM the kernel would not set up
 * (e.g. out of file descriptors). Nothing is left behind when it is thrown.
 */
export class RunSetupError extends Error {
  /** Always `'RunSetupError'`. */
  override name = 'RunSetupError';
}

/** `e` as a RunSetupError, its message prefixed with what was being done. */
function setupError(doing: string | undefined, e: unknown): RunSetupError {
  if (e instanceof RunSetupError) return e;
  let reason = e instanceof Error ? e.message : String(e);
  if ((e as { code?: unknown } | null)?.code === 'EMFILE') {
    // Many VCPUs are the usual cause: each takes several descriptors on the host.
    reason += ` (plugvisor may have ${openFileLimit('soft')} open files at once, too few for this VM: raise the limit with \`ulimit -n\`)`;
  }
  return new RunSetupError(doing === undefined ? reason : `${doing}: ${reason}`);
}

/** Runs one step of setting up; a failure becomes a {@link setupError}. */
function setUp<T>(doing: string | undefined, step: () => T): T {
  try {
    return step();
  } catch (e) {
    throw setupError(doing, e);
  }
}

const DEFAULT_START_TIMEOUT_MS = 10_000;
const DEFAULT_SHUTDOWN_TIMEOUT_MS = 1_000;
/** How long to wait for VCPU threads once everything else is over. */
const VCPU_JOIN_TIMEOUT_MS = 2_000;
/** How long to wait for a SIGKILLed plugin to be reaped. */
const KILL_REAP_TIMEOUT_MS = 2_000;
/**
 * The TSS for real mode without unrestricted guest (Intel): three pages just
 * below the conventional 4 GiB BIOS area, where a plugin rarely puts memory.
 */
const TSS_ADDRESS = 0xfffbd000;

/** Checks the options; throws a RunSetupError that says what is wrong and how to fix it. */
export function validateRunOptions(options: RunOptions): void {
  const cpus = options.cpus ?? 1;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_CPUS) {
    throw new RunSetupError(`--cpus must be a whole number from 1 to ${MAX_CPUS} (got ${String(options.cpus)})`);
  }
  if (options.net !== undefined) setUp(undefined, () => planNetwork(options.net!));
  // With --plugin-root the path names the plugin inside the jail's root; the
  // sandbox finds and checks it there.
  if (options.sandbox !== false && options.sandbox?.pluginRoot !== undefined) return;
  let isFile: boolean;
  try {
    isFile = statSync(options.plugin).isFile();
  } catch {
    throw new RunSetupError(`plugin not found: ${options.plugin}`);
  }
  if (!isFile) throw new RunSetupError(`plugin is not a file: ${options.plugin}`);
  try {
    accessSync(options.plugin, fsConstants.X_OK);
  } catch {
    throw new RunSetupError(`plugin is not executable: ${options.plugin} (try: chmod +x ${options.plugin})`);
  }
}

/**
 * Runs a plugin-driven VM to its end: creates the VM (with an in-kernel
 * irqchip and PIT, and no memory), spawns the plugin (in the jail unless
 * `sandbox: false`), serves its requests and VCPUs, and resolves when the
 * plugin has exited and everything is released. Throws a
 * {@link RunSetupError} for what it finds wrong before the plugin runs.
 *
 * ```ts
 * const outcome = await runPlugin({ plugin: './my-plugin', cpus: 2 });
 * if (!outcome.ok) console.error(outcome.message);
 * ```
 */
export async function runPlugin(options: RunOptions): Promise<RunOutcome> {
  validateRunOptions(options);
  const log = createLog(options.log ?? stderrSink(false));
  const pluginStderr = options.pluginStderr ?? ((line: string) => writeWithBackpressure(process.stderr, `[plugin] ${line}\n`));
  const startTimeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const shutdownTimeoutMs = options.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS;

  // openTaps' and Kvm.open's messages already say what is missing and how to fix it.
  const taps = setUp(undefined, () => openTaps(options.net, log));
  let kvm: Kvm | undefined;
  let vm: VmFd | undefined;
  let plan: LaunchPlan | undefined;
  try {
    const opened = setUp(undefined, () => Kvm.open());
    kvm = opened;
    vm = setUp('cannot set up the VM', () => createMachine(opened));
    const sandboxed = options.sandbox !== false;
    // A jail that can't be planned is a setup error, never a fallback to no jail.
    const launch = sandboxed
      ? setUp(undefined, () =>
          planSandboxedLaunch(options.sandbox || { mounts: [], gidMaps: [] }, options.plugin, options.args ?? []),
        )
      : { file: options.plugin, args: options.args ?? [], extraFds: [], dispose() {} };
    plan = launch;
    const settings = { log, pluginStderr, startTimeoutMs, shutdownTimeoutMs, signal: options.signal, sandboxed };
    return await serve(opened, vm, launch, options.cpus ?? 1, taps, settings);
  } finally {
    plan?.dispose();
    vm?.close();
    kvm?.close();
    for (const tap of taps) tap.close();
  }
}

/** The VM every plugin starts from: a TSS, the in-kernel irqchip and PIT. Nothing is left open on failure. */
function createMachine(kvm: Kvm): VmFd {
  const vm = kvm.createVm();
  try {
    vm.setTssAddr(TSS_ADDRESS);
    vm.createIrqchip();
    vm.createPit2();
    return vm;
  } catch (e) {
    vm.close();
    throw e;
  }
}

interface ServeSettings {
  log: ReturnType<typeof createLog>;
  pluginStderr: LineSink;
  startTimeoutMs: number;
  shutdownTimeoutMs: number;
  signal: AbortSignal | undefined;
  /** In the jail, the plugin's parent is bubblewrap, which reports a death by signal N as exit code 128 + N. */
  sandboxed: boolean;
}

/** The main loop: serve the plugin until it is gone, then tear down and judge the outcome. */
async function serve(
  kvm: Kvm,
  vm: VmFd,
  plan: LaunchPlan,
  cpus: number,
  taps: readonly Tap[],
  settings: ServeSettings,
): Promise<RunOutcome> {
  const { log } = settings;
  /** The first failure, which decides the outcome's message. */
  let failure: string | undefined;
  let shuttingDown = false;
  let shutdownTimer: NodeJS.Timeout | undefined;
  let startTimer: NodeJS.Timeout | undefined;
  let pluginGone!: () => void;
  const pluginExited = new Promise<void>((resolve) => (pluginGone = resolve));
  let pluginTimedOut = false;
  /** Whether the plugin got as far as `start`. */
  let started = false;

  const fail = (reason: string): void => {
    failure ??= reason;
    log.error(reason);
    beginShutdown();
  };

  // After a VCPU ends or anything fails: ask the plugin to exit and give it
  // a bounded time to do so.
  const beginShutdown = (): void => {
    if (shuttingDown) return;
    shuttingDown = true;
    clearTimeout(startTimer);
    process_.signalKill();
    shutdownTimer = setTimeout(() => {
      if (process_.tryWait().state !== 'running') return;
      pluginTimedOut = true;
      process_.killPlugin();
    }, settings.shutdownTimeoutMs).unref();
  };

  const process_ = setUp(
    'cannot set up the VM',
    () =>
      new PluginProcess(
        kvm,
        vm,
        cpus,
        log,
        settings.pluginStderr,
        {
          onStarted: () => {
            started = true;
            clearTimeout(startTimer);
          },
          onVcpuExit: (index, reason, failed) => {
            if (failed) fail(`vcpu ${index}: ${reason}`);
            else {
              log.info(`vcpu ${index}: ${reason}`);
              beginShutdown();
            }
          },
          onPluginExit: () => pluginGone(),
        },
        taps,
      ),
  );
  try {
    process_.spawn(plan);
  } catch (e) {
    process_.close();
    throw setupError('could not start the plugin', e);
  }

  const onAbort = (): void => fail('interrupted');
  settings.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    startTimer = setTimeout(
      () => fail(`the plugin did not start the VM within ${settings.startTimeoutMs / 1000} s`),
      settings.startTimeoutMs,
    );
    await pluginExited;
  } finally {
    settings.signal?.removeEventListener('abort', onAbort);
    clearTimeout(startTimer);
    clearTimeout(shutdownTimer);
  }

  // The plugin is gone: stop the VCPUs, reap anything it left behind, and
  // read its last stderr lines.
  process_.signalKill();
  const stuck = await process_.joinVcpus(VCPU_JOIN_TIMEOUT_MS);
  if (stuck.length > 0) failure ??= `VCPU threads ${stuck.join(', ')} did not stop`;
  process_.killPlugin();
  await Promise.race([process_.stderrEnded(), delay(KILL_REAP_TIMEOUT_MS)]);
  process_.close();

  const judged = judge(process_.tryWait(), failure, pluginTimedOut, settings.sandboxed);
  const outcome = failure === undefined ? judged : { ...judged, failure };
  if (!outcome.ok && settings.sandboxed && !started) {
    // A jail bubblewrap cannot build looks like a plugin that failed early: say which it was.
    const problem = diagnoseSandbox();
    if (problem !== null) return { ...outcome, exitCode: 1, message: problem };
  }
  return outcome;
}

function judge(status: PluginStatus, failure: string | undefined, timedOut: boolean, sandboxed: boolean): RunOutcome {
  if (timedOut) return { ok: false, exitCode: 1, message: 'plugin did not exit within timeout (killed)', plugin: status };
  if (status.state === 'signaled') {
    const why = failure ? ` after: ${failure}` : '';
    return {
      ok: false,
      exitCode: 128 + status.signalNumber,
      message: `plugin was killed by signal ${status.signal}${why}`,
      plugin: status,
    };
  }
  if (status.state === 'exited' && status.code !== 0) {
    const why = failure ? ` after: ${failure}` : '';
    const signal = sandboxed ? signalName(status.code - 128) : undefined;
    if (signal !== undefined) {
      const message = `plugin was killed by signal ${signal} (the sandbox reported exit code ${status.code})${why}`;
      return { ok: false, exitCode: status.code, message, plugin: status };
    }
    return { ok: false, exitCode: status.code, message: `plugin exited with code ${status.code}${why}`, plugin: status };
  }
  if (failure) return { ok: false, exitCode: 1, message: failure, plugin: status };
  return { ok: true, exitCode: 0, message: 'plugin exited successfully', plugin: status };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
