/**
 * A child process started by the addon (posix_spawnp) and reaped through its
 * pidfd, watched on the event loop, instead of node's child_process: loading
 * that module (it brings node's net and stream) and running its spawn() were
 * ~4 ms of the CLI's start-up, and libuv forks, copying the host's page
 * tables, where posix_spawn does not (bench/README.md, start-up profile). The
 * plugin's stdio is plain descriptors, so nothing of child_process is missed.
 */
import { constants as osConstants } from 'node:os';
import { C, native } from '../native/index.js';

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
    const envp: string[] = [];
    for (const [name, value] of Object.entries(options.env)) if (value !== undefined) envp.push(`${name}=${value}`);
    const fds = options.fds.map((fd, i) => (fd === 'inherit' ? i : fd));
    const { pid, pidfd } = native.spawn(options.file, [options.file, ...options.args], envp, fds, options.newSession);
    const child = new Child(pid);
    const watcher = native.createFdWatcher(pidfd, () => {
      const ended = native.waitpid(pid);
      if (ended === null) return; // not expected once the pidfd is readable; wait for the next wakeup
      watcher.close();
      native.close(pidfd);
      child.state =
        'code' in ended
          ? { state: 'exited', code: ended.code }
          : { state: 'signaled', signal: signalName(ended.signal) ?? `SIG${ended.signal}`, signalNumber: ended.signal };
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

const SIGNALS = osConstants.signals as Readonly<Record<string, number>>;

/** The name node has for signal `number` (SIGKILL for 9), if any. */
export function signalName(number: number): string | undefined {
  return number > 0 ? Object.keys(SIGNALS).find((name) => SIGNALS[name] === number) : undefined;
}
