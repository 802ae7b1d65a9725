/**
 * Why a jail cannot be built on this machine: bubblewrap's own verdict, and
 * the kernel settings that forbid the user namespaces it needs.
 */
import { existsSync, readFileSync } from 'node:fs';
import { describeEnd, runToEnd, type Finished } from '../child.js';
import { jailIdentity, type JailIdentity } from './identity.js';
import { findOnPath } from './tools.js';

function readSysctl(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Reasons the kernel configuration forbids the namespaces the jail needs, if any can be seen. */
export function userNamespaceHints(): string[] {
  const hints: string[] = [];
  if (readSysctl('/proc/sys/user/max_user_namespaces') === '0')
    hints.push('user namespaces are disabled (user.max_user_namespaces = 0)');
  if (process.geteuid!() !== 0) {
    if (readSysctl('/proc/sys/kernel/unprivileged_userns_clone') === '0') {
      hints.push('unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)');
    }
    if (readSysctl('/proc/sys/kernel/apparmor_restrict_unprivileged_userns') === '1') {
      hints.push(
        'AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1); bwrap needs a profile that allows them',
      );
    }
  }
  if (!existsSync('/proc/self/ns/user')) hints.push('this kernel has no user namespace support (CONFIG_USER_NS)');
  return hints;
}

/**
 * Why bubblewrap cannot build the jail on this machine, as a message for a
 * person, or null if it can. For after a jailed plugin failed before `start`:
 * bwrap reports a jail it cannot build only by exiting early, and checking
 * before every launch would cost every run one more bwrap start (~7 ms here).
 */
export function diagnoseSandbox(): string | null {
  const bwrap = findOnPath('bwrap');
  if (bwrap === undefined) return null; // planSandboxedLaunch already said so
  const problem = probeBubblewrap(bwrap, jailIdentity());
  return problem === null ? null : `cannot sandbox the plugin: ${problem}`;
}

/** Runs bwrap with the namespaces the jail uses; returns an error text or null. */
function probeBubblewrap(bwrap: string, identity: JailIdentity): string | null {
  let run: Finished;
  try {
    run = runToEnd(
      bwrap,
      [
        '--unshare-user',
        '--uid',
        String(identity.uid),
        '--gid',
        String(identity.gid),
        '--disable-userns',
        '--unshare-pid',
        '--unshare-ipc',
        '--unshare-uts',
        '--unshare-net',
        '--cap-drop',
        'ALL',
        '--die-with-parent',
        '--new-session',
        '--ro-bind',
        '/',
        '/',
        '--proc',
        '/proc',
        '--',
        bwrap,
        '--version',
      ],
      10_000,
    );
  } catch (e) {
    return `running ${bwrap} failed: ${(e as Error).message}`;
  }
  if (run.status.state === 'exited' && run.status.code === 0) return null;
  const hints = userNamespaceHints();
  return (
    `bubblewrap cannot create the plugin's namespaces: ${run.stderr.toString().trim() || describeEnd(run)}` +
    (hints.length > 0 ? ` (${hints.join('; ')})` : '')
  );
}
