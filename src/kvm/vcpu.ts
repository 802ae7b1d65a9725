/**
 * A KVM virtual CPU (the fd from KVM_CREATE_VCPU): one method per VCPU ioctl;
 * KVM_RUN's exits come typed (exit.ts).
 */
import { errno, ErrnoError, isErrnoError } from '../errno.js';
import { C, native } from '../native/index.js';
import { ExitDecoder, INTERRUPTED, type VcpuExit } from './exit.js';
import { defineStateMethods, ioctlBytes, queryCpuid2, rethrowWithContext } from './ioctl.js';
import { decodeMsrData, ENABLE_CAP, ENABLE_CAP_ARGS, encodeCpuid2, encodeMsrs, newStruct, type CpuidEntry2 } from './structs.js';

/**
 * The state structs of a VCPU, read and written as raw kernel bytes: one
 * `getX()` (KVM_GET_*: a fresh struct) and `setX(bytes)` (KVM_SET_*: exactly
 * one struct, else EINVAL) per struct, made from the table VCPU_STATE.
 */
export interface VcpuFd {
  /** KVM_GET_REGS: struct kvm_regs. */
  getRegs(): Uint8Array<ArrayBuffer>;
  /** KVM_GET_SREGS: struct kvm_sregs. */
  getSregs(): Uint8Array<ArrayBuffer>;
  /** KVM_GET_FPU: struct kvm_fpu. */
  getFpu(): Uint8Array<ArrayBuffer>;
  /** KVM_GET_DEBUGREGS: struct kvm_debugregs. */
  getDebugregs(): Uint8Array<ArrayBuffer>;
  /** KVM_GET_LAPIC: struct kvm_lapic_state (needs the in-kernel irqchip). */
  getLapic(): Uint8Array<ArrayBuffer>;
  /** KVM_GET_MP_STATE: struct kvm_mp_state. */
  getMpState(): Uint8Array<ArrayBuffer>;
  /** KVM_GET_XCRS: struct kvm_xcrs (needs KVM_CAP_XCRS). */
  getXcrs(): Uint8Array<ArrayBuffer>;
  /** KVM_GET_VCPU_EVENTS: struct kvm_vcpu_events. */
  getVcpuEvents(): Uint8Array<ArrayBuffer>;
  /** KVM_SET_REGS: exactly one struct kvm_regs, else EINVAL. */
  setRegs(bytes: Uint8Array): void;
  /** KVM_SET_SREGS: exactly one struct kvm_sregs, else EINVAL. */
  setSregs(bytes: Uint8Array): void;
  /** KVM_SET_FPU: exactly one struct kvm_fpu, else EINVAL. */
  setFpu(bytes: Uint8Array): void;
  /** KVM_SET_DEBUGREGS: exactly one struct kvm_debugregs, else EINVAL. */
  setDebugregs(bytes: Uint8Array): void;
  /** KVM_SET_LAPIC: exactly one struct kvm_lapic_state, else EINVAL. */
  setLapic(bytes: Uint8Array): void;
  /** KVM_SET_MP_STATE: exactly one struct kvm_mp_state, else EINVAL. */
  setMpState(bytes: Uint8Array): void;
  /** KVM_SET_XCRS: exactly one struct kvm_xcrs, else EINVAL. */
  setXcrs(bytes: Uint8Array): void;
  /** KVM_SET_VCPU_EVENTS: exactly one struct kvm_vcpu_events, else EINVAL. */
  setVcpuEvents(bytes: Uint8Array): void;
}

/** A KVM VCPU and its kvm_run mapping. */
export class VcpuFd {
  /** The VCPU file descriptor. */
  readonly fd: number;
  /** The whole mapping (kvm_run first), shared with the kernel. */
  private readonly kvmRun: DataView;
  private readonly exits: ExitDecoder;
  private readonly mmapSize: number;
  private readonly runAddress: bigint;
  /** Thread id that registered this kvm_run as its kick target, or 0. */
  private kickTid = 0;
  private closed = false;

  /**
   * Takes ownership of a VCPU fd and maps its kvm_run (shared, read-write).
   * `mmapSize` is Kvm.vcpuMmapSize(). Any thread may do this with a fd
   * created elsewhere in the process.
   */
  constructor(fd: number, mmapSize: number) {
    this.fd = fd;
    this.mmapSize = mmapSize;
    this.runAddress = native.mmap(mmapSize, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, fd, 0);
    const ab = native.arrayBufferAt(this.runAddress, mmapSize);
    this.kvmRun = new DataView(ab);
    this.exits = new ExitDecoder(this.kvmRun, new Uint8Array(ab));
  }

  // -------------------------------------------------------------------------
  // running

  /**
   * KVM_RUN: runs the guest until it exits, and says why. A signal or a kick
   * (`immediate_exit`) makes it return an `intr` exit (EINTR); call
   * {@link clearImmediateExit} before running again. Other errors throw. The
   * exit is valid until the next run (see exit.ts).
   */
  run(): VcpuExit {
    try {
      native.ioctl(this.fd, C.KVM_RUN, 0);
    } catch (e) {
      if (isErrnoError(e) && e.errno === errno.EINTR) return INTERRUPTED;
      rethrowWithContext(e, 'KVM_RUN');
    }
    return this.exits.decode();
  }

