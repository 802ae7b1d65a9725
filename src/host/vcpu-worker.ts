/**
 * A VCPU thread (worker_thread entry): runs KVM_RUN in a loop and turns each
 * exit into what the protocol says — IO/MMIO dispatch through the reserved
 * ranges, pushed waits, pauses after a kick — talking to the plugin through
 * {@link PluginVcpu}. Ends on HLT, SHUTDOWN, an internal error, a `shutdown`
 * request, or the VM-wide shutdown flag, and reports why to the main thread.
 */
import { parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { C, native } from '../native/index.js';
import { Vcpu, RegsView } from '../kvm/index.js';
import { AddressSpace, type VcpuResponse_Wait_Io } from '../protocol/gen/plugin.js';
import { createLog, type LogLevel } from './log.js';
import { PluginVcpu, applyResumeRegisters, type ServeOutcome } from './plugin-vcpu.js';
import { lookupRange, IOPORT, MMIO, type Space } from './ranges.js';
import { SharedVcpuState, type VcpuConfig } from './shared-state.js';
import { spinBudgetForVcpus } from '../protocol/pipe-reader.js';

export interface VcpuWorkerData {
  index: number;
  /** Host end of the plugin->host pipe (read). */
  requestFd: number;
  /** Host end of the host->plugin pipe (write). */
  responseFd: number;
  shared: SharedArrayBuffer;
  vcpuCount: number;
  configPort: MessagePort;
}

/** The one message the thread waits for: its VCPU, after the plugin's `start`. */
export interface VcpuStart {
  vcpuFd: number;
  mmapSize: number;
  config: VcpuConfig;
}

/** Messages from a VCPU thread to the main thread. */
export type VcpuWorkerMessage =
  | { type: 'log'; level: LogLevel; message: string }
  | { type: 'exit'; reason: string; failed: boolean };

/** Where the value of a pending read goes when the plugin resumes. */
type PendingRead =
  | { kind: 'none' }
  /** An IO or MMIO read: bytes of kvm_run to fill. */
  | { kind: 'data'; offset: number; length: number }
  /** A Hyper-V hypercall: the result field of kvm_run. */
  | { kind: 'hcall' };

const NO_READ: PendingRead = { kind: 'none' };
const ZEROS = Buffer.alloc(4096);
const EMPTY = Buffer.alloc(0);

class VcpuThread {
  private readonly vcpu: Vcpu;
  private readonly plugin: PluginVcpu;
  private readonly shared: SharedVcpuState;
  private readonly runBytes: Buffer;
  private config: VcpuConfig;
  private configGeneration: number;
  private pendingRead: PendingRead = NO_READ;
  private readonly log = createLog((level, message) => this.report({ type: 'log', level, message: `vcpu ${this.data.index}: ${message}` }));

  constructor(
    private readonly data: VcpuWorkerData,
    start: VcpuStart,
  ) {
    this.shared = new SharedVcpuState(data.shared, data.vcpuCount);
    this.configGeneration = this.shared.configGeneration;
    this.config = start.config;
    this.vcpu = new Vcpu(start.vcpuFd, start.mmapSize);
    this.runBytes = Buffer.from(this.vcpu.kvmRunBytes.buffer, this.vcpu.kvmRunBytes.byteOffset, this.vcpu.kvmRunBytes.byteLength);
    this.plugin = new PluginVcpu(this.vcpu, data.requestFd, data.responseFd, this.log, spinBudgetForVcpus(data.vcpuCount));
  }

  /** Runs until the VCPU ends; returns why, and whether that is a failure. */
  run(): { reason: string; failed: boolean } {
    const index = this.data.index;
    this.vcpu.registerKickTarget();
    this.shared.setThreadId(index, native.gettid());
    // A pause requested before this thread existed could not be kicked: make
    // the first KVM_RUN return at once so it is reported like any other.
    if (this.shared.isPausePending(index)) this.runBytes[C.KVM_RUN_IMMEDIATE_EXIT] = 1;

    let outcome = this.plugin.stop({ $case: 'init', init: {} });
    for (;;) {
      if (outcome.kind === 'shutdown') return { reason: 'shut down on request', failed: false };
      this.resume(outcome);
      if (this.shared.shutdownRequested) return { reason: 'the VM is shutting down', failed: false };
      if (!this.vcpu.run()) {
        this.vcpu.clearImmediateExit();
        if (this.shared.shutdownRequested) return { reason: 'the VM is shutting down', failed: false };
        const user = this.shared.takePause(index);
        outcome = user === undefined ? RUN_AGAIN : this.plugin.stop({ $case: 'user', user: { user } });
        continue;
      }
      const exit = this.handleExit();
      if (typeof exit === 'object' && 'reason' in exit) return exit;
      outcome = exit;
    }
  }

  /** Completes the stop the plugin resumed from: registers, then the read value. */
  private resume(outcome: Extract<ServeOutcome, { kind: 'resume' }>): void {
    const { resume } = outcome;
    applyResumeRegisters(this.vcpu, resume, this.log);
    const pending = this.pendingRead;
    this.pendingRead = NO_READ;
    switch (pending.kind) {
      case 'none':
        return;
      case 'data':
        this.fillRead(pending.offset, pending.length, resume.data);
        return;
      case 'hcall':
        this.fillRead(C.KVM_RUN_HYPERV_HCALL_RESULT, 8, resume.data);
        return;
    }
  }

  private fillRead(offset: number, length: number, data: Uint8Array): void {
    const copied = Math.min(length, data.length);
    this.runBytes.set(data.subarray(0, copied), offset);
    this.runBytes.fill(0, offset + copied, offset + length);
  }

  /** Handles the exit KVM_RUN just returned: how to go on, or why the VCPU ends. */
  private handleExit(): ServeOutcome | { reason: string; failed: boolean } {
    const vcpu = this.vcpu;
    const reason = vcpu.exitReason;
    switch (reason) {
      case C.KVM_EXIT_IO: {
        const length = vcpu.ioSize * vcpu.ioCount;
        const offset = vcpu.ioDataOffset;
        const isWrite = vcpu.ioDirection === C.KVM_EXIT_IO_OUT;
        return this.access(IOPORT, BigInt(vcpu.ioPort), isWrite, offset, length);
      }
      case C.KVM_EXIT_MMIO:
        return this.access(MMIO, vcpu.mmioPhysAddr, vcpu.mmioIsWrite, C.KVM_RUN_MMIO_DATA, vcpu.mmioLen);
      case C.KVM_EXIT_HYPERV:
        return this.hypervExit();
      case C.KVM_EXIT_HLT:
        return { reason: 'the guest halted (HLT)', failed: false };
      case C.KVM_EXIT_SHUTDOWN:
        return { reason: 'the guest shut down (triple fault or SHUTDOWN exit)', failed: false };
      case C.KVM_EXIT_INTERNAL_ERROR: {
        const suberror = this.vcpu.kvmRun.getUint32(C.KVM_RUN_INTERNAL_SUBERROR, true);
        return { reason: `KVM internal error (suberror ${suberror})`, failed: true };
      }
      case C.KVM_EXIT_FAIL_ENTRY: {
        const hw = this.vcpu.kvmRun.getBigUint64(C.KVM_RUN_FAIL_ENTRY_REASON, true);
        return { reason: `VM entry failed (hardware reason 0x${hw.toString(16)})`, failed: true };
      }
      default:
        this.log.warn(`unhandled exit reason ${reason}; continuing`);
        return RUN_AGAIN;
    }
  }

  /**
   * Dispatches an IO or MMIO access through the reserved ranges: not reserved
   * → writes dropped, reads see zeros; async → notify without stopping;
   * otherwise stop and wait for the plugin.
   */
  private access(
    space: Space,
    address: bigint,
    isWrite: boolean,
    dataOffset: number,
    length: number,
  ): ServeOutcome {
    this.refreshConfig();
    const range = lookupRange(this.config.ranges[space], address);
    if (range === undefined || (range.asyncWrite && !isWrite)) {
      if (!isWrite) this.runBytes.fill(0, dataOffset, dataOffset + length);
      return RUN_AGAIN;
    }
    const data = isWrite ? this.runBytes.subarray(dataOffset, dataOffset + length) : zeros(length);
    const io: VcpuResponse_Wait_Io = {
      space: space === IOPORT ? AddressSpace.IOPORT : AddressSpace.MMIO,
      address,
      isWrite,
      noResume: range.asyncWrite,
      data,
      regs: EMPTY,
      sregs: EMPTY,
      debugregs: EMPTY,
    };
    if (range.asyncWrite) {
      this.plugin.pushWait({ $case: 'io', io });
      return RUN_AGAIN;
    }
    this.addHintedRegisters(io);
    if (!isWrite) this.pendingRead = { kind: 'data', offset: dataOffset, length };
    return this.plugin.stop({ $case: 'io', io });
  }

  /** Adds regs (and sregs/debugregs per the first matching detail) when the call hint matches. */
  private addHintedRegisters(io: VcpuResponse_Wait_Io): void {
    const hint = this.config.callHint;
    if (hint === null || hint.space !== io.space || hint.address !== io.address || hint.onWrite !== io.isWrite) return;
    const regs = Buffer.from(this.vcpu.getRegs());
    io.regs = regs;
    const view = new RegsView(regs);
    const detail = hint.hints.find(
      (h) =>
        (!h.matchRax || h.rax === view.rax) &&
        (!h.matchRbx || h.rbx === view.rbx) &&
        (!h.matchRcx || h.rcx === view.rcx) &&
        (!h.matchRdx || h.rdx === view.rdx),
    );
    if (detail?.sendSregs) io.sregs = Buffer.from(this.vcpu.getSregs());
    if (detail?.sendDebugregs) io.debugregs = Buffer.from(this.vcpu.getDebugregs());
  }

  private hypervExit(): ServeOutcome {
    const run = this.vcpu.kvmRun;
    const type = run.getUint32(C.KVM_RUN_HYPERV_TYPE, true);
    if (type === C.KVM_EXIT_HYPERV_HCALL) {
      this.pendingRead = { kind: 'hcall' };
      return this.plugin.stop({
        $case: 'hypervCall',
        hypervCall: {
          input: run.getBigUint64(C.KVM_RUN_HYPERV_HCALL_INPUT, true),
          params0: run.getBigUint64(C.KVM_RUN_HYPERV_HCALL_PARAMS, true),
          params1: run.getBigUint64(C.KVM_RUN_HYPERV_HCALL_PARAMS + 8, true),
        },
      });
    }
    if (type === C.KVM_EXIT_HYPERV_SYNIC) {
      return this.plugin.stop({
        $case: 'hypervSynic',
        hypervSynic: {
          msr: run.getUint32(C.KVM_RUN_HYPERV_SYNIC_MSR, true),
          control: run.getBigUint64(C.KVM_RUN_HYPERV_SYNIC_CONTROL, true),
          evtPage: run.getBigUint64(C.KVM_RUN_HYPERV_SYNIC_EVT_PAGE, true),
          msgPage: run.getBigUint64(C.KVM_RUN_HYPERV_SYNIC_MSG_PAGE, true),
        },
      });
    }
    this.log.warn(`unhandled Hyper-V exit type ${type}; continuing`);
    return RUN_AGAIN;
  }

  /** Takes the newest configuration if the main thread published one since the last look. */
  private refreshConfig(): void {
    const generation = this.shared.configGeneration;
    if (generation === this.configGeneration) return;
    this.configGeneration = generation;
    for (let m = receiveMessageOnPort(this.data.configPort); m !== undefined; m = receiveMessageOnPort(this.data.configPort)) {
      this.config = m.message as VcpuConfig;
    }
  }

  /** Sends a log line or the exit report to the main thread. */
  report(message: VcpuWorkerMessage): void {
    parentPort?.postMessage(message);
  }

  close(): void {
    this.vcpu.close();
    this.data.configPort.close();
  }
}

/** Resumed without a stop: run again. */
const RUN_AGAIN: ServeOutcome = { kind: 'resume', resume: { data: EMPTY, regs: EMPTY, sregs: EMPTY, debugregs: EMPTY } };

function zeros(length: number): Buffer {
  return length <= ZEROS.length ? ZEROS.subarray(0, length) : Buffer.alloc(length);
}

function runVcpu(start: VcpuStart): void {
  const data = workerData as VcpuWorkerData;
  let thread: VcpuThread | undefined;
  let result: { reason: string; failed: boolean };
  try {
    thread = new VcpuThread(data, start);
    result = thread.run();
  } catch (e) {
    result = { reason: `VCPU thread failed: ${e instanceof Error ? e.message : String(e)}`, failed: true };
  }
  const message: VcpuWorkerMessage = { type: 'exit', ...result };
  if (thread) {
    thread.report(message);
    thread.close();
  } else {
    parentPort?.postMessage(message);
    native.close(start.vcpuFd);
    data.configPort.close();
  }
}

parentPort?.once('message', runVcpu);
