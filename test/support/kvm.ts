/**
 * Whether this machine can run KVM tests. Without /dev/kvm every KVM test is
 * skipped with this reason, printed loudly once, never passed silently.
 */
import { accessSync, constants } from 'node:fs';

function probe(): string | undefined {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return undefined;
  } catch (e) {
    return `/dev/kvm is not usable (${(e as NodeJS.ErrnoException).code ?? String(e)}): KVM tests are SKIPPED`;
  }
}

/** undefined when KVM is usable; otherwise why KVM tests are skipped. */
export const kvmSkipReason: string | undefined = probe();

if (kvmSkipReason) process.stderr.write(`\n*** WARNING: ${kvmSkipReason} ***\n\n`);

/** Options for node:test's `test()`/`describe()` that skip without KVM. */
export const needsKvm: { skip: string | false } = { skip: kvmSkipReason ?? false };
