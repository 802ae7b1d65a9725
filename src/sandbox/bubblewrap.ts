/**
 * The plugin jail: turns "run this plugin" into a bubblewrap command line.
 *
 * The host spawns `plan.file` with `plan.args`, the main socket at fd 3 and
 * `plan.extraFds` at fds 4, 5, ... The command is
 *
 *   plugvisor-jail-exec --nofile 32768 --keep-fds-below 5 -- bwrap <namespaces, identity, mounts> --seccomp 4 -- <plugin>
 *
 * plugvisor-jail-exec (native/seccomp, one of the native parts binding.gyp
 * builds and the package ships prebuilt) sets RLIMIT_NOFILE and closes every
 * fd the host inherited by accident, then execs bubblewrap.
 *
 * Everything that can be checked before the spawn is checked here, and every
 * missing piece throws an Error that names it: there is no silent fallback to
 * an unsandboxed plugin. See README.md beside this file for the threat model.
 */
import { closeSync } from 'node:fs';
import type { LaunchPlan } from '../host/process.js';
import { formatIdMap, jailGidMap, jailIdentity } from './identity.js';
import { layoutJail } from './layout.js';
import { pluginNofileLimit } from './limits.js';
import type { SandboxConfig } from './options.js';
import { DEFAULT_SECCOMP_POLICY_PATH, seccompProgramFd } from './seccomp.js';
import { findHelper, requireTool } from './tools.js';
import { prepareUserNamespace } from './user-namespace.js';

/** The only device nodes in the jail's /dev. */
export const JAIL_DEVICES: readonly string[] = ['full', 'null', 'urandom', 'zero'];
/** Host name inside the jail's UTS namespace. */
export const JAIL_HOSTNAME = 'plugvisor-plugin';

/** The fd number (in the child) of the first extra fd. */
const FIRST_EXTRA_FD = 4;

/** Throws a clear Error naming the missing piece (bubblewrap not installed, user namespaces disabled, ...) — never falls back to unsandboxed. */
export function planSandboxedLaunch(config: SandboxConfig, pluginPath: string, pluginArgs: string[]): LaunchPlan {
  // Everything else the jail uses ships with plugvisor (the helpers link only libc).
  const bwrap = requireTool(
    'bwrap',
    'bubblewrap',
    '; install it, the one system package the sandbox needs (Debian/Ubuntu: apt-get install bubblewrap)',
  );
  const jailExec = findHelper('plugvisor-jail-exec');
  const identity = jailIdentity();
  const isRoot = process.geteuid!() === 0;

  const gidMaps = config.gidMaps ?? [];
  const mounts = config.mounts ?? [];
  if (gidMaps.length > 0 && !isRoot) {
    throw new Error(
      '--plugin-gid-map needs plugvisor to run as root: without CAP_SETGID a user namespace can map only the ' +
        "caller's own gid (bubblewrap does that by default), so extra gids cannot be mapped",
    );
  }
  const fullGidMap = gidMaps.length > 0 ? jailGidMap(identity, gidMaps) : undefined;
  // The file system is worked out before any fd is made, so a bad path leaks nothing.
  const layout = layoutJail(config, pluginPath, pluginArgs);

  const fds: number[] = [];
  let disposed = false;
  const dispose = () => {
    if (disposed) return;
    disposed = true;
    for (const fd of fds) {
      try {
        closeSync(fd);
      } catch {
        /* already closed */
      }
    }
  };
  try {
    fds.push(seccompProgramFd(config.seccompPolicyFile ?? DEFAULT_SECCOMP_POLICY_PATH, config.seccompLogFailures ?? false));
    const seccompIndex = FIRST_EXTRA_FD;

    const args: string[] = [];
    if (fullGidMap !== undefined) {
      const nsFd = prepareUserNamespace(
        formatIdMap([{ inner: identity.uid, outer: identity.hostUid, count: 1 }]),
        formatIdMap(fullGidMap),
      );
      fds.push(nsFd);
      // Nested user namespaces are refused by the seccomp policy here (bwrap's --disable-userns needs --unshare-user).
      args.push('--userns', String(FIRST_EXTRA_FD + 1), '--uid', String(identity.uid), '--gid', String(identity.gid));
    } else {
      args.push('--unshare-user', '--uid', String(identity.uid), '--gid', String(identity.gid), '--disable-userns');
    }
    args.push(
      '--unshare-pid',
      '--unshare-ipc',
      '--unshare-uts',
      '--unshare-net',
      '--unshare-cgroup-try',
      '--hostname',
      JAIL_HOSTNAME,
      '--die-with-parent',
      '--new-session',
      '--cap-drop',
      'ALL',
      ...(layout.root !== undefined ? ['--ro-bind', layout.root, '/'] : []),
      '--proc',
      '/proc',
      '--tmpfs',
      '/dev',
    );
    for (const dev of JAIL_DEVICES) args.push('--dev-bind', `/dev/${dev}`, `/dev/${dev}`);
    args.push('--symlink', '/proc/self/fd', '/dev/fd');
    ['stdin', 'stdout', 'stderr'].forEach((name, i) => args.push('--symlink', `/proc/self/fd/${i}`, `/dev/${name}`));
    args.push('--remount-ro', '/dev');
    for (const b of layout.binds) args.push('--ro-bind', b.source, b.target);
    for (const m of mounts) args.push(m.writable ? '--bind' : '--ro-bind', m.source, m.target);
    if (layout.root === undefined) args.push('--remount-ro', '/');
    for (const name of layout.unsetEnv) args.push('--unsetenv', name);
    args.push('--chdir', '/', '--seccomp', String(seccompIndex), '--', ...layout.command);
    const launcher = [
      '--nofile',
      String(pluginNofileLimit()),
      '--keep-fds-below',
      String(FIRST_EXTRA_FD + fds.length),
      '--',
      bwrap,
    ];
    return { file: jailExec, args: [...launcher, ...args], extraFds: [...fds], dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}
