/**
 * The VM's VCPUs seen from the main thread: the pipe pairs handed to the
 * plugin, and the native threads that run the VCPUs after `start`
 * (native/vcpu/, through {@link VcpuSet}): what they are told (the dispatch
 * configuration, pauses, shutdown) and what they report (logs, their end).
 */
import { native, type VcpuEventKind, type VcpuSet as NativeVcpuSet } from '../native/index.js';
import type { VmFd } from '../kvm/index.js';
import { spinBudgetForVcpus } from '../protocol/pipe-reader.js';
import type { Log } from './log.js';
import { openPipe } from './pipes.js';

/** How often {@link VcpuSet.join} kicks and reaps threads that have not ended yet. */
const JOIN_POLL_MS = 5;

interface VcpuPipes {
  /** Host reads plugin requests here (the native thread reads its own duplicate). */
  readonly requestRead: number;
  /** The plugin writes requests here; kept to hand out with every get_vcpus. */
  readonly requestWrite: number;
  /** The plugin reads responses here; kept like requestWrite. */
  readonly responseRead: number;
  /** Host writes responses here (the native thread writes its own duplicate). */
  readonly responseWrite: number;
}

export type VcpuExitHandler = (index: number, reason: string, failed: boolean) => void;

export class VcpuSet {
  private readonly pipes: VcpuPipes[] = [];
  private readonly threads: NativeVcpuSet;
  /** VCPUs whose thread runs (started and not yet reported ended). */
  private readonly running = new Set<number>();
  private isStarted = false;

  /** Makes every VCPU's pipes and the native set that will run them. Nothing is left open if it throws. */
  constructor(
    readonly count: number,
    private readonly log: Log,
    private readonly onExit: VcpuExitHandler,
  ) {
    try {
      for (let i = 0; i < count; i++) this.pipes.push(makePipes(log));
      this.threads = native.createVcpuSet(
        this.pipes.map((p) => p.requestRead),
        this.pipes.map((p) => p.responseWrite),
        spinBudgetForVcpus(count),
        (index, kind, message) => this.onEvent(index, kind, message),
      );
    } catch (e) {
      this.closePipes();
      throw e;
    }
  }

  /** The plugin's ends, in VCPU order: the request write end, then the response read end. */
  pluginFds(): number[] {
    return this.pipes.flatMap((p) => [p.requestWrite, p.responseRead]);
  }

  get started(): boolean {
    return this.isStarted;
  }

  /**
   * Creates every VCPU and starts a thread per VCPU, which dispatch exits by
   * the last configuration published. Throws with no VCPU left running if
   * any of it fails.
   */
  start(vm: VmFd, mmapSize: number): void {
    const vcpuFds: number[] = [];
    try {
      for (let i = 0; i < this.count; i++) vcpuFds.push(vm.createVcpu(i));
    } catch (e) {
      for (const fd of vcpuFds) native.close(fd);
      throw e;
    }
    this.threads.start(vcpuFds, mmapSize); // owns the fds from here on, even if it throws
    this.isStarted = true;
    for (let i = 0; i < this.count; i++) this.running.add(i);
  }

  /** Hands every VCPU a new dispatch configuration (vcpu-config.ts), seen at its next exit; before start, at its first. */
  publish(config: BigUint64Array): void {
    this.threads.publishConfig(config);
  }

  /** Records a pause for each VCPU in `mask` (bits of VCPUs that don't exist are ignored) and kicks it. */
  pause(mask: bigint, user: bigint): void {
    for (let i = 0; i < this.count && i < 64; i++) {
      if (((mask >> BigInt(i)) & 1n) !== 0n) this.threads.pause(i, user);
    }
  }

  /** Stops every VCPU: wakes threads waiting on the plugin and kicks threads out of KVM_RUN. */
  requestShutdown(): void {
    this.threads.shutdown();
  }

  /**
   * Waits, for at most `timeoutMs`, until every VCPU thread has ended and is
   * joined, kicking the late ones meanwhile. Returns the indexes still running.
   */
  async join(timeoutMs: number): Promise<number[]> {
    this.threads.shutdown();
    const deadline = Date.now() + timeoutMs;
    while (this.threads.reap() > 0 && Date.now() < deadline) {
      this.threads.kickAll();
      await new Promise((resolve) => setTimeout(resolve, JOIN_POLL_MS));
    }
    // Threads that ended but whose report is still queued count as ended.
    return this.threads.reap() > 0 ? [...this.running] : [];
  }

  /** Frees what is left: the native set (threads that would not stop are left to end on their own) and the pipes. */
  close(): void {
    this.threads.close();
    this.closePipes();
  }

  private onEvent(index: number, kind: VcpuEventKind, message: string): void {
    if (kind === 'ended' || kind === 'failed') {
      this.running.delete(index);
      this.onExit(index, message, kind === 'failed');
    } else {
      this.log[kind](`vcpu ${index}: ${message}`);
    }
  }

  private closePipes(): void {
    for (const p of this.pipes)
      for (const fd of [p.requestRead, p.requestWrite, p.responseRead, p.responseWrite]) native.close(fd);
    this.pipes.length = 0;
  }
}

function makePipes(log: Log): VcpuPipes {
  const [requestRead, requestWrite] = openPipe(log, 'a VCPU pipe');
  let response: [number, number];
  try {
    response = openPipe(log, 'a VCPU pipe');
  } catch (e) {
    native.close(requestRead);
    native.close(requestWrite);
    throw e;
  }
  const [responseRead, responseWrite] = response;
  return { requestRead, requestWrite, responseRead, responseWrite };
}
