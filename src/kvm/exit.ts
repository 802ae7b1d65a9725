/**
 * Why KVM_RUN returned, typed, as kvm-ioctls' `VcpuExit` has it: decoded
 * from the VCPU's kvm_run mapping at the offsets the addon computed from the
 * headers, so callers never read kvm_run themselves.
 *
 * Allocation-light: each VcpuFd decodes into the same few objects, run after
 * run, and the `data` of an IO or MMIO exit is a view of kvm_run itself
 * (made again only when its place or length changes). So an exit is valid
 * until the next run(): copy what must outlive it.
 */
import { C } from '../native/index.js';

/** KVM_EXIT_IO: the guest accessed an IO port. */
export interface IoExit {
  /** What happened. */
  readonly kind: 'io';
  /** `out`: the guest wrote `data`; `in`: it reads `data`, which the caller fills before the next run(). */
  readonly direction: 'in' | 'out';
  /** The I/O port. */
  readonly port: number;
  /** Bytes per element: 1, 2 or 4. */
  readonly size: number;
  /** Elements (more than 1 for `rep ins` / `rep outs`). */
  readonly count: number;
  /** The `size * count` data bytes, inside kvm_run. */
  readonly data: Uint8Array;
}

/** KVM_EXIT_MMIO: the guest accessed guest physical memory that no memory slot covers. */
export interface MmioExit {
  /** What happened. */
  readonly kind: 'mmio';
  /** The guest physical address of the access. */
  readonly address: bigint;
  /** True for a write by the guest. */
  readonly isWrite: boolean;
  /** The access's bytes (at most 8), inside kvm_run: what was written, or where a read's value goes before the next run(). */
  readonly data: Uint8Array;
}

/**
 * An exit without data: `hlt` (KVM_EXIT_HLT), `shutdown` (KVM_EXIT_SHUTDOWN,
 * a triple fault), or `intr`: KVM_RUN was interrupted (EINTR) by a signal or
 * a kick before or while the guest ran; clear immediate_exit before the next run.
 */
export interface PlainExit {
  /** What happened. */
  readonly kind: 'hlt' | 'shutdown' | 'intr';
}

/** KVM_EXIT_FAIL_ENTRY: the hardware could not enter the guest. */
export interface FailEntryExit {
  /** What happened. */
  readonly kind: 'failEntry';
  /** The hardware's reason (for VMX, the VM-entry failure's exit reason). */
  readonly reason: bigint;
}

/** KVM_EXIT_INTERNAL_ERROR: KVM could not go on with this guest (e.g. it cannot emulate an instruction). */
export interface InternalErrorExit {
  /** What happened. */
  readonly kind: 'internalError';
  /** KVM_INTERNAL_ERROR_* */
  readonly suberror: number;
}

/** Any other exit reason, which the KVM layer does not decode. */
export interface OtherExit {
  /** What happened. */
  readonly kind: 'other';
  /** kvm_run.exit_reason: a KVM_EXIT_* value. */
  readonly reason: number;
}

/** Why KVM_RUN returned: switch on `kind`. */
export type VcpuExit = IoExit | MmioExit | PlainExit | FailEntryExit | InternalErrorExit | OtherExit;

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

const HLT: PlainExit = Object.freeze({ kind: 'hlt' });
const SHUTDOWN: PlainExit = Object.freeze({ kind: 'shutdown' });
/** The exit of a KVM_RUN that failed with EINTR. */
export const INTERRUPTED: PlainExit = Object.freeze({ kind: 'intr' });

/** The widest MMIO access kvm_run has room for. */
const MMIO_DATA_MAX = 8;

/** Decodes the exit in one kvm_run mapping into objects it reuses. */
export class ExitDecoder {
  private readonly io: Mutable<IoExit>;
  private readonly mmio: Mutable<MmioExit>;
  /** mmio.data for each access width, 0 to 8 bytes. */
  private readonly mmioData: Uint8Array[] = [];
  private readonly failEntry: Mutable<FailEntryExit> = { kind: 'failEntry', reason: 0n };
  private readonly internalError: Mutable<InternalErrorExit> = { kind: 'internalError', suberror: 0 };
  private readonly other: Mutable<OtherExit> = { kind: 'other', reason: 0 };

  /** `run` and `bytes` view the whole mapping, kvm_run first. */
  constructor(
    private readonly run: DataView,
    private readonly bytes: Uint8Array,
  ) {
    for (let len = 0; len <= MMIO_DATA_MAX; len++)
      this.mmioData.push(bytes.subarray(C.KVM_RUN_MMIO_DATA, C.KVM_RUN_MMIO_DATA + len));
    this.io = { kind: 'io', direction: 'out', port: 0, size: 0, count: 0, data: bytes.subarray(0, 0) };
    this.mmio = { kind: 'mmio', address: 0n, isWrite: false, data: this.mmioData[0] };
  }

  /** The exit that kvm_run holds now (after a KVM_RUN that succeeded). */
  decode(): VcpuExit {
    const run = this.run;
    const reason = run.getUint32(C.KVM_RUN_EXIT_REASON, true);
    switch (reason) {
      case C.KVM_EXIT_IO:
        return this.decodeIo();
      case C.KVM_EXIT_MMIO: {
        const mmio = this.mmio;
        mmio.address = run.getBigUint64(C.KVM_RUN_MMIO_PHYS_ADDR, true);
        mmio.isWrite = run.getUint8(C.KVM_RUN_MMIO_IS_WRITE) !== 0;
        mmio.data = this.mmioData[Math.min(run.getUint32(C.KVM_RUN_MMIO_LEN, true), MMIO_DATA_MAX)]!;
        return mmio;
      }
      case C.KVM_EXIT_HLT:
        return HLT;
      case C.KVM_EXIT_SHUTDOWN:
        return SHUTDOWN;
      case C.KVM_EXIT_INTR:
        return INTERRUPTED;
      case C.KVM_EXIT_FAIL_ENTRY:
        this.failEntry.reason = run.getBigUint64(C.KVM_RUN_FAIL_ENTRY_REASON, true);
        return this.failEntry;
      case C.KVM_EXIT_INTERNAL_ERROR:
        this.internalError.suberror = run.getUint32(C.KVM_RUN_INTERNAL_SUBERROR, true);
        return this.internalError;
      default:
        this.other.reason = reason;
        return this.other;
    }
  }

  private decodeIo(): IoExit {
    const run = this.run;
    const io = this.io;
    io.direction = run.getUint8(C.KVM_RUN_IO_DIRECTION) === C.KVM_EXIT_IO_OUT ? 'out' : 'in';
    io.size = run.getUint8(C.KVM_RUN_IO_SIZE);
    io.port = run.getUint16(C.KVM_RUN_IO_PORT, true);
    io.count = run.getUint32(C.KVM_RUN_IO_COUNT, true);
    // data_offset is a u64 offset into the mapping; the kernel keeps it on the page after kvm_run.
    const offset = run.getUint32(C.KVM_RUN_IO_DATA_OFFSET, true) + run.getUint32(C.KVM_RUN_IO_DATA_OFFSET + 4, true) * 2 ** 32;
    const length = io.size * io.count;
    if (io.data.byteOffset !== offset || io.data.length !== length) io.data = this.bytes.subarray(offset, offset + length);
    return io;
  }
}
