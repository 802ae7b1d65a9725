/**
 * Internal helpers shared by Kvm, VmFd and VcpuFd: ioctl calls whose errors name
 * the ioctl, the get/set methods of fixed-size state structs, and growing
 * CPUID buffers.
 * Not part of the public API (src/kvm/index.ts does not re-export it).
 */
import { errno, isErrnoError } from '../errno.js';
import { C, native, type ConstantName } from '../native/index.js';
import { allocBytes, decodeCpuid2, encodeCpuid2, expectSize, MSR_LIST, viewOf, type CpuidEntry2 } from './structs.js';

/** Makes sure an ErrnoError's message names the ioctl (the addon usually does), and rethrows it. */
export function rethrowWithContext(e: unknown, name: string): never {
  if (isErrnoError(e) && !e.message.includes(name)) {
    e.message = `${name}: ${e.message}`;
  }
  throw e;
}

/** ioctl with an integer argument; returns the ioctl's result. */
export function ioctlValue(fd: number, request: number, name: string, arg: number | bigint = 0): number {
  try {
    return native.ioctl(fd, request, arg);
  } catch (e) {
    rethrowWithContext(e, name);
  }
}

/** ioctl with a pointer to `buf`; returns the ioctl's result. */
export function ioctlBytes(fd: number, request: number, name: string, buf: Uint8Array): number {
  try {
    return native.ioctlBuffer(fd, request, buf);
  } catch (e) {
    rethrowWithContext(e, name);
  }
}

/** For each constant KVM_GET_X with a KVM_SET_X beside it: X. */
type GetSetSuffix<N> = N extends `KVM_GET_${infer X}` ? (`KVM_SET_${X}` extends ConstantName ? X : never) : never;
/** For each constant SIZEOF_X: x. */
type SizeofName<N> = N extends `SIZEOF_${infer S}` ? Lowercase<S> : never;
/** The X of a KVM_GET_X / KVM_SET_X pair of ioctls that the addon knows. */
type StateIoctl = GetSetSuffix<ConstantName>;
/** A struct whose size the addon knows (SIZEOF_KVM_REGS: kvm_regs). */
type SizedStruct = SizeofName<ConstantName>;

/** A kernel struct read whole by KVM_GET_`ioctl` and written whole by KVM_SET_`ioctl`. */
export interface StateStruct {
  /** REGS for KVM_GET_REGS and KVM_SET_REGS. */
  readonly ioctl: StateIoctl;
  /** Its name in <linux/kvm.h>: kvm_regs. */
  readonly struct: SizedStruct;
}

/** The methods {@link defineStateMethods} makes: `getRegs()` and `setRegs(bytes)` for a table key `Regs`. */
export type StateMethods<T> = { [K in keyof T & string as `get${K}`]: () => Uint8Array<ArrayBuffer> } & {
  [K in keyof T & string as `set${K}`]: (bytes: Uint8Array) => void;
};

/**
 * Gives `holder`'s instances, for each `Name` of `table`, a `getName()` that
 * returns a fresh struct read by KVM_GET_*, and a `setName(bytes)` that
 * writes exactly one struct with KVM_SET_* (EINVAL-like error for any other
 * length) on their `fd`. One table instead of a hand-written pair per
 * struct; the class declares the methods' types and docs in an interface.
 */
export function defineStateMethods<const T extends Readonly<Record<string, StateStruct>>>(
  holder: new (...args: never[]) => StateMethods<NoInfer<T>> & { readonly fd: number },
  table: T,
): void {
  for (const [name, { ioctl, struct }] of Object.entries(table)) {
    const get = `KVM_GET_${ioctl}` as const;
    const set = `KVM_SET_${ioctl}` as const;
    const size = C[`SIZEOF_${struct.toUpperCase()}` as ConstantName];
    const methods = {
      [`get${name}`](this: { readonly fd: number }): Uint8Array<ArrayBuffer> {
        const buf = allocBytes(size);
        ioctlBytes(this.fd, C[get], get, buf);
        return buf;
      },
      [`set${name}`](this: { readonly fd: number }, bytes: Uint8Array): void {
        expectSize(bytes, size, struct, set);
        ioctlBytes(this.fd, C[set], set, bytes);
      },
    };
    for (const [method, value] of Object.entries(methods)) {
      Object.defineProperty(holder.prototype, method, { value, writable: true, configurable: true });
    }
  }
}

/** Give up growing CPUID / MSR-list buffers past this many entries. */
const QUERY_MAX = 1 << 16;

/**
 * Runs a struct kvm_cpuid2 query (KVM_GET_SUPPORTED_CPUID,
 * KVM_GET_EMULATED_CPUID, KVM_GET_SUPPORTED_HV_CPUID), doubling the buffer
 * (from `startCapacity` entries) while the kernel answers E2BIG.
 */
export function queryCpuid2(fd: number, request: number, name: string, startCapacity = 64): CpuidEntry2[] {
  for (let capacity = Math.max(1, startCapacity); ; capacity *= 2) {
    const buf = encodeCpuid2([], capacity);
    try {
      native.ioctlBuffer(fd, request, buf);
      return decodeCpuid2(buf);
    } catch (e) {
      if (isErrnoError(e) && e.errno === errno.E2BIG && capacity < QUERY_MAX) continue;
      rethrowWithContext(e, name);
    }
  }
}

/**
 * KVM_GET_MSR_INDEX_LIST (struct kvm_msr_list) on /dev/kvm, growing the
 * buffer (from `startCapacity` indices) while the kernel answers E2BIG.
 */
export function queryMsrIndexList(fd: number, request: number, name: string, startCapacity = 256): number[] {
  let capacity = Math.max(1, startCapacity);
  for (;;) {
    const buf = allocBytes(MSR_LIST.size + capacity * 4);
    const dv = viewOf(buf);
    dv.setUint32(MSR_LIST.nmsrs, capacity, true);
    try {
      native.ioctlBuffer(fd, request, buf);
    } catch (e) {
      if (isErrnoError(e) && e.errno === errno.E2BIG && capacity < QUERY_MAX) {
        // The kernel stores the count it needs in nmsrs before failing.
        capacity = Math.max(capacity * 2, dv.getUint32(MSR_LIST.nmsrs, true));
        continue;
      }
      rethrowWithContext(e, name);
    }
    const n = dv.getUint32(MSR_LIST.nmsrs, true);
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++) out[i] = dv.getUint32(MSR_LIST.indices + i * 4, true);
    return out;
  }
}
