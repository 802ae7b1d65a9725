/**
 * The per-VCPU plugin connection, host side (runs on the VCPU's thread):
 * reads VcpuRequests from the plugin->host pipe, answers them, and pushes a
 * `wait` whenever the VCPU stops. Every VcpuRequest is handled in
 * {@link PluginVcpu.serveUntilResume}.
 */
import { native, isErrnoError, C } from '../native/index.js';
import type { Vcpu, CpuidEntry2 } from '../kvm/index.js';
import { encodeDelimitedVcpuResponse } from '../protocol/framing.js';
import { PipeReader } from '../protocol/pipe-reader.js';
import {
  CpuidEntry,
  VcpuRequest,
  VcpuRequest_Resume,
  VcpuRequest_StateSet,
  VcpuResponse,
  type VcpuResponse_Wait,
} from '../protocol/gen/plugin.js';
import { errno } from '../errno.js';
import { vcpuFailure } from '../protocol/responses.js';
import { Log } from './log.js';

/** The reason a VCPU stopped, as pushed to the plugin. */
export type WaitReason = NonNullable<VcpuResponse_Wait['exit']>;

/** What the plugin asked for when it stopped serving requests. */
export type ServeOutcome = { kind: 'resume'; resume: VcpuRequest_Resume } | { kind: 'shutdown' };

/** Largest VcpuRequest the host reads in one go (the protocol's 256 KiB). */
const REQUEST_BUFFER_SIZE = 256 * 1024;

type Response = VcpuResponse['message'];

/** Getter and setter of one per-VCPU kernel state, by protocol StateSet. */
interface StateAccess {
  size: number;
  get(vcpu: Vcpu): Uint8Array;
  set(vcpu: Vcpu, bytes: Uint8Array): void;
}

const STATE_SETS: ReadonlyMap<number, StateAccess> = new Map([
  [VcpuRequest_StateSet.REGS, { size: C.SIZEOF_KVM_REGS, get: (v) => v.getRegs(), set: (v, b) => v.setRegs(b) }],
  [VcpuRequest_StateSet.SREGS, { size: C.SIZEOF_KVM_SREGS, get: (v) => v.getSregs(), set: (v, b) => v.setSregs(b) }],
  [VcpuRequest_StateSet.FPU, { size: C.SIZEOF_KVM_FPU, get: (v) => v.getFpu(), set: (v, b) => v.setFpu(b) }],
  [
    VcpuRequest_StateSet.DEBUGREGS,
    { size: C.SIZEOF_KVM_DEBUGREGS, get: (v) => v.getDebugregs(), set: (v, b) => v.setDebugregs(b) },
  ],
  [VcpuRequest_StateSet.LAPIC, { size: C.SIZEOF_KVM_LAPIC_STATE, get: (v) => v.getLapic(), set: (v, b) => v.setLapic(b) }],
  [VcpuRequest_StateSet.MP, { size: C.SIZEOF_KVM_MP_STATE, get: (v) => v.getMpState(), set: (v, b) => v.setMpState(b) }],
  [VcpuRequest_StateSet.XCREGS, { size: C.SIZEOF_KVM_XCRS, get: (v) => v.getXcrs(), set: (v, b) => v.setXcrs(b) }],
  [
    VcpuRequest_StateSet.EVENTS,
    { size: C.SIZEOF_KVM_VCPU_EVENTS, get: (v) => v.getVcpuEvents(), set: (v, b) => v.setVcpuEvents(b) },
  ],
]);

const ALLOWED_VCPU_CAPABILITIES = new Set([C.KVM_CAP_HYPERV_SYNIC, C.KVM_CAP_HYPERV_SYNIC2]);

export class PluginVcpu {
  private readonly requestBuffer = Buffer.alloc(REQUEST_BUFFER_SIZE);
  private readonly requests: PipeReader;
  /** A reason the plugin must collect with `wait` before anything else (only `init`). */
  private unsentReason: WaitReason | undefined;

  constructor(
    private readonly vcpu: Vcpu,
    requestFd: number,
    private readonly responseFd: number,
    private readonly log: Log,
    spinUs: number,
  ) {
    this.requests = new PipeReader(requestFd, spinUs);
  }

  /**
   * The VCPU stopped for `reason`: tell the plugin (`init` waits for the
   * plugin's first `wait`; every later reason is pushed at once), then serve
   * its requests until it resumes or shuts down.
   */
  stop(reason: WaitReason): ServeOutcome {
    if (reason.$case === 'init') this.unsentReason = reason;
    else this.pushWait(reason);
    return this.serveUntilResume();
  }

  /** Pushes a reason that needs no resume (an async write). */
  pushWait(reason: WaitReason): void {
    this.send({ errnoValue: 0, message: { $case: 'wait', wait: { exit: reason } } });
  }

  private serveUntilResume(): ServeOutcome {
    for (;;) {
      const request = this.readRequest();
      if (request === undefined) continue;
      const message = request.message;
      if (message === undefined) {
        this.send({ errnoValue: errno.ENOTTY, message: undefined });
        continue;
      }
      if (message.$case === 'shutdown') return { kind: 'shutdown' };
      if (message.$case === 'wait') {
        if (this.unsentReason === undefined) {
          this.send(vcpuFailure(errno.EPROTO, 'wait'));
        } else {
          this.pushWait(this.unsentReason);
          this.unsentReason = undefined;
        }
        continue;
      }
      if (this.unsentReason !== undefined) {
        // The plugin must collect the init reason before anything else.
        this.send(vcpuFailure(errno.EPROTO, message.$case));
        continue;
      }
      if (message.$case === 'resume') return { kind: 'resume', resume: message.resume };
      this.send(this.handle(message));
    }
  }

