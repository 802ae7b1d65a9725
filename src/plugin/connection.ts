/**
 * A plugin's connection to the host: global VM control over an AF_UNIX
 * SOCK_SEQPACKET socket (one MainRequest per message, one MainResponse back,
 * descriptors as SCM_RIGHTS). Synchronous: every call blocks until the host
 * answers. A Connection is not meant to be shared between threads; a worker
 * thread gets its own with {@link Connection.newConnection} (pass the new
 * connection's fd to the worker and use {@link Connection.fromFd} there).
 */
import { encodeMessage } from '../protocol/framing.js';
import { formatIpv4, formatMac } from '../protocol/addresses.js';
import { threadId } from 'node:worker_threads';
import { native } from '../native/index.js';
import {
  AddressSpace,
  CpuidEntry,
  MainRequest,
  MainRequest_SetCallHint_RegHint,
  MainRequest_SetIrqRouting_Route,
  MainRequest_StateSet,
  MainResponse,
} from '../protocol/gen/plugin.js';
import { PluginError, snakeCase } from './errors.js';
import { errno as Errno } from '../errno.js';
import { GuestMemory } from './memory.js';
import { transportError, Vcpu } from './vcpu.js';
import { spinBudgetForVcpus, spinBudgetUs } from '../protocol/pipe-reader.js';

/** Responses can be large (a dirty bitmap); the protocol says 256 KiB. */
const RECEIVE_BUFFER_SIZE = 0x40000;
/**
 * Descriptors accepted per response: the kernel's SCM_MAX_FD, the most one
 * message can carry (get_vcpus sends two per VCPU, 128 for 64 VCPUs).
 */
const MAX_RECEIVED_FDS = 253;

// ---- object ids ----
//
// The host keeps one id space per VM for every object kind, and ids are chosen
// by the plugin: they must be unique among the live objects of the whole
// plugin process, over all its connections and threads. Module state is per
// thread (each worker_thread loads its own copy of this module), so an id is
// `(threadId << 20) | n`: the low 20 bits count within the thread, the high
// 12 bits are the worker's threadId (0 for the main thread). Ids of destroyed
// objects are reused, so a thread may have up to 2^20 live objects and create
// and destroy any number over time. Thread ids beyond 4095 wrap around (a
// process would need thousands of workers for two live ones to collide).

const ID_BITS = 20;
const ID_COUNTER_LIMIT = 1 << ID_BITS;
const idPrefix = ((threadId & 0xfff) << ID_BITS) >>> 0;
let idCounter = 0;
const freeIds: number[] = [];

/** A fresh object id, unique in the process among live objects (see above). */
export function allocateObjectId(): number {
  const reused = freeIds.pop();
  if (reused !== undefined) return reused;
  if (idCounter >= ID_COUNTER_LIMIT) throw new RangeError('too many live plugin objects in this thread (2^20)');
  return (idPrefix | idCounter++) >>> 0;
}

/** Returns an id whose object the host has destroyed, for reuse. */
export function releaseObjectId(id: number): void {
  freeIds.push(id);
}

// ---- public types ----

/** The host's first tap device, from {@link Connection.getNetConfig}. */
export interface NetConfig {
  /** The tap device's fd, owned by the caller. */
  tapFd: number;
  /** The host's IPv4 address, dotted ("192.168.10.1"). */
  hostIpv4: string;
  /** The netmask, dotted ("255.255.255.0"). */
  netmask: string;
  /** The host side's MAC address ("aa:bb:cc:dd:ee:ff"). */
  hostMac: string;
  /** The same values as the wire has them (u32 with the first octet most significant; 6 MAC bytes). */
  raw: {
    /** The host's IPv4 address as a u32. */
    hostIpv4: number;
    /** The netmask as a u32. */
    netmask: number;
    /** The 6 bytes of the MAC address. */
    hostMac: Uint8Array;
  };
}

/** One GSI route for setIrqRouting. */
export type IrqRoute =
  | {
      /** The GSI being routed. */
      irqId: number;
      /** To a pin of an in-kernel interrupt controller. */
      kind: 'irqchip';
      /** 0 = primary PIC, 1 = secondary PIC, 2 = IOAPIC. */
      irqchip: number;
      /** The pin of that chip. */
      pin: number;
    }
  | {
      /** The GSI being routed. */
      irqId: number;
      /** To a message-signalled interrupt. */
      kind: 'msi';
      /** The MSI address. */
      address: bigint;
      /** The MSI data. */
      data: number;
    };

