/**
 * Runs with many VCPUs: the counts the suite tries (past the old limit of 16,
 * where get_vcpus first sent more than 32 descriptors, up to the documented
 * 64), and the open files they need.
 */
import assert from 'node:assert/strict';
import { openFileLimit } from '../../src/sandbox/limits.js';

export const MANY_VCPU_COUNTS: readonly number[] = [17, 32, 64];

/**
 * Fails (never skips) when the CLI could not open enough files for `cpus`
 * VCPUs: it inherits this process's limit, which node already raised to the
 * hard limit at start-up, so only a higher hard limit can help.
 */
export function checkFileLimitFor(cpus: number): void {
  // The host takes a handful of descriptors per VCPU (its four pipe ends, the
  // VCPU threads' own copies of two of them, the VCPU fd), an unsandboxed
  // plugin two more; 16 per VCPU leaves room.
  const needed = 256 + 16 * cpus;
  const limit = openFileLimit('soft');
  assert.ok(
    limit >= needed,
    `${cpus} VCPUs need about ${needed} open files, but this process may open ${limit}: raise it (ulimit -Hn)`,
  );
}
