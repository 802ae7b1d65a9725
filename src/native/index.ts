/**
 * The typed face of the native addon (native/): system calls, and the native
 * VCPU threads ({@link Native.createVcpuSet}); no policy.
 *
 * Every call that fails throws an {@link ErrnoError} (src/errno.ts: the addon
 * makes them with the class this module hands it) carrying the errno, except
 * where a doc comment below says it returns -1 for EAGAIN (non-blocking use).
 * Numbers that come from kernel headers (ioctl numbers, struct sizes and field
 * offsets) are exported by the addon itself as `constants` and `layouts`,
 * computed by the C compiler from <linux/kvm.h>, so TypeScript never
 * hard-codes them.
 */
import { createRequire } from 'node:module';
import { ErrnoError } from '../errno.js';
import { addonPath, NATIVE_FIX, NativePartsError } from './locate.js';
import type { Layouts } from './layouts.js';

export { ErrnoError, isErrnoError } from '../errno.js';
export { LAYOUT_FIELDS, type Layout, type LayoutName, type Layouts } from './layouts.js';

/** Names of every constant the addon computes from kernel and libc headers. */
export const CONSTANT_NAMES = [
  // libc / kernel flags
  'O_RDWR', 'O_RDONLY', 'O_CLOEXEC', 'O_NONBLOCK',
  'EFD_CLOEXEC', 'EFD_NONBLOCK',
  'MFD_CLOEXEC', 'MFD_ALLOW_SEALING',
  'F_GETFD', 'F_SETFD', 'FD_CLOEXEC', 'F_GETFL', 'F_SETFL',
  'F_ADD_SEALS', 'F_GET_SEALS', 'F_SEAL_SEAL', 'F_SEAL_SHRINK', 'F_SEAL_GROW', 'F_SEAL_WRITE',
  'F_SETPIPE_SZ', 'F_GETPIPE_SZ',
  'PROT_READ', 'PROT_WRITE', 'MAP_SHARED', 'MAP_PRIVATE', 'MAP_ANONYMOUS', 'MAP_NORESERVE',
  'POLLIN', 'POLLOUT', 'POLLERR', 'POLLHUP', 'POLLNVAL',
  'SIGRTMIN', 'PAGE_SIZE',
  // /dev/kvm ioctls
  'KVM_GET_API_VERSION', 'KVM_CREATE_VM', 'KVM_CHECK_EXTENSION', 'KVM_GET_VCPU_MMAP_SIZE',
  'KVM_GET_SUPPORTED_CPUID', 'KVM_GET_EMULATED_CPUID', 'KVM_GET_MSR_INDEX_LIST',
  // VM ioctls
  'KVM_CREATE_VCPU', 'KVM_CREATE_IRQCHIP', 'KVM_CREATE_PIT2', 'KVM_SET_USER_MEMORY_REGION',
  'KVM_IOEVENTFD', 'KVM_IRQFD', 'KVM_IRQ_LINE', 'KVM_SET_GSI_ROUTING',
  'KVM_GET_IRQCHIP', 'KVM_SET_IRQCHIP', 'KVM_GET_PIT2', 'KVM_SET_PIT2',
  'KVM_GET_CLOCK', 'KVM_SET_CLOCK', 'KVM_SET_IDENTITY_MAP_ADDR', 'KVM_SET_TSS_ADDR',
  'KVM_GET_DIRTY_LOG', 'KVM_ENABLE_CAP',
  // VCPU ioctls
  'KVM_RUN', 'KVM_GET_REGS', 'KVM_SET_REGS', 'KVM_GET_SREGS', 'KVM_SET_SREGS',
  'KVM_GET_FPU', 'KVM_SET_FPU', 'KVM_GET_DEBUGREGS', 'KVM_SET_DEBUGREGS',
  'KVM_GET_LAPIC', 'KVM_SET_LAPIC', 'KVM_GET_MP_STATE', 'KVM_SET_MP_STATE',
  'KVM_GET_XCRS', 'KVM_SET_XCRS', 'KVM_GET_VCPU_EVENTS', 'KVM_SET_VCPU_EVENTS',
  'KVM_GET_MSRS', 'KVM_SET_MSRS', 'KVM_SET_CPUID2', 'KVM_GET_SUPPORTED_HV_CPUID',
  // capabilities
  'KVM_CAP_IRQCHIP', 'KVM_CAP_USER_MEMORY', 'KVM_CAP_IOEVENTFD', 'KVM_CAP_IRQFD',
  'KVM_CAP_IRQFD_RESAMPLE', 'KVM_CAP_PIT2', 'KVM_CAP_IMMEDIATE_EXIT', 'KVM_CAP_READONLY_MEM',
  'KVM_CAP_HYPERV_SYNIC', 'KVM_CAP_HYPERV_SYNIC2', 'KVM_CAP_HYPERV_CPUID', 'KVM_CAP_EXT_EMUL_CPUID',
  'KVM_CAP_XCRS', 'KVM_CAP_DEBUGREGS', 'KVM_CAP_VCPU_EVENTS', 'KVM_CAP_SET_IDENTITY_MAP_ADDR',
  'KVM_CAP_NR_VCPUS', 'KVM_CAP_MAX_VCPUS', 'KVM_CAP_NR_MEMSLOTS',
  // flags and enumerations
  'KVM_MEM_LOG_DIRTY_PAGES', 'KVM_MEM_READONLY',
  'KVM_IOEVENTFD_FLAG_DATAMATCH', 'KVM_IOEVENTFD_FLAG_PIO', 'KVM_IOEVENTFD_FLAG_DEASSIGN',
  'KVM_IRQFD_FLAG_DEASSIGN', 'KVM_IRQFD_FLAG_RESAMPLE',
  'KVM_IRQ_ROUTING_IRQCHIP', 'KVM_IRQ_ROUTING_MSI',
  'KVM_IRQCHIP_PIC_MASTER', 'KVM_IRQCHIP_PIC_SLAVE', 'KVM_IRQCHIP_IOAPIC',
  'KVM_CPUID_FLAG_SIGNIFCANT_INDEX',
  'KVM_EXIT_UNKNOWN', 'KVM_EXIT_EXCEPTION', 'KVM_EXIT_IO', 'KVM_EXIT_HYPERCALL', 'KVM_EXIT_DEBUG',
  'KVM_EXIT_HLT', 'KVM_EXIT_MMIO', 'KVM_EXIT_IRQ_WINDOW_OPEN', 'KVM_EXIT_SHUTDOWN',
  'KVM_EXIT_FAIL_ENTRY', 'KVM_EXIT_INTR', 'KVM_EXIT_INTERNAL_ERROR', 'KVM_EXIT_SYSTEM_EVENT',
  'KVM_EXIT_HYPERV', 'KVM_EXIT_HYPERV_SYNIC', 'KVM_EXIT_HYPERV_HCALL',
  'KVM_EXIT_IO_IN', 'KVM_EXIT_IO_OUT',
  'KVM_MP_STATE_RUNNABLE', 'KVM_MP_STATE_HALTED',
  // struct sizes
  'SIZEOF_KVM_RUN', 'SIZEOF_KVM_REGS', 'SIZEOF_KVM_SREGS', 'SIZEOF_KVM_FPU', 'SIZEOF_KVM_DEBUGREGS',
  'SIZEOF_KVM_LAPIC_STATE', 'SIZEOF_KVM_MP_STATE', 'SIZEOF_KVM_XCRS', 'SIZEOF_KVM_VCPU_EVENTS',
  'SIZEOF_KVM_PIC_STATE', 'SIZEOF_KVM_IOAPIC_STATE', 'SIZEOF_KVM_PIT_STATE2', 'SIZEOF_KVM_CLOCK_DATA',
  'SIZEOF_KVM_IRQCHIP', 'SIZEOF_KVM_PIT_CONFIG', 'SIZEOF_KVM_USERSPACE_MEMORY_REGION',
  'SIZEOF_KVM_IOEVENTFD', 'SIZEOF_KVM_IRQFD', 'SIZEOF_KVM_IRQ_LEVEL', 'SIZEOF_KVM_IRQ_ROUTING',
  'SIZEOF_KVM_IRQ_ROUTING_ENTRY', 'SIZEOF_KVM_CPUID2', 'SIZEOF_KVM_CPUID_ENTRY2', 'SIZEOF_KVM_MSRS',
  'SIZEOF_KVM_MSR_ENTRY', 'SIZEOF_KVM_MSR_LIST', 'SIZEOF_KVM_DIRTY_LOG', 'SIZEOF_KVM_ENABLE_CAP',
  'SIZEOF_KVM_SEGMENT',
  // struct kvm_run field offsets
  'KVM_RUN_REQUEST_INTERRUPT_WINDOW', 'KVM_RUN_IMMEDIATE_EXIT', 'KVM_RUN_EXIT_REASON',
  'KVM_RUN_IO_DIRECTION', 'KVM_RUN_IO_SIZE', 'KVM_RUN_IO_PORT', 'KVM_RUN_IO_COUNT', 'KVM_RUN_IO_DATA_OFFSET',
  'KVM_RUN_MMIO_PHYS_ADDR', 'KVM_RUN_MMIO_DATA', 'KVM_RUN_MMIO_LEN', 'KVM_RUN_MMIO_IS_WRITE',
  'KVM_RUN_HYPERV_TYPE', 'KVM_RUN_HYPERV_SYNIC_MSR', 'KVM_RUN_HYPERV_SYNIC_CONTROL',
  'KVM_RUN_HYPERV_SYNIC_EVT_PAGE', 'KVM_RUN_HYPERV_SYNIC_MSG_PAGE',
  'KVM_RUN_HYPERV_HCALL_INPUT', 'KVM_RUN_HYPERV_HCALL_RESULT', 'KVM_RUN_HYPERV_HCALL_PARAMS',
  'KVM_RUN_INTERNAL_SUBERROR', 'KVM_RUN_FAIL_ENTRY_REASON',
  // struct kvm_regs / kvm_sregs / kvm_segment / kvm_debugregs field offsets
  'KVM_REGS_RAX', 'KVM_REGS_RBX', 'KVM_REGS_RCX', 'KVM_REGS_RDX', 'KVM_REGS_RSI', 'KVM_REGS_RDI',
  'KVM_REGS_RSP', 'KVM_REGS_RBP', 'KVM_REGS_RIP', 'KVM_REGS_RFLAGS',
  'KVM_SREGS_CS', 'KVM_SREGS_DS', 'KVM_SREGS_ES', 'KVM_SREGS_SS', 'KVM_SREGS_CR0', 'KVM_SREGS_CR4', 'KVM_SREGS_EFER',
  'KVM_SEGMENT_BASE', 'KVM_SEGMENT_LIMIT', 'KVM_SEGMENT_SELECTOR',
  'KVM_DEBUGREGS_DB', 'KVM_DEBUGREGS_DR6', 'KVM_DEBUGREGS_DR7',
  // tap devices (<linux/if_tun.h>) and network interfaces (<net/if.h>, <linux/sockios.h>)
  'EBADFD', 'F_DUPFD_CLOEXEC', 'AF_INET', 'SOCK_DGRAM', 'SOCK_CLOEXEC', 'ARPHRD_ETHER', 'IFNAMSIZ',
  'IFF_TAP', 'IFF_NO_PI', 'IFF_PERSIST', 'IFF_UP',
  'TUNSETIFF', 'TUNGETIFF', 'TUNGETFEATURES',
  'SIOCGIFFLAGS', 'SIOCSIFFLAGS', 'SIOCGIFADDR', 'SIOCSIFADDR',
  'SIOCGIFNETMASK', 'SIOCSIFNETMASK', 'SIOCGIFHWADDR', 'SIOCSIFHWADDR', 'SIOCGIFINDEX',
  // struct ifreq's ifr_ifru union (offsets inside it), struct sockaddr and sockaddr_in
  'SIZEOF_IFREQ_IFRU', 'IFREQ_FLAGS', 'IFREQ_ADDR', 'IFREQ_NETMASK', 'IFREQ_HWADDR',
  'SOCKADDR_FAMILY', 'SOCKADDR_DATA', 'SOCKADDR_IN_ADDR',
] as const;

