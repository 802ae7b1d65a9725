/**
 * One VCPU's conversation with the host, over its two pipes (synchronous).
 *
 * The hot path is one exit = one {@link Vcpu.wait} + one {@link Vcpu.resume}:
 * `wait` is encoded once, `resume` goes through the thread's one reused
 * protobuf writer (see framing.ts), and the pipes' reads reuse one buffer
 * (vcpu-pipe.ts).
 *
 * A Vcpu belongs to one thread (worker threads get their own Connection and
 * their own Vcpu objects via getVcpus()).
 *
 * Requests (get/set state, MSRs, CPUID, capabilities) are answered by the
 * host while the VCPU is stopped. They may also be sent after an async-write
 * (noResume) event, while the VCPU runs: the answer then comes at its next
 * stop, and the waits pushed before it are queued for wait(). They may not be
 * sent right after resume() before anything was received (PluginError EBUSY):
 * the host reads one request per read(2) and could merge it with the resume.
 */
import { native } from '../native/index.js';
import { errno as Errno } from '../errno.js';
import { encodeMessage } from '../protocol/framing.js';
import { CpuidEntry, VcpuRequest, VcpuRequest_StateSet, type VcpuRequest_Resume, VcpuResponse } from '../protocol/gen/plugin.js';
import { PluginError, snakeCase } from './errors.js';
import { eventOf, type MsrEntry, type VcpuEvent } from './vcpu-events.js';
import { VcpuPipe } from './vcpu-pipe.js';

const WAIT_REQUEST = encodeMessage(VcpuRequest, { message: { $case: 'wait', wait: {} } });
const EMPTY = new Uint8Array(0);

