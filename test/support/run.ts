/**
 * Runs the real `plugvisor` CLI on a plugin, as a user would, and collects
 * what it printed. Every run has a hard time limit so a hang fails the test
 * instead of stalling the suite.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../src/package-root.js';
import { sharedLibraries } from '../../src/sandbox/executable.js';
import { findOnPath } from '../../src/sandbox/tools.js';
import { ASM_SCRATCH_ENV } from './asm.js';
import type { Reported } from './reports.js';

const root = PACKAGE_ROOT;

/** The compiled CLI. */
export const CLI = path.join(root, 'dist/bundle/plugvisor.cjs');

/** The compiled test plugin `name` (test/plugins/NAME.ts). */
export function testPlugin(name: string): string {
  return path.join(root, 'dist/test/plugins', `${name}.js`);
}

/** A compiled example plugin (examples/NAME.ts). */
export function examplePlugin(name: string): string {
  return path.join(root, 'dist/examples', `${name}.js`);
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** A run's outcome and output, for an assertion's message. */
export function describeRun(r: CliResult): string {
  return `exit ${r.code} signal ${r.signal}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
}

/**
 * The report of a test plugin's run (a type of ./reports.ts): the run must
 * have exited 0, and its stdout must be the report's one JSON line.
 */
export function reportOf<T>(r: CliResult): Reported<T> {
  assert.equal(r.code, 0, describeRun(r));
  assert.match(r.stdout, /^[^\n]*\n$/, `not one line of JSON:\n${describeRun(r)}`);
  return JSON.parse(r.stdout) as Reported<T>;
}

/** `unshare -n --`: runs the CLI in a network namespace of its own (root only), where a test may make taps. */
export const IN_NEW_NETNS: readonly string[] = ['unshare', '--net', '--'];

/**
 * Runs the CLI with `args`. `fdLimit` lowers its limit of open files;
 * `wrap` is a command that runs it (e.g. {@link IN_NEW_NETNS}).
 */
export function runCli(
  args: readonly string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv; fdLimit?: number; wrap?: readonly string[] } = {},
): Promise<CliResult> {
  const command = [...(options.wrap ?? []), process.execPath, CLI, ...args];
  if (options.fdLimit === undefined) return runCommand(command[0], command.slice(1), options);
  // A shell lowers the limit of open files (RLIMIT_NOFILE), then becomes the CLI.
  const script = 'ulimit -n "$0" && exec "$@"';
  return runCommand('/bin/sh', ['-c', script, String(options.fdLimit), ...command], options);
}

/**
 * Runs `file argv...` to its end, collecting its output; rejects (after
 * SIGKILL) if it runs longer than `timeoutMs`. `pid` is the child's.
 */
export function runCommand(
  file: string,
  argv: readonly string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<CliResult & { pid: number }> {
  const started = Date.now();
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env, cwd: options.cwd });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${file} ${argv.join(' ')} did not finish within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started, pid: child.pid! });
    });
  });
}

/**
 * The sandbox settings that plugin runs are tested with (true = in the jail):
 * crosvm's harness ran every plugin both ways. PLUGVISOR_TEST_SANDBOX=both
 * (the default), `on` (jail only) or `off` (--disable-sandbox only).
 */
export const SANDBOX_MODES: readonly boolean[] = (() => {
  const setting = process.env['PLUGVISOR_TEST_SANDBOX'] ?? 'both';
  switch (setting) {
    case 'both':
      return [false, true];
    case 'on':
      return [true];
    case 'off':
      return [false];
    default:
      throw new Error(`PLUGVISOR_TEST_SANDBOX must be both, on or off, not '${setting}'`);
  }
})();

/** The name of a sandbox mode in test titles. */
export function modeName(sandboxed: boolean): string {
  return sandboxed ? 'sandboxed' : 'unsandboxed';
}

/**
 * What a jailed plugin needs to assemble guest code with nasm (test/support/asm.ts):
 * nasm (and any library of it that node, which the jail already has, does not
 * use) bound read-only, and a private writable scratch directory bound at its
 * own path and named by ASM_SCRATCH_ENV. The jail has no writable /tmp and no
 * nasm of its own; the plugin gets nothing else.
 */
interface AsmJail {
  flags: string[];
  env: NodeJS.ProcessEnv;
}
let asmJail: AsmJail | undefined;

function jailForAssembly(): AsmJail {
  if (asmJail) return asmJail;
  const nasm = findOnPath('nasm');
  if (!nasm) throw new Error('nasm is not installed (apt-get install nasm; scripts/setup.sh does it)');
  const scratch = mkdtempSync(path.join(tmpdir(), 'plugvisor-test-jail-scratch-'));
  process.once('exit', () => rmSync(scratch, { recursive: true, force: true }));
  const flags = ['--plugin-mount', `${realpathSync(nasm)}:${nasm}`, '--plugin-mount', `${scratch}:${scratch}:true`];
  const nodeLibraries = new Set(sharedLibraries(process.execPath));
  for (const library of sharedLibraries(nasm)) {
    if (!nodeLibraries.has(library)) flags.push('--plugin-mount', `${realpathSync(library)}:${library}`);
  }
  asmJail = { flags, env: { ...process.env, [ASM_SCRATCH_ENV]: scratch } };
  return asmJail;
}

/**
 * `plugvisor run --plugin PLUGIN [flags] -- [args]`, unsandboxed unless
 * `sandboxed`. `assemblesGuest`: the plugin runs nasm (test/support/asm.ts),
 * so a jailed run gets nasm and a writable scratch directory.
 */
export function runPluginCli(
  plugin: string,
  options: {
    cpus?: number;
    args?: string[];
    flags?: string[];
    sandboxed?: boolean;
    assemblesGuest?: boolean;
    timeoutMs?: number;
    /** The CLI's limit of open files. */
    fdLimit?: number;
    /** A command that runs the CLI, e.g. {@link IN_NEW_NETNS}. */
    wrap?: readonly string[];
  } = {},
): Promise<CliResult> {
  const argv = ['run', '--plugin', plugin];
  if (options.cpus !== undefined) argv.push('--cpus', String(options.cpus));
  if (!options.sandboxed) argv.push('--disable-sandbox');
  const jail = options.sandboxed && options.assemblesGuest ? jailForAssembly() : undefined;
  if (jail) argv.push(...jail.flags);
  argv.push(...(options.flags ?? []));
  if (options.args) argv.push('--', ...options.args);
  return runCli(argv, {
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.fdLimit !== undefined ? { fdLimit: options.fdLimit } : {}),
    ...(options.wrap !== undefined ? { wrap: options.wrap } : {}),
    ...(jail ? { env: jail.env } : {}),
  });
}

/**
 * Runs test plugin `name` (test/plugins/NAME.ts) with {@link runPluginCli}
 * and returns its report ({@link reportOf}). The plugin may assemble its guest.
 */
export async function runReport<T>(
  name: string,
  options: { sandboxed: boolean; cpus?: number; args?: string[]; timeoutMs?: number },
): Promise<Reported<T>> {
  return reportOf<T>(await runPluginCli(testPlugin(name), { assemblesGuest: true, timeoutMs: 30_000, ...options }));
}

/** True while a process with this pid exists (zombies included). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Waits until no process has this pid (see {@link processExists}); false if one still has it after `withinMs`. */
export async function gone(pid: number, withinMs: number): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (processExists(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return true;
}