export type ConstantName = (typeof CONSTANT_NAMES)[number];
export type Constants = Readonly<Record<ConstantName, number>>;

/** Result of {@link Native.recvmsg}. */
export interface ReceivedMessage {
  /** Bytes of the message copied into the buffer; 0 means the peer hung up. */
  bytes: number;
  /** Descriptors that arrived as SCM_RIGHTS (already close-on-exec). */
  fds: number[];
  /** True when the message or its descriptors did not fit (MSG_TRUNC / MSG_CTRUNC). */
  truncated: boolean;
}

/** Watches one fd for readiness on the calling thread's libuv loop (uv_poll). */
export interface FdWatcher {
  /** Starts (or changes) watching; `callback` gets the ready POLL* bits. */
  start(events: number): void;
  stop(): void;
  /** Stops and frees the handle; the fd itself is not closed. */
  close(): void;
}

/** What a VCPU thread tells the host: a log line, or that it ended (`failed`: as an error). */
export type VcpuEventKind = 'info' | 'warn' | 'error' | 'ended' | 'failed';

/**
 * The native VCPU threads of one VM (native/vcpu/): one thread per VCPU runs
 * KVM_RUN, dispatches each exit through the published configuration and
 * holds the VCPU's side of the plugin protocol on its pipe pair. Events come
 * to the creating thread's event loop as `onEvent(index, kind, message)`.
 */