  /** kvm_run.immediate_exit != 0 (set by a kick). */
  get immediateExit(): boolean {
    return this.kvmRun.getUint8(C.KVM_RUN_IMMEDIATE_EXIT) !== 0;
  }

  /** Clears kvm_run.immediate_exit, so the next KVM_RUN enters the guest. */
  clearImmediateExit(): void {
    this.kvmRun.setUint8(C.KVM_RUN_IMMEDIATE_EXIT, 0);
  }

  /**
   * Makes this VCPU the kick target of the calling thread: the kick signal
   * (native.kick(tid)) then sets its immediate_exit. Call it on the thread
   * that calls {@link run}; native.installKickHandler() must have run once in
   * the process.
   */
  registerKickTarget(): void {
    native.setKickTarget(this.runAddress);
    this.kickTid = native.gettid();
  }

  // -------------------------------------------------------------------------
  // MSRs, CPUID, capabilities

  /**
   * KVM_GET_MSRS: the values of `indices`, in order. The kernel stops at the
   * first MSR it cannot read; that throws an EINVAL error naming the index.
   */
  getMsrs(indices: readonly number[]): bigint[] {
    const buf = encodeMsrs(indices.map((index) => ({ index })));
    const n = ioctlBytes(this.fd, C.KVM_GET_MSRS, 'KVM_GET_MSRS', buf);
    if (n < indices.length) {
      throw new ErrnoError(
        errno.EINVAL,
        `KVM_GET_MSRS: read ${n} of ${indices.length} MSRs; MSR 0x${(indices[n] >>> 0).toString(16)} is not readable`,
        { syscall: 'ioctl' },
      );
    }
    return decodeMsrData(buf, indices.length);
  }

  /**
   * KVM_SET_MSRS: writes the entries in order; returns how many the kernel
   * wrote (it stops at the first it refuses, which is not an error here).
   */
  setMsrs(entries: readonly { index: number; data: bigint }[]): number {
    return ioctlBytes(this.fd, C.KVM_SET_MSRS, 'KVM_SET_MSRS', encodeMsrs(entries));
  }

  /** KVM_SET_CPUID2: the CPUID table the guest sees. */
  setCpuid2(entries: readonly CpuidEntry2[]): void {
    ioctlBytes(this.fd, C.KVM_SET_CPUID2, 'KVM_SET_CPUID2', encodeCpuid2(entries));
  }

  /** KVM_ENABLE_CAP on the VCPU (e.g. KVM_CAP_HYPERV_SYNIC); at most 4 args. */
  enableCap(cap: number, flags = 0, args: readonly bigint[] = []): void {
    if (args.length > ENABLE_CAP_ARGS) {
      throw new ErrnoError(errno.EINVAL, `KVM_ENABLE_CAP: ${args.length} args given, at most ${ENABLE_CAP_ARGS}`, {
        syscall: 'ioctl',
      });
    }
    const { buf, dv } = newStruct(ENABLE_CAP);
    dv.setUint32(ENABLE_CAP.cap, cap >>> 0, true);
    dv.setUint32(ENABLE_CAP.flags, flags >>> 0, true);
    args.forEach((a, i) => dv.setBigUint64(ENABLE_CAP.args + i * 8, BigInt.asUintN(64, a), true));
    ioctlBytes(this.fd, C.KVM_ENABLE_CAP, 'KVM_ENABLE_CAP', buf);
  }

  /** KVM_GET_SUPPORTED_HV_CPUID on this VCPU: the Hyper-V CPUID leaves (needs KVM_CAP_HYPERV_CPUID). */
  supportedHvCpuid(): CpuidEntry2[] {
    return queryCpuid2(this.fd, C.KVM_GET_SUPPORTED_HV_CPUID, 'KVM_GET_SUPPORTED_HV_CPUID');
  }

  // -------------------------------------------------------------------------

  /**
   * Clears the calling thread's kick target if this VCPU registered it on
   * this thread, unmaps kvm_run and closes the fd. Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.kickTid !== 0 && this.kickTid === native.gettid()) native.setKickTarget(0n);
    this.kickTid = 0;
    native.munmap(this.runAddress, this.mmapSize);
    native.close(this.fd);
  }
}

/** The state structs of {@link VcpuFd}: `Regs` gives getRegs() and setRegs(). */
const VCPU_STATE = {
  Regs: { ioctl: 'REGS', struct: 'kvm_regs' },
  Sregs: { ioctl: 'SREGS', struct: 'kvm_sregs' },
  Fpu: { ioctl: 'FPU', struct: 'kvm_fpu' },
  Debugregs: { ioctl: 'DEBUGREGS', struct: 'kvm_debugregs' },
  Lapic: { ioctl: 'LAPIC', struct: 'kvm_lapic_state' },
  MpState: { ioctl: 'MP_STATE', struct: 'kvm_mp_state' },
  Xcrs: { ioctl: 'XCRS', struct: 'kvm_xcrs' },
  VcpuEvents: { ioctl: 'VCPU_EVENTS', struct: 'kvm_vcpu_events' },
} as const;
defineStateMethods(VcpuFd, VCPU_STATE);
