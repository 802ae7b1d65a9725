/**
 * The plugin's seccomp filter: a policy file (plugin-seccomp.policy beside
 * this module, or the user's) compiled to the raw BPF program bubblewrap's
 * --seccomp reads from an fd.
 */
import { accessSync, constants as fsConstants, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeEnd, runToEnd, type Finished } from '../child.js';
import { PACKAGE_ROOT } from '../package-root.js';
import { findHelper } from './tools.js';

/** The policy the jail uses unless `SandboxConfig.seccompPolicyFile` names another. */
export const DEFAULT_SECCOMP_POLICY_PATH: string = join(PACKAGE_ROOT, 'src', 'sandbox', 'plugin-seccomp.policy');

/**
 * Compiles a policy file to a raw BPF program (bwrap's --seccomp format).
 * With `logFailures`, kill and trap actions become log. Throws with the compiler's message.
 */
export function compileSeccompPolicy(policyFile: string, logFailures = false): Buffer {
  try {
    accessSync(policyFile, fsConstants.R_OK);
  } catch (e) {
    throw new Error(`cannot sandbox the plugin: the seccomp policy ${policyFile} is not readable (${(e as Error).message})`);
  }
  const compiler = findHelper('plugvisor-seccomp-compile');
  let run: Finished;
  try {
    run = runToEnd(compiler, [...(logFailures ? ['--log-failures'] : []), policyFile], 10_000);
  } catch (e) {
    throw new Error(`cannot sandbox the plugin: running ${compiler} failed: ${(e as Error).message}`);
  }
  const code = run.status.state === 'exited' ? run.status.code : undefined;
  if (code !== 0) {
    const message = run.stderr.toString().trim() || describeEnd(run);
    if (code === 2) throw new Error(`cannot sandbox the plugin: bad seccomp policy: ${message}`);
    throw new Error(`cannot sandbox the plugin: ${compiler} failed: ${message}`);
  }
  const bpf = run.stdout;
  if (bpf.length === 0 || bpf.length % 8 !== 0) throw new Error(`${compiler} produced ${bpf.length} bytes, not a BPF program`);
  return bpf;
}

/** An fd (close-on-exec in this process) reading the BPF program of `policyFile`, for bwrap's --seccomp. */
export function seccompProgramFd(policyFile: string, logFailures: boolean): number {
  return anonymousFileFd(compileSeccompPolicy(policyFile, logFailures), 'seccomp.bpf');
}

/** An fd (close-on-exec in this process) reading `data`, backed by an already-unlinked temporary file. */
function anonymousFileFd(data: Buffer, name: string): number {
  const dir = mkdtempSync(join(tmpdir(), 'plugvisor-sandbox-'));
  const file = join(dir, name);
  try {
    writeFileSync(file, data, { mode: 0o600 });
    return openSync(file, 'r');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