/** One register match of a call hint (all fields optional; omitted = false / 0). */
export interface RegHint {
  /** Match only when RAX equals `rax`. */
  matchRax?: boolean;
  /** Match only when RBX equals `rbx`. */
  matchRbx?: boolean;
  /** Match only when RCX equals `rcx`. */
  matchRcx?: boolean;
  /** Match only when RDX equals `rdx`. */
  matchRdx?: boolean;
  /** The value `matchRax` compares with. */
  rax?: bigint;
  /** The value `matchRbx` compares with. */
  rbx?: bigint;
  /** The value `matchRcx` compares with. */
  rcx?: bigint;
  /** The value `matchRdx` compares with. */
  rdx?: bigint;
  /** On a match, the event carries the special registers too. */
  sendSregs?: boolean;
  /** On a match, the event carries the debug registers too. */
  sendDebugregs?: boolean;
}

/**
 * A call hint ({@link Connection.setCallHint}): IO events at this address
 * carry the VCPU's registers, saving the plugin a round trip per register set.
 */
export interface CallHint {
  /** The address space of `address`. */
  space: AddressSpace;
  /** The hinted address; 0 clears the hint. */
  address: bigint;
  /** True: hint writes to the address; false: reads. */
  onWrite: boolean;
  /** At most {@link MAX_HINT_DETAILS}; the first one whose matches all hold decides. */
  details: RegHint[];
}

/** As in the C API (CROSVM_MAX_HINT_DETAIL_COUNT). */
export const MAX_HINT_DETAILS = 32;

/** How the plugin serves its VCPUs, for {@link Connection.getVcpus}. */
export interface VcpuOptions {
  /**
   * Each VCPU has a thread of its own (a worker_thread with its own
   * connection), as a C plugin has. A VCPU's reads then spin before sleeping
   * (PLUGVISOR_SPIN_US) only while the VM has fewer VCPUs than the machine
   * has cores, the host's rule: as many spinners as cores would take the
   * cores the host needs. By default one thread serves every VCPU, a single
   * spinner, which pays even with as many VCPUs as cores (bench/README.md).
   */
  threadPerVcpu?: boolean;
}

/** Where and how {@link Connection.createMemory} installs plugin memory in the guest. */
export interface MemoryOptions {
  /** Offset into the file (default 0). */
  offset?: bigint;
  /** Guest physical address. */
  start: bigint;
  /** Length in bytes (default: from offset to the end of a GuestMemory). */
  length?: bigint;
  /** The guest cannot write it (its writes become MMIO exits). */
  readOnly?: boolean;
  /** Track dirty pages (MemorySlot.dirtyLog). */
  dirtyLog?: boolean;
}

/** An ioeventfd: the host signals `fd` on matching guest writes. */
export interface IoEvent {
  /** The object id on the wire. */
  readonly id: number;
  /** The eventfd, owned by the handle (closed by destroy). */
  readonly fd: number;
  /** Deassigns the ioeventfd and closes `fd`. */
  destroy(): void;
}

/** An irqfd with resample: write `fd` to raise the GSI; `resampleFd` fires on EOI. */
export interface IrqEvent {
  /** The object id on the wire. */
  readonly id: number;
  /** Trigger eventfd, owned by the handle. */
  readonly fd: number;
  /** Resample eventfd, owned by the handle. */
  readonly resampleFd: number;
  /** Removes the irqfd and closes both eventfds. */
  destroy(): void;
}

/** A KVM memory slot backed by plugin memory. The memfd stays the caller's. */
export interface MemorySlot {
  /** The object id on the wire. */
  readonly id: number;
  /** The guest physical address where the slot starts. */
  readonly start: bigint;
  /** Its length in bytes. */
  readonly length: bigint;
  /** The dirty bitmap since the last call: one bit per 4 KiB page (needs dirtyLog). */
  dirtyLog(): Uint8Array;
  /** Removes the slot from the VM (the memfd stays open). */
  destroy(): void;
}