export interface VcpuSet {
  /**
   * Creates a thread per VCPU on these KVM VCPU fds (one per VCPU, in order),
   * which the set owns from now on, even when this throws (then no thread runs).
   */
  start(vcpuFds: readonly number[], mmapSize: number): void;
  /** Publishes a new dispatch configuration image (layout: native/vcpu/config.h); seen at each VCPU's next exit. */
  publishConfig(image: BigUint64Array): void;
  /** Records a pause of VCPU `index` with this user value and kicks it. */
  pause(index: number, user: bigint): void;
  /** Ends every VCPU: wakes threads waiting on the plugin, kicks threads out of KVM_RUN. Returns at once. */
  shutdown(): void;
  /** Kicks every running VCPU thread again. */
  kickAll(): void;
  /** Joins the threads that have ended, without blocking; returns how many still run. */
  reap(): number;
  /** Lets go of the set (threads still running are detached); no event is delivered afterwards. Idempotent. */
  close(): void;
}

export interface Native {
  readonly constants: Constants;
  /** Makes the calls of this thread throw instances of `errorClass` (done once, when the addon is loaded). */
  setErrnoErrorClass(errorClass: typeof ErrnoError): void;
  /** The KVM structs that TypeScript builds or reads field by field: sizes and field offsets. */
  readonly layouts: Layouts;

