/**
 * The user namespace behind --plugin-gid-map: made here with every map, and
 * handed to bwrap as an fd (--userns).
 */
import { spawn } from 'node:child_process';
import { openSync, readlinkSync, writeFileSync } from 'node:fs';
import { userNamespaceHints } from './diagnosis.js';
import { requireTool } from './tools.js';

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Makes a user namespace with the given maps and returns an fd to it (for
 * bwrap --userns). bwrap can only map one gid itself; writing a gid_map with
 * several lines needs CAP_SETGID in the parent namespace, i.e. root.
 */
export function prepareUserNamespace(uidMap: string, gidMap: string): number {
  const unshare = requireTool('unshare', 'util-linux unshare (needed for --plugin-gid-map)');
  const sleep = requireTool('sleep', 'coreutils sleep (needed for --plugin-gid-map)');
  const holder = spawn(unshare, ['--user', '--', sleep, 'infinity'], { stdio: 'ignore' });
  holder.on('error', () => {
    /* reported below through /proc */
  });
  holder.unref();
  try {
    if (holder.pid === undefined) throw new Error(`cannot start ${unshare}`);
    const ours = readlinkSync('/proc/self/ns/user');
    const nsLink = `/proc/${holder.pid}/ns/user`;
    const deadline = Date.now() + 5000;
    for (;;) {
      let theirs: string;
      try {
        theirs = readlinkSync(nsLink);
      } catch {
        throw new Error(
          '`unshare --user` failed: cannot create a user namespace for --plugin-gid-map' +
            (userNamespaceHints().length > 0 ? ` (${userNamespaceHints().join('; ')})` : ''),
        );
      }
      if (theirs !== ours) break;
      if (Date.now() > deadline) throw new Error('timed out waiting for `unshare --user` (for --plugin-gid-map)');
      sleepMs(2);
    }
    try {
      writeFileSync(`/proc/${holder.pid}/uid_map`, uidMap);
    } catch (e) {
      throw new Error(`writing the plugin's uid_map failed: ${(e as Error).message}`);
    }
    try {
      writeFileSync(`/proc/${holder.pid}/gid_map`, gidMap);
    } catch (e) {
      throw new Error(
        `writing the plugin's gid_map (--plugin-gid-map) failed: ${(e as Error).message}; map: ${JSON.stringify(gidMap)}`,
      );
    }
    return openSync(nsLink, 'r');
  } finally {
    try {
      holder.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}
