/**
 * The pipes the host hands a plugin: each VCPU's two, and its stderr.
 * docs/protocol.md has the host ask the kernel to make each 256 KiB; a
 * kernel that refuses (a user over its pipe quota) is a warning, and the
 * pipe keeps its default size.
 */
import { C, native } from '../native/index.js';
import type { Log } from './log.js';

/** The size asked for (F_SETPIPE_SZ; at most /proc/sys/fs/pipe-max-size, 1 MiB by default). */
export const PIPE_SIZE = 0x40000;

/** pipe2(O_CLOEXEC), asked to hold PIPE_SIZE bytes: [read end, write end]. `what` names it in the warning. */
export function openPipe(log: Log, what: string): [number, number] {
  const ends = native.pipe2(C.O_CLOEXEC);
  try {
    native.fcntl(ends[1], C.F_SETPIPE_SZ, PIPE_SIZE);
  } catch (e) {
    log.warn(`could not enlarge ${what} to ${PIPE_SIZE} bytes: ${String(e)}`);
  }
  return ends;
}