type RequestMessage = NonNullable<MainRequest['message']>;
type RequestCase = RequestMessage['$case'];
type ResponseMessage = NonNullable<MainResponse['message']>;
type ResponseBody<K extends ResponseMessage['$case']> = Extract<ResponseMessage, { $case: K }> extends infer M
  ? M extends Record<K, infer B> ? B : never
  : never;

function closeQuietly(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      native.close(fd);
    } catch {
      /* already gone */
    }
  }
}

/**
 * A connection to the host: the main one ({@link Connection.connect}) or one
 * made with {@link Connection.newConnection}. Every method is one request
 * and its answer (synchronous); a non-zero errno in the answer throws a
 * {@link PluginError}. One thread at a time per connection.
 */
export class Connection {
  /** The seqpacket socket. */
  readonly fd: number;
  private readonly receiveBuffer = new Uint8Array(RECEIVE_BUFFER_SIZE);
  private vcpus: Vcpu[] | undefined;
  private closed = false;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /**
   * The connection the host gave this process: the fd number in the
   * environment variable CROSVM_SOCKET. Throws a PluginError with ENOTCONN
   * when it is unset, EINVAL when it is not a descriptor number.
   */
  static connect(): Connection {
    const value = process.env['CROSVM_SOCKET'];
    if (value === undefined || value === '') {
      throw new PluginError('connect', Errno.ENOTCONN,
        'CROSVM_SOCKET is not set: this program must be started as a plugin by plugvisor (plugvisor run --plugin ...)');
    }
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) > 0x7fffffff) {
      throw new PluginError('connect', Errno.EINVAL, `CROSVM_SOCKET=${JSON.stringify(value)} is not a file descriptor number`);
    }
    return new Connection(Number(value));
  }

  /** Wraps an already connected socket (e.g. one from newConnection handed to a worker). */
  static fromFd(fd: number): Connection {
    if (!Number.isSafeInteger(fd) || fd < 0) throw new RangeError(`not a file descriptor: ${fd}`);
    return new Connection(fd);
  }

  /**
   * Sends one raw request and returns the raw answer and any descriptors that
   * came with it (owned by the caller). Never throws because of the errno in
   * the answer; throws a transport PluginError if the host hung up or the
   * answer cannot be read.
   */
  request(req: MainRequest, fds: readonly number[] = []): {
    /** The host's answer. */
    response: MainResponse;
    /** Descriptors that came with it, owned by the caller. */
    fds: number[];
  } {
    const name = req.message ? snakeCase(req.message.$case) : 'request';
    this.checkOpen(name);
    const bytes = encodeMessage(MainRequest, req);
    try {
      native.sendmsg(this.fd, bytes, bytes.length, fds);
    } catch (e) {
      throw transportError(name, e, 'send failed');
    }
    let received;
    try {
      received = native.recvmsg(this.fd, this.receiveBuffer, MAX_RECEIVED_FDS);
    } catch (e) {
      throw transportError(name, e, 'receive failed');
    }
    if (received === null) {
      throw new PluginError(name, Errno.EPROTO, 'the connection socket is non-blocking', { transport: true });
    }
    if (received.bytes === 0) {
      closeQuietly(received.fds);
      throw new PluginError(name, Errno.ECONNRESET, 'the host closed the connection', { transport: true });
    }
    if (received.truncated) {
      closeQuietly(received.fds);
      // The kernel also cuts descriptors off when this process is at its
      // RLIMIT_NOFILE: say so, it is the likely cause with many VCPUs.
      throw new PluginError(name, Errno.EMSGSIZE,
        'the answer or its descriptors did not fit (is this process at its limit of open files? see ulimit -n)', { transport: true });
    }
    let response: MainResponse;
    try {
      response = MainResponse.decode(this.receiveBuffer.subarray(0, received.bytes));
    } catch (e) {
      closeQuietly(received.fds);
      throw new PluginError(name, Errno.EPROTO, 'undecodable answer', { transport: true, cause: e });
    }
    return { response, fds: received.fds };
  }

  /**
   * A typed request: checks errno and the answer's member, and that at least
   * `fdCount` descriptors came back (extra ones are closed).
   */
  private call<K extends RequestCase & ResponseMessage['$case']>(
    message: Extract<RequestMessage, { $case: K }>,
    options: { fds?: readonly number[]; fdCount?: number } = {},
  ): { body: ResponseBody<K>; fds: number[] } {
    const kind = message.$case as K;
    const name = snakeCase(kind);
    const { response, fds } = this.request({ message }, options.fds);
    const want = options.fdCount ?? 0;
    if (response.errnoValue !== 0) {
      closeQuietly(fds);
      throw new PluginError(name, response.errnoValue);
    }
    const answer = response.message;
    if (answer?.$case !== kind) {
      closeQuietly(fds);
      throw new PluginError(name, Errno.EPROTO,
        `answered with ${answer ? snakeCase(answer.$case) : 'no member'}`, { transport: true });
    }
    if (fds.length < want) {
      closeQuietly(fds);
      throw new PluginError(name, Errno.EPROTO, `expected ${want} descriptors, got ${fds.length}`, { transport: true });
    }
    if (fds.length > want && want >= 0) closeQuietly(fds.splice(want));
    return { body: (answer as Record<K, ResponseBody<K>>)[kind], fds };
  }

  /** A new, independent connection to the host (for another thread). */
  newConnection(): Connection {
    const { fds } = this.call({ $case: 'newConnection', newConnection: {} }, { fdCount: 1 });
    return new Connection(fds[0]!);
  }

  /**
   * Closes the socket and the VCPU handles obtained through this connection.
   * Idempotent.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const vcpu of this.vcpus ?? []) vcpu.close();
    this.vcpus = undefined;
    native.close(this.fd);
  }

  /** An eventfd (owned by the caller) that the host signals when the plugin should exit. */
  getShutdownEventfd(): number {
    return this.call({ $case: 'getShutdownEventfd', getShutdownEventfd: {} }, { fdCount: 1 }).fds[0]!;
  }

  /** KVM_CHECK_EXTENSION on the VM. */
  checkExtension(extension: number): boolean {
    return this.call({ $case: 'checkExtension', checkExtension: { extension } }).body.hasExtension;
  }

  /** The CPUID leaves KVM supports on this host (KVM_GET_SUPPORTED_CPUID). */
  getSupportedCpuid(): CpuidEntry[] {
    return this.call({ $case: 'getSupportedCpuid', getSupportedCpuid: {} }).body.entries;
  }

  /** The CPUID leaves KVM emulates (KVM_GET_EMULATED_CPUID). */
  getEmulatedCpuid(): CpuidEntry[] {
    return this.call({ $case: 'getEmulatedCpuid', getEmulatedCpuid: {} }).body.entries;
  }

  /** The indices of the MSRs KVM saves and restores (KVM_GET_MSR_INDEX_LIST). */
  getMsrIndexList(): number[] {
    return this.call({ $case: 'getMsrIndexList', getMsrIndexList: {} }).body.indices;
  }

  /** The first tap device's configuration (PluginError ENODATA when there is none). */
  getNetConfig(): NetConfig {
    const { body, fds } = this.call({ $case: 'getNetConfig', getNetConfig: {} }, { fdCount: 1 });
    const mac = new Uint8Array(body.hostMacAddress);
    return {
      tapFd: fds[0]!,
      hostIpv4: formatIpv4(body.hostIpv4Address),
      netmask: formatIpv4(body.netmask),
      hostMac: formatMac(mac),
      raw: { hostIpv4: body.hostIpv4Address, netmask: body.netmask, hostMac: mac },
    };
  }

  /**
   * Reserves [start, start + length) of an address space: guest accesses stop
   * the VCPU with an io event. With asyncWrite, writes are only reported
   * (noResume events) and reads are not reported. length 0 unreserves.
   */
  reserveRange(space: AddressSpace, start: bigint, length: bigint, opts: { asyncWrite?: boolean } = {}): void {
    this.call({ $case: 'reserveRange', reserveRange: { space, start, length, asyncWrite: opts.asyncWrite ?? false } });
  }

  /** Unreserves the range that starts at `start`. */
  unreserveRange(space: AddressSpace, start: bigint): void {
    this.reserveRange(space, start, 0n);
  }

  /** KVM_IRQ_LINE. */
  setIrq(irqId: number, active: boolean): void {
    this.call({ $case: 'setIrq', setIrq: { irqId, active } });
  }

  /** Replaces the whole GSI routing table (an empty list clears it). */
  setIrqRouting(routes: readonly IrqRoute[]): void {
    const wire: MainRequest_SetIrqRouting_Route[] = routes.map((r) => r.kind === 'irqchip'
      ? { irqId: r.irqId, route: { $case: 'irqchip', irqchip: { irqchip: r.irqchip, pin: r.pin } } }
      : { irqId: r.irqId, route: { $case: 'msi', msi: { address: r.address, data: r.data } } });
    this.call({ $case: 'setIrqRouting', setIrqRouting: { routes: wire } });
  }

  /** Raw bytes of a VM-wide kernel struct (PIC0/PIC1, IOAPIC, PIT, CLOCK). */
  getVmState(set: MainRequest_StateSet): Buffer {
    return this.call({ $case: 'getState', getState: { set } }).body.state;
  }

  /** Writes a VM-wide kernel struct (exactly its size, else EINVAL). */
  setVmState(set: MainRequest_StateSet, bytes: Uint8Array): void {
    this.call({ $case: 'setState', setState: { set, state: Buffer.from(bytes) } });
  }

  /** KVM_SET_IDENTITY_MAP_ADDR. */
  setIdentityMapAddr(address: number): void {
    this.call({ $case: 'setIdentityMapAddr', setIdentityMapAddr: { address } });
  }

  /** Asks every VCPU in the mask to stop and report a `paused` event with `user`. */
  pauseVcpus(cpuMask: bigint, user: bigint): void {
    this.call({ $case: 'pauseVcpus', pauseVcpus: { cpuMask: BigInt.asUintN(64, cpuMask), user: BigInt.asUintN(64, user) } });
  }

  /**
   * The VM's VCPUs, in order. Fetched once per connection (the handles own
   * their pipe descriptors and are closed with the connection); `options`
   * apply when they are made, at the first call.
   */
  getVcpus(options: VcpuOptions = {}): Vcpu[] {
    if (this.vcpus) return this.vcpus;
    const { fds } = this.call({ $case: 'getVcpus', getVcpus: {} }, { fdCount: -1 });
    if (fds.length % 2 !== 0) {
      closeQuietly(fds);
      throw new PluginError('get_vcpus', Errno.EPROTO, `odd number of VCPU pipe descriptors (${fds.length})`, { transport: true });
    }
    const vcpus: Vcpu[] = [];
    const count = fds.length / 2;
    const spinUs = options.threadPerVcpu ? spinBudgetForVcpus(count) : spinBudgetUs();
    for (let i = 0; i < count; i++) vcpus.push(new Vcpu(i, fds[2 * i]!, fds[2 * i + 1]!, spinUs));
    this.vcpus = vcpus;
    return vcpus;
  }

  /** One VCPU by index (PluginError ENOENT past the last one). */
  getVcpu(id: number, options: VcpuOptions = {}): Vcpu {
    const vcpu = this.getVcpus(options)[id];
    if (!vcpu) throw new PluginError('get_vcpu', Errno.ENOENT, `no VCPU ${id}`);
    return vcpu;
  }

  /** Starts the VM (once, after set-up): the host then runs the VCPUs. */
  start(): void {
    this.call({ $case: 'start', start: {} });
  }

  /**
   * Sets (or with null clears) the call hint: IO accesses that match it
   * carry the VCPU's registers in their io event.
   */
  setCallHint(hint: CallHint | null): void {
    if (hint === null) {
      this.call({ $case: 'setCallHint', setCallHint: { space: AddressSpace.IOPORT, address: 0n, onWrite: false, hints: [] } });
      return;
    }
    if (hint.details.length > MAX_HINT_DETAILS) {
      throw new PluginError('set_call_hint', Errno.EINVAL, `at most ${MAX_HINT_DETAILS} hint details, got ${hint.details.length}`);
    }
    const hints: MainRequest_SetCallHint_RegHint[] = hint.details.map((d) => ({
      matchRax: d.matchRax ?? false,
      matchRbx: d.matchRbx ?? false,
      matchRcx: d.matchRcx ?? false,
      matchRdx: d.matchRdx ?? false,
      rax: d.rax ?? 0n,
      rbx: d.rbx ?? 0n,
      rcx: d.rcx ?? 0n,
      rdx: d.rdx ?? 0n,
      sendSregs: d.sendSregs ?? false,
      sendDebugregs: d.sendDebugregs ?? false,
    }));
    this.call({ $case: 'setCallHint', setCallHint: { space: hint.space, address: hint.address, onWrite: hint.onWrite, hints } });
  }

  /**
   * An ioeventfd on `address`: length 0 fires on any write; 1, 2, 4 or 8
   * fires only on writes of that width equal to `datamatch` (default 0).
   */
  createIoEvent(space: AddressSpace, address: bigint, length: 0 | 1 | 2 | 4 | 8, datamatch: bigint = 0n): IoEvent {
    const id = allocateObjectId();
    let fds: number[];
    try {
      fds = this.call({
        $case: 'create',
        create: { id, kind: { $case: 'ioEvent', ioEvent: { space, address, length, datamatch: BigInt.asUintN(64, datamatch) } } },
      }, { fdCount: 1 }).fds;
    } catch (e) {
      releaseObjectId(id);
      throw e;
    }
    const fd = fds[0]!;
    return { id, fd, destroy: this.destroyer(id, [fd]) };
  }

  /**
   * Registers guest memory: `memory` (a GuestMemory or any sealed memfd) from
   * `offset` for `length` bytes at guest physical address `start`. The
   * caller keeps its descriptor (the host receives a copy).
   */
  createMemory(memory: GuestMemory | { fd: number }, opts: MemoryOptions): MemorySlot {
    const offset = opts.offset ?? 0n;
    let length = opts.length;
    if (length === undefined) {
      if (!(memory instanceof GuestMemory)) throw new TypeError('createMemory: length is required unless memory is a GuestMemory');
      length = BigInt(memory.size) - offset;
    }
    const id = allocateObjectId();
    try {
      this.call({
        $case: 'create',
        create: {
          id,
          kind: {
            $case: 'memory',
            memory: { offset, start: opts.start, length, readOnly: opts.readOnly ?? false, dirtyLog: opts.dirtyLog ?? false },
          },
        },
      }, { fds: [memory.fd] });
    } catch (e) {
      releaseObjectId(id);
      throw e;
    }
    const slotLength = length;
    return {
      id,
      start: opts.start,
      length: slotLength,
      dirtyLog: () => this.call({ $case: 'dirtyLog', dirtyLog: { id } }).body.bitmap,
      destroy: this.destroyer(id, []),
    };
  }

  /** An irqfd with resample on GSI `irqId`. */
  createIrqEvent(irqId: number): IrqEvent {
    const id = allocateObjectId();
    let fds: number[];
    try {
      fds = this.call({
        $case: 'create',
        create: { id, kind: { $case: 'irqEvent', irqEvent: { irqId, resample: true } } },
      }, { fdCount: 2 }).fds;
    } catch (e) {
      releaseObjectId(id);
      throw e;
    }
    const [fd, resampleFd] = [fds[0]!, fds[1]!];
    return { id, fd, resampleFd, destroy: this.destroyer(id, [fd, resampleFd]) };
  }

  /** Destroys object `id` on the host (ENOENT if unknown). Prefer the handles' destroy(). */
  destroy(id: number): void {
    this.call({ $case: 'destroy', destroy: { id } });
  }

  /**
   * The destroy() of a handle: sends destroy, then closes the descriptors the
   * handle owns (also when the host refused). A second call throws.
   */
  private destroyer(id: number, ownedFds: number[]): () => void {
    let destroyed = false;
    return () => {
      if (destroyed) throw new PluginError('destroy', Errno.ENOENT, `object ${id} was already destroyed`);
      destroyed = true;
      try {
        this.destroy(id);
        releaseObjectId(id);
      } finally {
        closeQuietly(ownedFds);
      }
    };
  }

  private checkOpen(request: string): void {
    if (this.closed) throw new PluginError(request, Errno.EBADF, 'the connection is closed');
  }
}
