/**
 * Internal helpers shared by Kvm, VmFd and VcpuFd: ioctl calls whose errors name
 * the ioctl, fixed-size state structs in and out, and growing CPUID buffers.
 * Not part of the public API (src/kvm/index.ts does not re-export it).
 */
import { errno, isErrnoError } from '../errno.js';
import { native } from '../native/index.js';
import {
  allocBytes,
  decodeCpuid2,
  encodeCpuid2,
  expectSize,
  MSR_LIST,
  viewOf,
  type CpuidEntry2,
} from './structs.js';

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

/** Reads a fixed-size struct (KVM_GET_*): a fresh buffer of exactly `size` bytes. */
export function getStruct(fd: number, request: number, name: string, size: number): Uint8Array<ArrayBuffer> {
  const buf = allocBytes(size);
  ioctlBytes(fd, request, name, buf);
  return buf;
}

/** Writes a fixed-size struct (KVM_SET_*); EINVAL-like error if `bytes` is not exactly `size` long. */
export function setStruct(
  fd: number,
  request: number,
  name: string,
  struct: string,
  size: number,
  bytes: Uint8Array,
): void {
  expectSize(bytes, size, struct, name);
  ioctlBytes(fd, request, name, bytes);
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