  /** Answers one request that needs the VCPU stopped; errors become errnos. */
  private handle(message: Exclude<VcpuRequest['message'], undefined>): VcpuResponse {
    try {
      return { errnoValue: 0, message: this.answer(message) };
    } catch (e) {
      const code = isErrnoError(e) ? e.errno : errno.EINVAL;
      if (!isErrnoError(e)) this.log.warn(`VCPU request ${message.$case} failed: ${String(e)}`);
      return vcpuFailure(code, message.$case);
    }
  }

  private answer(message: Exclude<VcpuRequest['message'], undefined>): Response {
    const vcpu = this.vcpu;
    switch (message.$case) {
      case 'getState': {
        const state = stateAccess(message.getState.set);
        return { $case: 'getState', getState: { state: Buffer.from(state.get(vcpu)) } };
      }
      case 'setState': {
        const state = stateAccess(message.setState.set);
        if (message.setState.state.length !== state.size) throw errnoError(errno.EINVAL, 'state has the wrong size');
        state.set(vcpu, message.setState.state);
        return { $case: 'setState', setState: {} };
      }
      case 'getMsrs':
        return { $case: 'getMsrs', getMsrs: { entryData: vcpu.getMsrs(message.getMsrs.entryIndices) } };
      case 'setMsrs': {
        const entries = message.setMsrs.entries;
        const written = vcpu.setMsrs(entries.map((e) => ({ index: e.index, data: e.data })));
        if (written !== entries.length) throw errnoError(errno.EINVAL, `MSR ${entries[written]?.index} was refused`);
        return { $case: 'setMsrs', setMsrs: {} };
      }
      case 'setCpuid':
        vcpu.setCpuid2(message.setCpuid.entries.map(toKernelCpuid));
        return { $case: 'setCpuid', setCpuid: {} };
      case 'getHypervCpuid':
        return { $case: 'getHypervCpuid', getHypervCpuid: { entries: vcpu.supportedHvCpuid().map(fromKernelCpuid) } };
      case 'enableCapability': {
        const capability = message.enableCapability.capability;
        if (!ALLOWED_VCPU_CAPABILITIES.has(capability)) throw errnoError(errno.EINVAL, 'capability not allowed');
        vcpu.enableCap(capability);
        return { $case: 'enableCapability', enableCapability: {} };
      }
      case 'wait':
      case 'resume':
      case 'shutdown':
        throw new Error(`${message.$case} is handled by the conversation`);
    }
  }

  /** Reads and decodes one request; undefined (after answering EINVAL) if it is malformed. */
  private readRequest(): VcpuRequest | undefined {
    const length = this.requests.read(this.requestBuffer, 0, this.requestBuffer.length);
    // The host holds a write end of this pipe, so end-of-file only happens
    // when the host itself is tearing down: treat it as a shutdown.
    if (length <= 0) return { message: { $case: 'shutdown', shutdown: {} } };
    try {
      return VcpuRequest.decode(this.requestBuffer.subarray(0, length));
    } catch (e) {
      this.log.warn(`malformed VCPU request (${length} bytes): ${String(e)}`);
      this.send({ errnoValue: errno.EINVAL, message: undefined });
      return undefined;
    }
  }

  private send(response: VcpuResponse): void {
    const bytes = encodeDelimitedVcpuResponse(response);
    let offset = 0;
    while (offset < bytes.length) {
      const written = native.write(this.responseFd, bytes, offset, bytes.length - offset);
      if (written <= 0) throw new Error('VCPU response pipe is not writable');
      offset += written;
    }
  }
}

/** Applies the register sets carried by a resume (non-empty ones only). */
export function applyResumeRegisters(vcpu: Vcpu, resume: VcpuRequest_Resume, log: Log): void {
  try {
    if (resume.regs.length > 0) vcpu.setRegs(resume.regs);
    if (resume.sregs.length > 0) vcpu.setSregs(resume.sregs);
    if (resume.debugregs.length > 0) vcpu.setDebugregs(resume.debugregs);
  } catch (e) {
    log.warn(`registers sent with resume were not applied: ${String(e)}`);
  }
}

function stateAccess(set: number): StateAccess {
  const access = STATE_SETS.get(set);
  if (access === undefined) throw errnoError(errno.EINVAL, `unknown VCPU state set ${set}`);
  return access;
}

function errnoError(code: number, message: string): Error & { errno: number } {
  return Object.assign(new Error(message), { errno: code });
}

export function toKernelCpuid(entry: CpuidEntry): CpuidEntry2 {
  return {
    function: entry.function,
    index: entry.index,
    flags: entry.hasIndex ? C.KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0,
    eax: entry.eax,
    ebx: entry.ebx,
    ecx: entry.ecx,
    edx: entry.edx,
  };
}

export function fromKernelCpuid(entry: CpuidEntry2): CpuidEntry {
  return {
    function: entry.function,
    hasIndex: (entry.flags & C.KVM_CPUID_FLAG_SIGNIFCANT_INDEX) !== 0,
    index: entry.index,
    eax: entry.eax,
    ebx: entry.ebx,
    ecx: entry.ecx,
    edx: entry.edx,
  };
}