function copyOf(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/** Struct sizes the SDK checks before deferring a register write (from the addon). */
function structSize(set: VcpuRequest_StateSet): number | undefined {
  const C = native.constants;
  if (!C) return undefined;
  switch (set) {
    case VcpuRequest_StateSet.REGS:
      return C.SIZEOF_KVM_REGS;
    case VcpuRequest_StateSet.SREGS:
      return C.SIZEOF_KVM_SREGS;
    case VcpuRequest_StateSet.DEBUGREGS:
      return C.SIZEOF_KVM_DEBUGREGS;
    default:
      return undefined;
  }
}

const SET_NAMES: Record<number, string> = {
  [VcpuRequest_StateSet.REGS]: 'regs',
  [VcpuRequest_StateSet.SREGS]: 'sregs',
  [VcpuRequest_StateSet.DEBUGREGS]: 'debugregs',
};

/**
 * One VCPU of the VM, from {@link Connection.getVcpu}: {@link Vcpu.wait}
 * for the next event, handle it, {@link Vcpu.resume}. While it is stopped,
 * its state can be read and written.
 */
export class Vcpu {
  /** The VCPU's index (0-based, in the host's order). */
  readonly id: number;
  private readonly pipe: VcpuPipe;

  private readonly hcallResult = new Uint8Array(8);
  private readonly hcallResultView = new DataView(this.hcallResult.buffer);

  private waitSent = false;
  /** The event the VCPU is stopped at (undefined while it runs). */
  private current: VcpuEvent | undefined;

  /** Register sets that came with the current io event. */
  private eventRegs: (Uint8Array | undefined)[] = [undefined, undefined, undefined, undefined];
  /** Deferred register writes, sent with the next real resume. Indexed by StateSet (REGS, SREGS, -, DEBUGREGS). */
  private deferred: (Uint8Array | undefined)[] = [undefined, undefined, undefined, undefined];

  /** @internal Connection.getVcpus creates these; `spinUs` is the read spin budget (see VcpuOptions). */
  constructor(id: number, requestFd: number, responseFd: number, spinUs: number) {
    this.id = id;
    this.pipe = new VcpuPipe(id, requestFd, responseFd, spinUs);
  }

  /**
   * Blocks until the VCPU stops (or reports an async write) and returns why.
   * The first call sends `wait`; the host pushes every later reason by itself.
   * The event stays current until resume().
   */
  wait(): VcpuEvent {
    this.pipe.checkOpen('wait');
    if (this.current !== undefined && !(this.current.kind === 'io' && this.current.noResume)) {
      throw new Error(`vcpu ${this.id}: wait() called while stopped at a '${this.current.kind}' event; call resume() first`);
    }
    let wait = this.pipe.queued.shift();
    if (wait === undefined) {
      if (!this.waitSent) {
        this.pipe.write(WAIT_REQUEST, WAIT_REQUEST.length, 'wait');
        this.waitSent = true;
      }
      const response = this.pipe.receive('wait');
      const message = response.message;
      if (response.errnoValue !== 0) {
        this.waitSent = false;
        throw new PluginError('wait', response.errnoValue);
      }
      if (message?.$case !== 'wait') {
        throw new PluginError(
          'wait',
          Errno.EPROTO,
          `vcpu ${this.id}: expected a wait, got ${message ? snakeCase(message.$case) : 'an empty response'}`,
          { transport: true },
        );
      }
      wait = message.wait;
    }
    const event = eventOf(wait, this.id);
    if (event.kind === 'io') {
      if (event.regs) this.eventRegs[VcpuRequest_StateSet.REGS] = event.regs;
      if (event.sregs) this.eventRegs[VcpuRequest_StateSet.SREGS] = event.sregs;
      if (event.debugregs) this.eventRegs[VcpuRequest_StateSet.DEBUGREGS] = event.debugregs;
    }
    this.current = event;
    return event;
  }

  /**
   * Lets the VCPU run again. For an io read, sends `data` if given, else the
   * event's `data` (which the plugin may have filled in); for a hypercall,
   * the event's `result`. Deferred setRegs/setSregs/setDebugregs go along.
   * A no-op for async-write (noResume) events, whose VCPU never stopped.
   */
  resume(data?: Uint8Array): void {
    this.pipe.checkOpen('resume');
    const event = this.current;
    if (event === undefined) throw new Error(`vcpu ${this.id}: resume() without a pending event (call wait() first)`);
    if (event.kind === 'io' && event.noResume) {
      this.current = undefined;
      return;
    }
    let payload = data;
    if (payload === undefined) {
      if (event.kind === 'io' && !event.isWrite) payload = event.data;
      else if (event.kind === 'hypervCall') {
        this.hcallResultView.setBigUint64(0, BigInt.asUintN(64, event.result), true);
        payload = this.hcallResult;
      } else payload = EMPTY;
    }
    const d = this.deferred;
    const resume = {
      data: payload,
      regs: d[VcpuRequest_StateSet.REGS] ?? EMPTY,
      sregs: d[VcpuRequest_StateSet.SREGS] ?? EMPTY,
      debugregs: d[VcpuRequest_StateSet.DEBUGREGS] ?? EMPTY,
    };
    // The generated types say Buffer; the encoder only reads the bytes.
    this.pipe.writeResume(encodeMessage(VcpuRequest, { message: { $case: 'resume', resume: resume as VcpuRequest_Resume } }));
    d[0] = d[1] = d[3] = undefined;
    this.eventRegs[0] = this.eventRegs[1] = this.eventRegs[3] = undefined;
    this.current = undefined;
  }

  /** Raw struct kvm_regs: the deferred value, else the current io event's, else asked from the host. */
  getRegs(): Uint8Array {
    return this.getRegisterSet(VcpuRequest_StateSet.REGS);
  }
  /** Defers a write of raw struct kvm_regs until the next resume(). */
  setRegs(bytes: Uint8Array): void {
    this.setRegisterSet(VcpuRequest_StateSet.REGS, bytes);
  }
  /** Raw struct kvm_sregs (same rules as getRegs). */
  getSregs(): Uint8Array {
    return this.getRegisterSet(VcpuRequest_StateSet.SREGS);
  }
  /** Defers a write of raw struct kvm_sregs until the next resume(). */
  setSregs(bytes: Uint8Array): void {
    this.setRegisterSet(VcpuRequest_StateSet.SREGS, bytes);
  }
  /** Raw struct kvm_debugregs (same rules as getRegs). */
  getDebugregs(): Uint8Array {
    return this.getRegisterSet(VcpuRequest_StateSet.DEBUGREGS);
  }
  /** Defers a write of raw struct kvm_debugregs until the next resume(). */
  setDebugregs(bytes: Uint8Array): void {
    this.setRegisterSet(VcpuRequest_StateSet.DEBUGREGS, bytes);
  }

  /**
   * The raw bytes of one per-VCPU kernel struct. FPU, LAPIC, MP, XCREGS and
   * EVENTS are immediate round trips; REGS, SREGS and DEBUGREGS follow the
   * getRegs rules.
   */
  getState(set: VcpuRequest_StateSet): Uint8Array {
    if (set in SET_NAMES) return this.getRegisterSet(set);
    return this.pipe.call({ $case: 'getState', getState: { set } }).state;
  }

  /**
   * Writes one per-VCPU kernel struct: immediately for FPU, LAPIC, MP, XCREGS
   * and EVENTS; deferred to the next resume() for REGS, SREGS and DEBUGREGS.
   */
  setState(set: VcpuRequest_StateSet, bytes: Uint8Array): void {
    if (set in SET_NAMES) {
      this.setRegisterSet(set, bytes);
      return;
    }
    this.pipe.call({ $case: 'setState', setState: { set, state: Buffer.from(bytes) } });
  }

  /** Reads MSRs; the values come back in the order of `indices`. */
  getMsrs(indices: readonly number[]): bigint[] {
    const data = this.pipe.call({ $case: 'getMsrs', getMsrs: { entryIndices: [...indices] } }).entryData;
    if (data.length !== indices.length) {
      throw new PluginError('get_msrs', Errno.EPROTO, `asked for ${indices.length} MSRs, got ${data.length}`, {
        transport: true,
      });
    }
    return data;
  }

  /** Writes MSRs (KVM_SET_MSRS). */
  setMsrs(entries: readonly MsrEntry[]): void {
    this.pipe.call({ $case: 'setMsrs', setMsrs: { entries: entries.map((e) => ({ index: e.index, data: e.data })) } });
  }

  /** Sets the CPUID the guest sees (KVM_SET_CPUID2); `hasIndex` entries match on the sub-leaf. */
  setCpuid(entries: readonly CpuidEntry[]): void {
    this.pipe.call({ $case: 'setCpuid', setCpuid: { entries: entries.map((e) => ({ ...e })) } });
  }

  /** The Hyper-V CPUID leaves KVM supports for this VCPU (KVM_GET_SUPPORTED_HV_CPUID). */
  getHypervCpuid(): CpuidEntry[] {
    return this.pipe.call({ $case: 'getHypervCpuid', getHypervCpuid: {} }).entries;
  }

  /** Enables a per-VCPU capability (the host allows only KVM_CAP_HYPERV_SYNIC and KVM_CAP_HYPERV_SYNIC2). */
  enableCapability(capability: number): void {
    this.pipe.call({ $case: 'enableCapability', enableCapability: { capability } });
  }

  /**
   * Sends one raw request and returns the host's raw answer, errno included
   * (never thrown), for wire-level checks. Pushed waits that arrive first are
   * queued for wait(). Not for wait, resume or shutdown, which get no answer
   * of their own.
   */
  request(req: VcpuRequest): VcpuResponse {
    return this.pipe.request(req);
  }

  /** Closes this handle's pipe ends. Idempotent. */
  close(): void {
    this.pipe.close();
  }

  // ---- internals ----

  private getRegisterSet(set: VcpuRequest_StateSet): Uint8Array {
    this.pipe.checkOpen(`get_${SET_NAMES[set]}`);
    const cached = this.deferred[set] ?? this.eventRegs[set];
    if (cached !== undefined) return copyOf(cached);
    return this.pipe.call({ $case: 'getState', getState: { set } }).state;
  }

  private setRegisterSet(set: VcpuRequest_StateSet, bytes: Uint8Array): void {
    const name = `set_${SET_NAMES[set]}`;
    this.pipe.checkOpen(name);
    const size = structSize(set);
    if (size !== undefined && bytes.length !== size) {
      throw new PluginError(name, Errno.EINVAL, `expected ${size} bytes, got ${bytes.length}`);
    }
    this.deferred[set] = copyOf(bytes);
  }
}
