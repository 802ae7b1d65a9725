/**
 * One VCPU's conversation with the host, over its two pipes (synchronous).
 *
 * The hot path is one exit = one {@link Vcpu.wait} + one {@link Vcpu.resume}:
 * the read buffer is reused, `wait` is encoded once, `resume` goes through
 * the thread's one reused protobuf writer (see framing.ts), and several pushed
 * responses that arrive in one read are split with a DelimitedStream.
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
import { encodeMessage } from '../protocol/framing.js';
import { PipeReader } from '../protocol/pipe-reader.js';
import { native } from '../native/index.js';
import { DelimitedStream } from '../protocol/framing.js';
import {
  AddressSpace,
  CpuidEntry,
  VcpuRequest,
  VcpuRequest_StateSet,
  type VcpuRequest_Resume,
  VcpuResponse,
  VcpuResponse_Wait,
} from '../protocol/gen/plugin.js';
import { PluginError, snakeCase } from './errors.js';
import { errno as Errno } from '../errno.js';

/** The VCPU stopped before running for the first time; set it up, then resume. */
export interface InitEvent {
  /** What happened. */
  kind: 'init';
}

/** An access to a reserved range. */
export interface IoAccessEvent {
  /** What happened. */
  kind: 'io';
  /** The address space of the access. */
  space: AddressSpace;
  /** The port or guest physical address. */
  address: bigint;
  /** True when the guest wrote, false when it read. */
  isWrite: boolean;
  /**
   * True for a write to an async-write range: the VCPU did not stop, so do
   * not resume (resume() is a no-op for such events).
   */
  noResume: boolean;
  /**
   * For a write, the bytes written. For a read, zeros of the access size:
   * fill them in (or pass the value to resume()).
   */
  data: Uint8Array;
  /** Raw struct kvm_regs, present when the call hint matched. */
  regs?: Uint8Array;
  /** Raw struct kvm_sregs, present when the matching hint detail asked for them. */
  sregs?: Uint8Array;
  /** Raw struct kvm_debugregs, present when the matching hint detail asked for them. */
  debugregs?: Uint8Array;
}

/** The VCPU stopped because of Connection.pauseVcpus. */
export interface PausedEvent {
  /** What happened. */
  kind: 'paused';
  /** The `user` value given to pauseVcpus. */
  user: bigint;
}

/** A Hyper-V hypercall: set `result` before resume(). */
export interface HypervCallEvent {
  /** What happened. */
  kind: 'hypervCall';
  /** The hypercall input value (call code and flags). */
  input: bigint;
  /** The two parameters (input and output GPAs, or fast-call values). */
  params: [bigint, bigint];
  /** The hypercall's result, sent with the next resume() (default 0). */
  result: bigint;
}

/** A Hyper-V SynIC MSR write. */
export interface HypervSynicEvent {
  /** What happened. */
  kind: 'hypervSynic';
  /** The SynIC MSR the guest wrote. */
  msr: number;
  /** The SynIC control value. */
  control: bigint;
  /** The event flags page's address. */
  evtPage: bigint;
  /** The message page's address. */
  msgPage: bigint;
}

/** Why a VCPU stopped, as {@link Vcpu.wait} returns it: switch on `kind`. */
export type VcpuEvent = InitEvent | IoAccessEvent | PausedEvent | HypervCallEvent | HypervSynicEvent;

/** One MSR for setMsrs. */
export interface MsrEntry {
  /** The MSR's index. */
  index: number;
  /** Its value. */
  data: bigint;
}

const READ_BUFFER_SIZE = 0x40000;
const WAIT_REQUEST = encodeMessage(VcpuRequest, { message: { $case: 'wait', wait: {} } });
const EMPTY = new Uint8Array(0);

type RequestCase = NonNullable<VcpuRequest['message']>['$case'];
type ResponseMessage = NonNullable<VcpuResponse['message']>;
type ResponseBody<K extends ResponseMessage['$case']> = Extract<ResponseMessage, { $case: K }> extends infer M
  ? M extends Record<K, infer B> ? B : never
  : never;