  open(path: string, flags: number): number;
  close(fd: number): void;
  /** ioctl with an integer argument (or none: pass 0); returns the ioctl's result. */
  ioctl(fd: number, request: number, arg: number | bigint): number;
  /** ioctl whose argument is a pointer to `buf`'s bytes (read and/or written by the kernel). */
  ioctlBuffer(fd: number, request: number, buf: Uint8Array): number;

  /** mmap; returns the mapping's address. */
  mmap(length: number, prot: number, flags: number, fd: number, offset: number): bigint;
  munmap(address: bigint, length: number): void;
  /**
   * An ArrayBuffer over `length` bytes at `address` (no copy, no finalizer):
   * it must not be touched after the mapping is unmapped.
   */
  arrayBufferAt(address: bigint, length: number): ArrayBuffer;
  /** The address of `buf`'s first byte. */
  addressOf(buf: Uint8Array): bigint;

  eventfd(initval: number, flags: number): number;
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, length: number): void;
  /** st_size from fstat. */
  fstatSize(fd: number): number;
  fcntl(fd: number, cmd: number, arg: number): number;
  /** [read end, write end] */
  pipe2(flags: number): [number, number];
  /** An AF_UNIX SOCK_SEQPACKET pair; `flags` may add SOCK_CLOEXEC via O_CLOEXEC. */
  seqpacketPair(cloexec: boolean): [number, number];

  /**
   * read(2) into buf[offset, offset + length). Returns the byte count, or -1
   * when the fd is non-blocking and has nothing (EAGAIN). EINTR is retried.
   */
  read(fd: number, buf: Uint8Array, offset: number, length: number): number;
  /** write(2) of buf[offset, offset + length); -1 on EAGAIN; EINTR retried. */
  write(fd: number, buf: Uint8Array, offset: number, length: number): number;
  /** Reads an 8-byte eventfd counter; -1 on EAGAIN. */
  eventfdRead(fd: number): number | bigint;
  eventfdWrite(fd: number, value: number): void;

  /** sendmsg of `length` bytes of buf with `fds` as SCM_RIGHTS (MSG_NOSIGNAL). */
  sendmsg(fd: number, buf: Uint8Array, length: number, fds: readonly number[]): number;
  /** recvmsg into buf, accepting up to `maxFds` descriptors; null on EAGAIN. */
  recvmsg(fd: number, buf: Uint8Array, maxFds: number): ReceivedMessage | null;

  /** poll(2) on one fd; returns revents (0 on timeout). EINTR is retried. */
  poll(fd: number, events: number, timeoutMs: number): number;
  createFdWatcher(fd: number, callback: (revents: number) => void): FdWatcher;

  /**
   * Installs (once per process) the handler of the VCPU kick signal
   * (SIGRTMIN + 0, SA_RESTART): it sets `immediate_exit` in the kvm_run that
   * the receiving thread registered with {@link setKickTarget}.
   */
  installKickHandler(): void;
  /** Registers (or with 0n clears) the calling thread's kvm_run mapping. */
  setKickTarget(kvmRunAddress: bigint): void;
  /** The calling thread's kernel thread id. */
  gettid(): number;
  /** Sends the kick signal to thread `tid` of this process (tgkill). */
  kick(tid: number): void;

  /** socket(2), e.g. (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0) for interface ioctls. */
  socket(domain: number, type: number, protocol: number): number;
  /**
   * An ioctl on a struct ifreq (TUNSETIFF, TUNGETIFF, SIOCGIFADDR, ...):
   * ifr_name is `name` (shorter than IFNAMSIZ), the ifr_ifru union starts as
   * `data` (at most SIZEOF_IFREQ_IFRU bytes, the rest zero) and is copied back
   * into it. Returns ifr_name as the kernel left it (the device's name).
   */
  ifreqIoctl(fd: number, request: number, name: string, data: Uint8Array): string;

  /**
   * A set of native VCPU threads over the host's ends of each VCPU's pipes
   * (plugin->host read end, host->plugin write end; duplicated, so the caller
   * keeps and closes its own). `spinUs` bounds how long a thread polls the
   * plugin's pipe before it sleeps (0: blocking reads).
   */
  createVcpuSet(
    requestFds: readonly number[],
    responseFds: readonly number[],
    spinUs: number,
    onEvent: (index: number, kind: VcpuEventKind, message: string) => void,
  ): VcpuSet;
}

function loadAddon(): Native {
  const file = addonPath();
  let addon: Native;
  try {
    addon = createRequire(import.meta.url)(file) as Native;
  } catch (e) {
    // dlopen's reason (a wrong ELF class, an undefined symbol, a missing
    // library) is the first line of the message.
    const reason = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    throw new NativePartsError(`plugvisor's native addon ${file} cannot be loaded (${reason}): ${NATIVE_FIX}`);
  }
  addon.setErrnoErrorClass(ErrnoError);
  return addon;
}

/** The loaded addon. Loading it is cheap and happens once per thread. */
export const native: Native = loadAddon();
export const C: Constants = native.constants;
