/**
 * The VM's VCPUs seen from the main thread: the pipe pairs handed to the
 * plugin, the worker threads that run them after `start`, and the controls
 * that reach into running VCPUs (configuration, pauses, shutdown).
 */
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { C, native } from '../native/index.js';
import type { Vm } from '../kvm/index.js';
import { VcpuRequest } from '../protocol/gen/plugin.js';
import type { Log } from './log.js';
import { SharedVcpuState, type VcpuConfig } from './shared-state.js';
import type { VcpuStart, VcpuWorkerData, VcpuWorkerMessage } from './vcpu-worker.js';

/** The protocol's pipe size for VCPU connections. */
const PIPE_SIZE = 0x40000;

interface VcpuPipes {
  /** Host reads plugin requests here. */
  requestRead: number;
  /** Plugin writes requests here; the host keeps a copy to inject `shutdown`. */
  requestWrite: number;
  /** Plugin reads responses here. */
  responseRead: number;
  /** Host writes responses here. */
  responseWrite: number;
}

export type VcpuExitHandler = (index: number, reason: string, failed: boolean) => void;

const SHUTDOWN_REQUEST = VcpuRequest.encode({ message: { $case: 'shutdown', shutdown: {} } }).finish();

export class VcpuSet {
  readonly shared: SharedVcpuState;
  private readonly pipes: VcpuPipes[] = [];
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];
  private readonly running = new Set<number>();
  private allExited: Promise<void>;
  private isStarted = false;
  /** Set when the host ends the threads itself (they then report nothing). */
  private terminating = false;

  /**
   * Makes the pipes and starts every VCPU thread at once: a thread takes tens
   * of milliseconds to boot, which then overlaps with the plugin's own
   * start-up instead of delaying the guest after `start`. Each thread waits
   * for {@link start} to hand it its VCPU.
   */
  constructor(
    readonly count: number,
    private readonly log: Log,
    onExit: VcpuExitHandler,
  ) {
    this.shared = SharedVcpuState.create(count);
    try {
      for (let i = 0; i < count; i++) this.pipes.push(makePipes(log));
    } catch (e) {
      this.close();
      throw e;
    }
    const exits: Promise<void>[] = [];
    for (let index = 0; index < count; index++) {
      const channel = new MessageChannel();
      const data: VcpuWorkerData = {
        index,
        requestFd: this.pipes[index]!.requestRead,
        responseFd: this.pipes[index]!.responseWrite,
        shared: this.shared.buffer,
        vcpuCount: count,
        configPort: channel.port2,
      };
      const worker = new Worker(new URL('./vcpu-worker.js', import.meta.url), {
        workerData: data,
        transferList: [channel.port2],
        // VCPU threads run a synchronous loop that allocates little: a small
        // heap keeps each thread's memory low.
        resourceLimits: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 2 },
      });
      this.running.add(index);
      let reported = false;
      worker.on('message', (message: VcpuWorkerMessage) => {
        if (message.type === 'log') this.log[message.level](message.message);
        else {
          reported = true;
          onExit(index, message.reason, message.failed);
        }
      });
      worker.on('error', (e) => {
        reported = true;
        // After close() the owner is gone: a thread that then fails to boot
        // (e.g. out of fds, when set-up failed for the same reason) is moot.
        if (!this.terminating) onExit(index, `VCPU thread crashed: ${e.message}`, true);
      });
      exits.push(
        new Promise((resolve) =>
          worker.once('exit', () => {
            this.running.delete(index);
            if (!reported && !this.terminating) onExit(index, 'VCPU thread ended without a report', true);
            resolve();
          }),
        ),
      );
      this.workers.push(worker);
      this.ports.push(channel.port1);
    }
    this.allExited = Promise.all(exits).then(() => undefined);
  }

  /** The plugin's ends, in VCPU order: the request write end, then the response read end. */
  pluginFds(): number[] {
    return this.pipes.flatMap((p) => [p.requestWrite, p.responseRead]);
  }

  get started(): boolean {
    return this.isStarted;
  }

  /** Creates every VCPU and hands it to its thread. Throws (with no VCPU created) if one can't be created. */
  start(vm: Vm, mmapSize: number, config: VcpuConfig): void {
    native.installKickHandler();
    const vcpuFds: number[] = [];
    try {
      for (let i = 0; i < this.count; i++) vcpuFds.push(vm.createVcpu(i));
    } catch (e) {
      for (const fd of vcpuFds) native.close(fd);
      throw e;
    }
    this.isStarted = true;
    this.workers.forEach((worker, index) => {
      // The thread owns the VCPU fd from here on and closes it when it ends.
      const start: VcpuStart = { vcpuFd: vcpuFds[index]!, mmapSize, config };
      worker.postMessage(start);
    });
  }

  /** Hands every VCPU a new configuration, seen at its next exit. */
  publish(config: VcpuConfig): void {
    if (!this.started) return;
    for (const port of this.ports) port.postMessage(config);
    this.shared.bumpConfigGeneration();
  }

  /** Records a pause for each VCPU in `mask` and kicks the ones running. */
  pause(mask: bigint, user: bigint): void {
    for (let i = 0; i < this.count && i < 64; i++) {
      if (((mask >> BigInt(i)) & 1n) === 0n) continue;
      this.shared.requestPause(i, user);
      this.kick(i);
    }
  }

  /**
   * Stops every VCPU: sets the shutdown flag, releases threads blocked on
   * the plugin by writing `shutdown` into their request pipes, and kicks
   * threads out of KVM_RUN.
   */
  requestShutdown(): void {
    this.shared.requestShutdown();
    for (const pipes of this.pipes) {
      // Never block the main loop on a pipe the plugin has filled.
      if ((native.poll(pipes.requestWrite, C.POLLOUT, 0) & C.POLLOUT) === 0) continue;
      native.write(pipes.requestWrite, SHUTDOWN_REQUEST, 0, SHUTDOWN_REQUEST.length);
    }
    for (let i = 0; i < this.count; i++) this.kick(i);
  }

  /**
   * Waits for every VCPU thread to end, kicking them again meanwhile, for at
   * most `timeoutMs`. Returns the indexes of the threads still running.
   */
  async join(timeoutMs: number): Promise<number[]> {
    if (!this.started) {
      // Threads that never got a VCPU are idle in their event loop.
      this.terminating = true;
      await Promise.all(this.workers.map((w) => w.terminate()));
      return [];
    }
    // Threads blocked writing to a full response pipe get EPIPE once the
    // host's copy of the plugin's read end is closed and the plugin is gone.
    this.closePluginEnds();
    const deadline = Date.now() + timeoutMs;
    while (this.running.size > 0 && Date.now() < deadline) {
      for (const i of this.running) this.kick(i);
      await Promise.race([this.allExited, new Promise((r) => setTimeout(r, 20))]);
    }
    return [...this.running];
  }

  private kick(index: number): void {
    const tid = this.shared.threadId(index);
    if (tid === 0 || !this.running.has(index)) return;
    try {
      native.kick(tid);
    } catch {
      // The thread already ended.
    }
  }

  private closePluginEnds(): void {
    for (const p of this.pipes) {
      for (const key of ['requestWrite', 'responseRead'] as const) {
        if (p[key] >= 0) {
          native.close(p[key]);
          p[key] = -1;
        }
      }
    }
  }

  /** Frees what is left: worker handles and pipes. Call after {@link join}. */
  close(): void {
    this.terminating = true;
    for (const port of this.ports) port.close();
    for (const worker of this.workers) void worker.terminate();
    for (const p of this.pipes) for (const fd of Object.values(p)) if (fd >= 0) native.close(fd);
    this.pipes.length = 0;
  }
}

function makePipes(log: Log): VcpuPipes {
  const [requestRead, requestWrite] = native.pipe2(C.O_CLOEXEC);
  const [responseRead, responseWrite] = native.pipe2(C.O_CLOEXEC);
  for (const fd of [requestWrite, responseWrite]) {
    try {
      native.fcntl(fd, C.F_SETPIPE_SZ, PIPE_SIZE);
    } catch (e) {
      log.warn(`could not enlarge a VCPU pipe to ${PIPE_SIZE} bytes: ${String(e)}`);
    }
  }
  return { requestRead, requestWrite, responseRead, responseWrite };
}