function copyOf(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/** Struct sizes the SDK checks before deferring a register write (from the addon). */
function structSize(set: VcpuRequest_StateSet): number | undefined {
  const C = native.constants;
  if (!C) return undefined;
  switch (set) {
    case VcpuRequest_StateSet.REGS: return C.SIZEOF_KVM_REGS;
    case VcpuRequest_StateSet.SREGS: return C.SIZEOF_KVM_SREGS;
    case VcpuRequest_StateSet.DEBUGREGS: return C.SIZEOF_KVM_DEBUGREGS;
    default: return undefined;
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
  /** plugin→host pipe, write end. */
  private readonly requestFd: number;
  /** host→plugin pipe, read end. */
  private readonly responseFd: number;
  private readonly responses: PipeReader;
  private closed = false;

  private readonly readBuffer = new Uint8Array(READ_BUFFER_SIZE);
  private readonly stream = new DelimitedStream();
  private readonly hcallResult = new Uint8Array(8);
  private readonly hcallResultView = new DataView(this.hcallResult.buffer);

  /** Pushed waits that arrived while the SDK waited for another answer. */
  private readonly queued: VcpuResponse_Wait[] = [];
  private waitSent = false;
  /**
   * True from a resume until the next response: the host may not have read
   * the resume yet, and it reads one request per read(2), so a second
   * request written now could be merged into the same read and lost.
   */
  private resumePending = false;
  /** The event the VCPU is stopped at (undefined while it runs). */
  private current: VcpuEvent | undefined;

  /** Register sets that came with the current io event. */
  private eventRegs: (Uint8Array | undefined)[] = [undefined, undefined, undefined, undefined];
  /** Deferred register writes, sent with the next real resume. Indexed by StateSet (REGS, SREGS, -, DEBUGREGS). */
  private deferred: (Uint8Array | undefined)[] = [undefined, undefined, undefined, undefined];

  /** @internal Connection.getVcpus creates these; `spinUs` is the read spin budget (see VcpuOptions). */
  constructor(id: number, requestFd: number, responseFd: number, spinUs: number) {
    this.id = id;
    this.requestFd = requestFd;
    this.responseFd = responseFd;
    this.responses = new PipeReader(responseFd, spinUs);
  }

  /**
   * Blocks until the VCPU stops (or reports an async write) and returns why.
   * The first call sends `wait`; the host pushes every later reason by itself.
   * The event stays current until resume().
   */
  wait(): VcpuEvent {
    this.checkOpen('wait');
    if (this.current !== undefined && !(this.current.kind === 'io' && this.current.noResume)) {
      throw new Error(`vcpu ${this.id}: wait() called while stopped at a '${this.current.kind}' event; call resume() first`);
    }
    let wait = this.queued.shift();
    if (wait === undefined) {
      if (!this.waitSent) {
        this.writeAll(WAIT_REQUEST, WAIT_REQUEST.length, 'wait');
        this.waitSent = true;
      }
      const response = this.readResponse('wait');
      const message = response.message;
      if (response.errnoValue !== 0) {
        this.waitSent = false;
        throw new PluginError('wait', response.errnoValue);
      }
      if (message?.$case !== 'wait') {
        throw new PluginError('wait', Errno.EPROTO, `vcpu ${this.id}: expected a wait, got ${message ? snakeCase(message.$case) : 'an empty response'}`, { transport: true });
      }
      wait = message.wait;
    }
    const event = this.toEvent(wait);
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
    this.checkOpen('resume');
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
    const bytes = encodeMessage(VcpuRequest, { message: { $case: 'resume', resume: resume as VcpuRequest_Resume } });
    this.writeAll(bytes, bytes.length, 'resume');
    this.resumePending = true;
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
    return this.roundTrip({ $case: 'getState', getState: { set } }, 'getState').state;
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
    this.roundTrip({ $case: 'setState', setState: { set, state: Buffer.from(bytes) } }, 'setState');
  }

  /** Reads MSRs; the values come back in the order of `indices`. */
  getMsrs(indices: readonly number[]): bigint[] {
    const data = this.roundTrip({ $case: 'getMsrs', getMsrs: { entryIndices: [...indices] } }, 'getMsrs').entryData;
    if (data.length !== indices.length) {
      throw new PluginError('get_msrs', Errno.EPROTO, `asked for ${indices.length} MSRs, got ${data.length}`, { transport: true });
    }
    return data;
  }

  /** Writes MSRs (KVM_SET_MSRS). */
  setMsrs(entries: readonly MsrEntry[]): void {
    this.roundTrip({ $case: 'setMsrs', setMsrs: { entries: entries.map((e) => ({ index: e.index, data: e.data })) } }, 'setMsrs');
  }

  /** Sets the CPUID the guest sees (KVM_SET_CPUID2); `hasIndex` entries match on the sub-leaf. */
  setCpuid(entries: readonly CpuidEntry[]): void {
    this.roundTrip({ $case: 'setCpuid', setCpuid: { entries: entries.map((e) => ({ ...e })) } }, 'setCpuid');
  }

  /** The Hyper-V CPUID leaves KVM supports for this VCPU (KVM_GET_SUPPORTED_HV_CPUID). */
  getHypervCpuid(): CpuidEntry[] {
    return this.roundTrip({ $case: 'getHypervCpuid', getHypervCpuid: {} }, 'getHypervCpuid').entries;
  }

  /** Enables a per-VCPU capability (the host allows only KVM_CAP_HYPERV_SYNIC and KVM_CAP_HYPERV_SYNIC2). */
  enableCapability(capability: number): void {
    this.roundTrip({ $case: 'enableCapability', enableCapability: { capability } }, 'enableCapability');
  }

  /**
   * Sends one raw request and returns the host's raw answer, errno included
   * (never thrown), for wire-level checks. Pushed waits that arrive first are
   * queued for wait(). Not for wait, resume or shutdown, which get no answer
   * of their own.
   */
  request(req: VcpuRequest): VcpuResponse {
    const name = req.message ? snakeCase(req.message.$case) : 'request';
    this.checkOpen(name);
    if (this.resumePending) {
      throw new PluginError(name, Errno.EBUSY,
        `vcpu ${this.id} was resumed and has not reported since: call wait() before sending it requests`);
    }
    const bytes = encodeMessage(VcpuRequest, req);
    this.writeAll(bytes, bytes.length, name);
    for (;;) {
      const response = this.readResponse(name);
      if (response.message?.$case === 'wait' && response.errnoValue === 0) {
        this.queued.push(response.message.wait);
        continue;
      }
      return response;
    }
  }

  /** Closes this handle's pipe ends. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    native.close(this.requestFd);
    native.close(this.responseFd);
  }

  // ---- internals ----

  private getRegisterSet(set: VcpuRequest_StateSet): Uint8Array {
    this.checkOpen(`get_${SET_NAMES[set]}`);
    const cached = this.deferred[set] ?? this.eventRegs[set];
    if (cached !== undefined) return copyOf(cached);
    return this.roundTrip({ $case: 'getState', getState: { set } }, 'getState').state;
  }

  private setRegisterSet(set: VcpuRequest_StateSet, bytes: Uint8Array): void {
    const name = `set_${SET_NAMES[set]}`;
    this.checkOpen(name);
    const size = structSize(set);
    if (size !== undefined && bytes.length !== size) {
      throw new PluginError(name, Errno.EINVAL, `expected ${size} bytes, got ${bytes.length}`);
    }
    this.deferred[set] = copyOf(bytes);
  }

  private toEvent(wait: VcpuResponse_Wait): VcpuEvent {
    const exit = wait.exit;
    switch (exit?.$case) {
      case 'init':
        return { kind: 'init' };
      case 'io': {
        const io = exit.io;
        const event: IoAccessEvent = {
          kind: 'io', space: io.space, address: io.address, isWrite: io.isWrite, noResume: io.noResume, data: io.data,
        };
        if (io.regs.length > 0) this.eventRegs[VcpuRequest_StateSet.REGS] = event.regs = io.regs;
        if (io.sregs.length > 0) this.eventRegs[VcpuRequest_StateSet.SREGS] = event.sregs = io.sregs;
        if (io.debugregs.length > 0) this.eventRegs[VcpuRequest_StateSet.DEBUGREGS] = event.debugregs = io.debugregs;
        return event;
      }
      case 'user':
        return { kind: 'paused', user: exit.user.user };
      case 'hypervCall': {
        const c = exit.hypervCall;
        return { kind: 'hypervCall', input: c.input, params: [c.params0, c.params1], result: 0n };
      }
      case 'hypervSynic': {
        const s = exit.hypervSynic;
        return { kind: 'hypervSynic', msr: s.msr, control: s.control, evtPage: s.evtPage, msgPage: s.msgPage };
      }
      default:
        throw new PluginError('wait', Errno.EPROTO, `vcpu ${this.id}: wait without a known exit reason`, { transport: true });
    }
  }

  /**
   * Sends one request and returns the body of its answer. Pushed waits
   * (async-write notifications) that arrive first are queued for wait().
   */
  private roundTrip<K extends RequestCase & ResponseMessage['$case']>(
    message: Extract<NonNullable<VcpuRequest['message']>, { $case: K }>,
    expected: K,
  ): ResponseBody<K> {
    const name = snakeCase(expected);
    this.checkOpen(name);
    if (this.resumePending) {
      throw new PluginError(name, Errno.EBUSY,
        `vcpu ${this.id} was resumed and has not reported since: call wait() before sending it requests`);
    }
    const bytes = encodeMessage(VcpuRequest, { message });
    this.writeAll(bytes, bytes.length, name);
    for (;;) {
      const response = this.readResponse(name);
      const answer = response.message;
      if (answer?.$case === 'wait' && response.errnoValue === 0) {
        this.queued.push(answer.wait);
        continue;
      }
      if (response.errnoValue !== 0) throw new PluginError(name, response.errnoValue);
      if (answer?.$case !== expected) {
        throw new PluginError(name, Errno.EPROTO,
          `vcpu ${this.id}: answered with ${answer ? snakeCase(answer.$case) : 'an empty response'}`, { transport: true });
      }
      return (answer as Record<K, ResponseBody<K>>)[expected];
    }
  }

  private readResponse(request: string): VcpuResponse {
    for (;;) {
      let bytes: Uint8Array | undefined;
      try {
        bytes = this.stream.next();
      } catch (e) {
        throw new PluginError(request, Errno.EPROTO, `vcpu ${this.id}: malformed response framing`, { transport: true, cause: e });
      }
      if (bytes !== undefined) {
        // Any response means the host has read our last resume (the VCPU ran).
        this.resumePending = false;
        try {
          return VcpuResponse.decode(bytes);
        } catch (e) {
          throw new PluginError(request, Errno.EPROTO, `vcpu ${this.id}: undecodable response`, { transport: true, cause: e });
        }
      }
      let n: number;
      try {
        n = this.responses.read(this.readBuffer, 0, this.readBuffer.length);
      } catch (e) {
        throw transportError(request, e, `vcpu ${this.id}: read failed`);
      }
      if (n === 0) {
        throw new PluginError(request, Errno.ECONNRESET, `vcpu ${this.id}: the host closed the VCPU pipe`, { transport: true });
      }
      this.stream.push(this.readBuffer, n);
    }
  }

  private writeAll(bytes: Uint8Array, length: number, request: string): void {
    let done = 0;
    while (done < length) {
      let n: number;
      try {
        n = native.write(this.requestFd, bytes, done, length - done);
      } catch (e) {
        throw transportError(request, e, `vcpu ${this.id}: write failed`);
      }
      if (n < 0) continue;
      done += n;
    }
  }

  private checkOpen(request: string): void {
    if (this.closed) throw new PluginError(request, Errno.EBADF, `vcpu ${this.id} is closed`);
  }
}

/** Wraps an error from a system call as a transport PluginError. */
export function transportError(request: string, e: unknown, what: string): PluginError {
  const errno = typeof (e as { errno?: unknown })?.errno === 'number' ? Math.abs((e as { errno: number }).errno) : Errno.EPIPE;
  const detail = errno === Errno.EPIPE || errno === Errno.ECONNRESET
    ? `${what}: the host hung up`
    : `${what}: ${(e as Error)?.message ?? String(e)}`;
  return new PluginError(request, errno, detail, { transport: true, cause: e });
}
