/**
 * The KVM system handle (/dev/kvm): one method per system ioctl.
 */
import { C, native } from '../native/index.js';
import { ioctlValue, queryCpuid2, queryMsrIndexList } from './ioctl.js';
import type { CpuidEntry2 } from './structs.js';
import { VmFd } from './vm.js';
import { errno, ErrnoError, isErrnoError } from '../errno.js';

export type { CpuidEntry2 } from './structs.js';

/** What to tell the user when /dev/kvm cannot be opened, by errno code. */
function openAdvice(code: string): string {
  switch (code) {
    case 'ENOENT':
    case 'ENODEV':
    case 'ENXIO':
      return (
        'KVM is not available: load the kvm_intel or kvm_amd module (modprobe kvm_intel / kvm_amd), ' +
        'enable virtualization (VT-x / AMD-V) in the firmware, or, inside a VM, enable nested virtualization on its host'
      );
    case 'EACCES':
    case 'EPERM':
      return (
        'permission denied: add your user to the kvm group (sudo usermod -aG kvm $USER, then log in again) ' +
        'or give it read-write access to the device'
      );
    case 'EBUSY':
      return 'the device is busy (another hypervisor may hold the virtualization extensions)';
    default:
      return 'KVM cannot be used on this machine';
  }
}

/** The /dev/kvm handle. */
export class Kvm {
  /** The /dev/kvm file descriptor. */
  readonly fd: number;
  private closed = false;

  /** Wraps an already open /dev/kvm descriptor (owned from now on). */
  constructor(fd: number) {
    this.fd = fd;
  }

  /**
   * Opens `path` (close-on-exec, read-write). Failure throws an ErrnoError
   * (errno, code and syscall kept) whose message says what is missing and
   * how to fix it.
   */
  static open(path = '/dev/kvm'): Kvm {
    try {
      return new Kvm(native.open(path, C.O_RDWR | C.O_CLOEXEC));
    } catch (e) {
      if (!isErrnoError(e)) throw e;
      throw new ErrnoError(e.errno, `cannot open ${path}: ${e.code} — ${openAdvice(e.code)}`, { syscall: e.syscall, cause: e });
    }
  }

  /** KVM_GET_API_VERSION: always 12 on any kernel plugvisor can use. */
  apiVersion(): number {
    return ioctlValue(this.fd, C.KVM_GET_API_VERSION, 'KVM_GET_API_VERSION');
  }

  /** KVM_CHECK_EXTENSION on /dev/kvm: 0 when unsupported, else 1 or a cap-specific value. */
  checkExtension(cap: number): number {
    return ioctlValue(this.fd, C.KVM_CHECK_EXTENSION, 'KVM_CHECK_EXTENSION', cap);
  }

  /** KVM_GET_VCPU_MMAP_SIZE: bytes to mmap from a VCPU fd (kvm_run and what follows it). */
  vcpuMmapSize(): number {
    return ioctlValue(this.fd, C.KVM_GET_VCPU_MMAP_SIZE, 'KVM_GET_VCPU_MMAP_SIZE');
  }

  /** KVM_GET_SUPPORTED_CPUID: the CPUID leaves KVM can give a guest. */
  supportedCpuid(): CpuidEntry2[] {
    return queryCpuid2(this.fd, C.KVM_GET_SUPPORTED_CPUID, 'KVM_GET_SUPPORTED_CPUID');
  }

  /** KVM_GET_EMULATED_CPUID: CPUID features KVM emulates in software (needs KVM_CAP_EXT_EMUL_CPUID). */
  emulatedCpuid(): CpuidEntry2[] {
    return queryCpuid2(this.fd, C.KVM_GET_EMULATED_CPUID, 'KVM_GET_EMULATED_CPUID');
  }

  /** KVM_GET_MSR_INDEX_LIST: the MSRs KVM supports for guests. */
  msrIndexList(): number[] {
    return queryMsrIndexList(this.fd, C.KVM_GET_MSR_INDEX_LIST, 'KVM_GET_MSR_INDEX_LIST');
  }

  /**
   * KVM_CREATE_VM (default machine type), retried while it fails with EINTR.
   *
   * Why the retry: creating a VM registers an MMU notifier on the caller's
   * address space, which takes the locks of every mapping and gives up with
   * EINTR when any signal is pending (not documented in api.rst; seen here
   * with V8's profiler signal and a VCPU kick, test "KVM_CREATE_VM is retried
   * when a signal interrupts it"). A node process has hundreds of mappings,
   * so the window is wide. Nothing was created, so trying again is safe.
   */
  createVm(): VmFd {
    for (;;) {
      try {
        return new VmFd(ioctlValue(this.fd, C.KVM_CREATE_VM, 'KVM_CREATE_VM', 0));
      } catch (e) {
        if (!isErrnoError(e) || e.errno !== errno.EINTR) throw e;
      }
    }
  }

  /** Closes /dev/kvm (VMs created from it stay valid). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    native.close(this.fd);
  }
}
