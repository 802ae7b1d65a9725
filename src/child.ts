/**
 * Child processes started by the addon (posix_spawnp) instead of node's
 * child_process: the plugin ({@link Child}, reaped through its pidfd on the
 * event loop) and the programs the sandbox runs on the way to every jailed
 * start ({@link runToEnd}, as spawnSync would). Loading child_process (it
 * brings node's net and stream) and running its spawn() were ~4 ms of the
 * CLI's start-up, and libuv forks, copying the host's page tables, where
 * posix_spawn does not (bench/README.md, start-up profile). Their stdio is
 * plain descriptors, so nothing of child_process is missed.
 */
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { C, native } from './native/index.js';

/** How a child process ended, or that it has not. */
export type ChildStatus =
  | {
      /** Still running. */
      state: 'running';
    }
  | {
      /** Exited by itself. */
      state: 'exited';
      /** Its exit status. */
      code: number;
    }
  | {
      /** Killed by a signal. */
      state: 'signaled';
      /** The signal's name (`SIGKILL`; `SIG<n>` for a signal node has no name for, such as a real-time one). */
      signal: string;
      /** The signal's number. */
      signalNumber: number;
    };

export interface ChildOptions {
  file: string;
  args: readonly string[];
  env: NodeJS.ProcessEnv;
  /** fd i of the child is `fds[i]` of this process; `'inherit'`: this process's own fd i. */
  fds: readonly (number | 'inherit')[];
  /** In a session, and so a process group, of its own: what it leaves behind can be killed with it. */
  newSession: boolean;
}

export class Child {
  private state: ChildStatus = { state: 'running' };

  private constructor(
    /** Its process id: its process group's too, with `newSession`. */
    readonly pid: number,
  ) {}

  /**
   * Starts the child; `onExit` is called from the event loop once it has
   * ended (the event loop stays alive until then). Throws when it cannot be
   * started, the exec's errno included.
   */
  static spawn(options: ChildOptions, onExit: (status: ChildStatus) => void): Child {
    const fds = options.fds.map((fd, i) => (fd === 'inherit' ? i : fd));
    const { pid, pidfd } = native.spawn(
      options.file,
      [options.file, ...options.args],
      envp(options.env),
      fds,
      options.newSession,
    );
    const child = new Child(pid);
    const watcher = native.createFdWatcher(pidfd, () => {
      const ended = native.waitpid(pid);
      if (ended === null) return; // not expected once the pidfd is readable; wait for the next wakeup
      watcher.close();
      native.close(pidfd);
      child.state = statusOf(ended);
      onExit(child.state);
    });
    watcher.start(C.POLLIN);
    return child;
  }

  get status(): ChildStatus {
    return this.state;
  }

  /**
   * Sends SIGKILL to the child's process group and to the child. The child
   * itself only while it has not been reaped: until then its pid cannot be
   * another process's.
   */
  killWithGroup(): void {
    const targets = this.state.state === 'running' ? [-this.pid, this.pid] : [-this.pid];
    for (const target of targets) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
}

/** What {@link runToEnd} saw of a program it ran. */
export interface Finished {
  /** How it ended. */
  status: Exclude<ChildStatus, { state: 'running' }>;
  /** It ran past the time allowed and was killed (its status then says SIGKILL). */
  timedOut: boolean;
  stdout: Buffer;
  stderr: Buffer;
}

/**
 * Runs `file` with `args` to its end, blocking, as spawnSync does: stdin
 * /dev/null, this process's environment, stdout and stderr collected. They
 * go to memfds, which never fill up and stall the program, and are read once
 * it has ended; past `timeoutMs` it is killed. Throws when it cannot be
 * started, or when it wrote more than `maxOutputBytes`.
 */
export function runToEnd(file: string, args: readonly string[], timeoutMs: number, maxOutputBytes = 4 << 20): Finished {
  const opened: number[] = [];
  const open = (fd: number): number => (opened.push(fd), fd);
  try {
    const stdin = open(native.open('/dev/null', C.O_RDONLY | C.O_CLOEXEC));
    const stdout = open(native.memfdCreate(`${file} stdout`, C.MFD_CLOEXEC));
    const stderr = open(native.memfdCreate(`${file} stderr`, C.MFD_CLOEXEC));
    const { pid, pidfd } = native.spawn(file, [file, ...args], envp(process.env), [stdin, stdout, stderr], false);
    open(pidfd);
    let timedOut = false;
    if (native.poll(pidfd, C.POLLIN, timeoutMs) === 0) {
      timedOut = true;
      process.kill(pid, 'SIGKILL');
      // SIGKILL cannot be caught; only a process stuck in the kernel outlives it.
      if (native.poll(pidfd, C.POLLIN, KILLED_EXIT_MS) === 0) throw new Error(`${file} did not end after SIGKILL`);
    }
    const ended = native.waitpid(pid);
    if (ended === null) throw new Error(`${file} ended, but waitpid found nothing to reap`);
    const output = (fd: number, name: string): Buffer => {
      const size = native.fstatSize(fd);
      if (size > maxOutputBytes) throw new Error(`${file} wrote ${size} bytes to its ${name}, more than ${maxOutputBytes}`);
      // A path of its own, so the read starts at 0 (the fd's offset is where the program stopped writing).
      return readFileSync(`/proc/self/fd/${fd}`);
    };
    return { status: statusOf(ended), timedOut, stdout: output(stdout, 'stdout'), stderr: output(stderr, 'stderr') };
  } finally {
    for (const fd of opened) native.close(fd);
  }
}

/** How a {@link runToEnd} program ended, for a message: `exit status 2`, `killed by SIGSEGV`, `timed out (killed)`. */
export function describeEnd(finished: Finished): string {
  if (finished.timedOut) return 'timed out (killed)';
  return finished.status.state === 'exited' ? `exit status ${finished.status.code}` : `killed by ${finished.status.signal}`;
}

/** How long {@link runToEnd} waits for a program it killed to be gone. */
const KILLED_EXIT_MS = 5_000;

function envp(env: NodeJS.ProcessEnv): string[] {
  const pairs: string[] = [];
  for (const [name, value] of Object.entries(env)) if (value !== undefined) pairs.push(`${name}=${value}`);
  return pairs;
}

function statusOf(ended: { code: number } | { signal: number }): Exclude<ChildStatus, { state: 'running' }> {
  return 'code' in ended
    ? { state: 'exited', code: ended.code }
    : { state: 'signaled', signal: signalName(ended.signal) ?? `SIG${ended.signal}`, signalNumber: ended.signal };
}

const SIGNALS = osConstants.signals as Readonly<Record<string, number>>;

/** The name node has for signal `number` (SIGKILL for 9), if any. */
export function signalName(number: number): string | undefined {
  return number > 0 ? Object.keys(SIGNALS).find((name) => SIGNALS[name] === number) : undefined;
}
