/**
 * A plugin's connection to the host: global VM control over an AF_UNIX
 * SOCK_SEQPACKET socket (one MainRequest per message, one MainResponse back,
 * descriptors as SCM_RIGHTS). Synchronous: every call blocks until the host
 * answers. A Connection is not meant to be shared between threads; a worker
 * thread gets its own with {@link Connection.newConnection} (pass the new
 * connection's fd to the worker and use {@link Connection.fromFd} there).
 */
import { formatIpv4, formatMac } from '../protocol/addresses.js';
import {
  AddressSpace,
  CpuidEntry,
  MainRequest,
  MainRequest_SetCallHint_RegHint,
  MainRequest_SetIrqRouting_Route,
  MainRequest_StateSet,
  MainResponse,
} from '../protocol/gen/plugin.js';
import { spinBudgetForVcpus, spinBudgetUs } from '../protocol/pipe-reader.js';
import { errno as Errno } from '../errno.js';
import type { OneofBody } from './answers.js';
import {
  MAX_HINT_DETAILS,
  type CallHint,
  type IoEvent,
  type IrqEvent,
  type IrqRoute,
  type MemoryOptions,
  type MemorySlot,
  type NetConfig,
  type VcpuOptions,
} from './connection-types.js';
import { PluginError } from './errors.js';
import { closeQuietly, MainChannel, type CallCase, type RequestMessage } from './main-channel.js';
import { GuestMemory } from './memory.js';
import { allocateObjectId, releaseObjectId } from './object-ids.js';
import { Vcpu } from './vcpu.js';

/**
 * A connection to the host: the main one ({@link Connection.connect}) or one
 * made with {@link Connection.newConnection}. Every method is one request
 * and its answer (synchronous); a non-zero errno in the answer throws a
 * {@link PluginError}. One thread at a time per connection.
 */
export class Connection {
  /** The seqpacket socket. */
  readonly fd: number;
  private readonly channel: MainChannel;
  private vcpus: Vcpu[] | undefined;

  private constructor(fd: number) {
    this.fd = fd;
    this.channel = new MainChannel(fd);
  }

  /**
   * The connection the host gave this process: the fd number in the
   * environment variable CROSVM_SOCKET. Throws a PluginError with ENOTCONN
   * when it is unset, EINVAL when it is not a descriptor number.
   */
  static connect(): Connection {
    const value = process.env['CROSVM_SOCKET'];
    if (value === undefined || value === '') {
      throw new PluginError(
        'connect',
        Errno.ENOTCONN,
        'CROSVM_SOCKET is not set: this program must be started as a plugin by plugvisor (plugvisor run --plugin ...)',
      );
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
  request(
    req: MainRequest,
    fds: readonly number[] = [],
  ): {
    /** The host's answer. */
    response: MainResponse;
    /** Descriptors that came with it, owned by the caller. */
    fds: number[];
  } {
    return this.channel.request(req, fds);
  }

  /** A typed request (see {@link MainChannel.call}). */
  private call<K extends CallCase>(
    message: Extract<RequestMessage, { $case: K }>,
    options: { fds?: readonly number[]; fdCount?: number } = {},
  ): { body: OneofBody<NonNullable<MainResponse['message']>, K>; fds: number[] } {
    return this.channel.call(message, options);
  }

  /** A new, independent connection to the host (for another thread). */
  newConnection(): Connection {
    const { fds } = this.call({ $case: 'newConnection', newConnection: {} }, { fdCount: 1 });
    return new Connection(fds[0]);
  }

  /**
   * Closes the socket and the VCPU handles obtained through this connection.
   * Idempotent.
   */
  close(): void {
    for (const vcpu of this.vcpus ?? []) vcpu.close();
    this.vcpus = undefined;
    this.channel.close();
  }

  /** An eventfd (owned by the caller) that the host signals when the plugin should exit. */
  getShutdownEventfd(): number {
    return this.call({ $case: 'getShutdownEventfd', getShutdownEventfd: {} }, { fdCount: 1 }).fds[0];
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
      tapFd: fds[0],
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
    const wire: MainRequest_SetIrqRouting_Route[] = routes.map((r) =>
      r.kind === 'irqchip'
        ? { irqId: r.irqId, route: { $case: 'irqchip', irqchip: { irqchip: r.irqchip, pin: r.pin } } }
        : { irqId: r.irqId, route: { $case: 'msi', msi: { address: r.address, data: r.data } } },
    );
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
      throw new PluginError('get_vcpus', Errno.EPROTO, `odd number of VCPU pipe descriptors (${fds.length})`, {
        transport: true,
      });
    }
    const vcpus: Vcpu[] = [];
    const count = fds.length / 2;
    const spinUs = options.threadPerVcpu ? spinBudgetForVcpus(count) : spinBudgetUs();
    for (let i = 0; i < count; i++) vcpus.push(new Vcpu(i, fds[2 * i], fds[2 * i + 1], spinUs));
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
      throw new PluginError(
        'set_call_hint',
        Errno.EINVAL,
        `at most ${MAX_HINT_DETAILS} hint details, got ${hint.details.length}`,
      );
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
      fds = this.call(
        {
          $case: 'create',
          create: {
            id,
            kind: { $case: 'ioEvent', ioEvent: { space, address, length, datamatch: BigInt.asUintN(64, datamatch) } },
          },
        },
        { fdCount: 1 },
      ).fds;
    } catch (e) {
      releaseObjectId(id);
      throw e;
    }
    const fd = fds[0];
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
      if (!(memory instanceof GuestMemory))
        throw new TypeError('createMemory: length is required unless memory is a GuestMemory');
      length = BigInt(memory.size) - offset;
    }
    const id = allocateObjectId();
    try {
      this.call(
        {
          $case: 'create',
          create: {
            id,
            kind: {
              $case: 'memory',
              memory: { offset, start: opts.start, length, readOnly: opts.readOnly ?? false, dirtyLog: opts.dirtyLog ?? false },
            },
          },
        },
        { fds: [memory.fd] },
      );
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
      fds = this.call(
        {
          $case: 'create',
          create: { id, kind: { $case: 'irqEvent', irqEvent: { irqId, resample: true } } },
        },
        { fdCount: 2 },
      ).fds;
    } catch (e) {
      releaseObjectId(id);
      throw e;
    }
    const [fd, resampleFd] = [fds[0], fds[1]];
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
}
