/**
 * What tap tests need: root (CAP_NET_ADMIN), /dev/net/tun and `unshare`, to
 * make their taps in a network namespace of their own, never touching the
 * machine's interfaces. Without them those tests are skipped with a loud
 * reason, never passed.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { kvmSkipReason } from './kvm.js';

/** The configuration of the issue's crosvm example, and the flags that make that tap. */
export const HOST_IP = '100.115.92.5';
export const NETMASK = '255.255.255.252';
export const HOST_MAC = 'de:21:e8:47:6b:6a';
export const TAP_FLAGS: readonly string[] = ['--host-ip', HOST_IP, '--netmask', NETMASK, '--mac', HOST_MAC];

function probe(): string | undefined {
  if (process.geteuid?.() !== 0) return 'not root: making a tap needs CAP_NET_ADMIN';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun does not exist';
  const run = spawnSync('unshare', ['--net', '--', 'true'], { stdio: 'ignore', timeout: 10_000 });
  if (run.status !== 0) return `\`unshare --net\` does not work here (${run.error?.message ?? `exit ${run.status}`})`;
  return undefined;
}

const netSkipReason = probe();
if (netSkipReason) process.stderr.write(`\n*** WARNING: ${netSkipReason}: tap tests are SKIPPED ***\n\n`);

/** Options for node:test that skip without KVM or without a private network namespace to make taps in. */
export const needsTaps: { skip: string | false } = {
  skip: kvmSkipReason ?? (netSkipReason ? `${netSkipReason}: tap tests are skipped` : false),
};

/**
 * A command prefix that runs what follows in a new network namespace after
 * `setup` (shell commands, e.g. `ip tuntap add ...`) ran there.
 */
export function inNetnsAfter(setup: string): string[] {
  return ['unshare', '--net', '--', '/bin/sh', '-c', `${setup} && exec "$@"`, 'sh'];
}
