/**
 * Runs the real `plugvisor` CLI on a plugin, as a user would, and collects
 * what it printed. Every run has a hard time limit so a hang fails the test
 * instead of stalling the suite.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The compiled CLI. */
export const CLI = path.join(root, 'dist/src/cli/main.js');

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

export function runCli(args: readonly string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`plugvisor ${args.join(' ')} did not finish within ${options.timeoutMs ?? 30000} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, options.timeoutMs ?? 30_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** `plugvisor run --plugin PLUGIN [flags] -- [args]`, unsandboxed unless `sandboxed`. */
export function runPluginCli(
  plugin: string,
  options: { cpus?: number; args?: string[]; flags?: string[]; sandboxed?: boolean; timeoutMs?: number } = {},
): Promise<CliResult> {
  const argv = ['run', '--plugin', plugin];
  if (options.cpus !== undefined) argv.push('--cpus', String(options.cpus));
  if (!options.sandboxed) argv.push('--disable-sandbox');
  argv.push(...(options.flags ?? []));
  if (options.args) argv.push('--', ...options.args);
  return runCli(argv, options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {});
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
