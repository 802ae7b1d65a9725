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
import { ErrnoError } from '../errno.js';
import { addonPath, NATIVE_FIX, NativePartsError } from './locate.js';
import type { Layouts } from './layouts.js';
import type { Constants } from './constants.js';

export { ErrnoError, isErrnoError } from '../errno.js';
export { LAYOUT_FIELDS, type Layout, type LayoutName, type Layouts } from './layouts.js';
export { CONSTANT_NAMES, type ConstantName, type Constants } from './constants.js';

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
   * posix_spawnp(3): starts `file` (looked up in this process's PATH when
   * it has no slash) with `argv` and `envp` ("NAME=value" strings). fd i of
   * the child is `fds[i]` of this process (`i` itself passes this process's
   * own fd i on, close-on-exec or not); every other descriptor must be
   * close-on-exec. The child starts with every signal at its default action
   * and none blocked, in a new session when `newSession`. A failed exec
   * (ENOENT, EACCES, ENOEXEC) throws here. Returns the pid and a pidfd
   * (pidfd_open(2), close-on-exec) that polls readable once the child has
   * ended; the caller closes it.
   */
  spawn(
    file: string,
    argv: readonly string[],
    envp: readonly string[],
    fds: readonly number[],
    newSession: boolean,
  ): { pid: number; pidfd: number };
  /** waitpid(pid, WNOHANG): null while the child runs, else its exit code or the number of the signal that killed it. */
  waitpid(pid: number): { code: number } | { signal: number } | null;

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
  // process.dlopen is what require() does for a .node file, without
  // resolving the path again and looking for its package.json: ~1.5 ms of
  // the CLI's start-up (bench/README.md, "Profile: where start-up goes").
  const module = { exports: {} as Native };
  try {
    process.dlopen(module, file);
  } catch (e) {
    // dlopen's reason (a wrong ELF class, an undefined symbol, a missing
    // library) is the first line of the message.
    const reason = (e instanceof Error ? e.message : String(e)).split('\n')[0];
    throw new NativePartsError(`plugvisor's native addon ${file} cannot be loaded (${reason}): ${NATIVE_FIX}`);
  }
  const addon = module.exports;
  addon.setErrnoErrorClass(ErrnoError);
  return addon;
}

/** The loaded addon. Loading it is cheap and happens once per thread. */
export const native: Native = loadAddon();
export const C: Constants = native.constants;
