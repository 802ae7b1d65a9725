/**
 * The objects a plugin creates with `create` and frees with `destroy`: IO
 * events (ioeventfd), guest memory (a memslot over the plugin's sealed memfd)
 * and IRQ events (irqfd with resample). Each knows how to register itself with
 * the VM and how to undo that.
 */
import { C, native } from '../native/index.js';
import type { VmFd } from '../kvm/index.js';
import { errno, ErrnoError } from '../errno.js';
import { wrapsPastU64 } from './ranges.js';

export interface PluginObject {
  /** The descriptors handed to the plugin when the object is created. */
  readonly fds: readonly number[];
  destroy(vm: VmFd): void;
}

export class IoEventObject implements PluginObject {
  readonly fds: readonly number[];

  private constructor(
    private readonly eventFd: number,
    private readonly registration: { address: bigint; length: number; datamatch?: bigint; pio: boolean },
  ) {
    this.fds = [eventFd];
  }

  static create(vm: VmFd, pio: boolean, address: bigint, length: number, datamatch: bigint): IoEventObject {
    if (![0, 1, 2, 4, 8].includes(length)) throw new ErrnoError(errno.EINVAL, `io event length ${length} is not 0, 1, 2, 4 or 8`);
    // The kernel refuses this too; checked here so the rule is the host's own, as for ranges.
    if (wrapsPastU64(address, BigInt(length))) throw new ErrnoError(errno.EINVAL, 'io event address + length overflows');
    const registration = { address, length, pio, ...(length > 0 ? { datamatch } : {}) };
    const eventFd = native.eventfd(0, C.EFD_CLOEXEC);
    try {
      vm.ioeventfd({ fd: eventFd, ...registration });
    } catch (e) {
      native.close(eventFd);
      throw e;
    }
    return new IoEventObject(eventFd, registration);
  }

  destroy(vm: VmFd): void {
    try {
      vm.ioeventfd({ fd: this.eventFd, ...this.registration, deassign: true });
    } finally {
      native.close(this.eventFd);
    }
  }
}

export class IrqEventObject implements PluginObject {
  readonly fds: readonly number[];

  private constructor(
    private readonly gsi: number,
    private readonly triggerFd: number,
    private readonly resampleFd: number,
  ) {
    this.fds = [triggerFd, resampleFd];
  }

  static create(vm: VmFd, gsi: number): IrqEventObject {
    const triggerFd = native.eventfd(0, C.EFD_CLOEXEC);
    const resampleFd = native.eventfd(0, C.EFD_CLOEXEC);
    try {
      vm.irqfd({ fd: triggerFd, gsi, resampleFd });
    } catch (e) {
      native.close(triggerFd);
      native.close(resampleFd);
      throw e;
    }
    return new IrqEventObject(gsi, triggerFd, resampleFd);
  }

  destroy(vm: VmFd): void {
    try {
      vm.irqfd({ fd: this.triggerFd, gsi: this.gsi, deassign: true });
    } finally {
      native.close(this.triggerFd);
      native.close(this.resampleFd);
    }
  }
}

export interface MemoryRequest {
  offset: bigint;
  start: bigint;
  length: bigint;
  readOnly: boolean;
  dirtyLog: boolean;
}

/** Guest memory: the plugin's memfd mapped by the host and installed as a KVM memory slot. */
export class MemoryObject implements PluginObject {
  readonly fds: readonly number[] = [];

  private constructor(
    readonly slot: number,
    readonly start: bigint,
    readonly length: bigint,
    readonly dirtyLog: boolean,
    private readonly address: bigint,
  ) {}

  /**
   * Validates the memfd per the protocol (EBADF, EPERM, EOVERFLOW, EINVAL),
   * maps it and installs slot `slot`. The caller owns `fd` and closes it.
   */
  static create(vm: VmFd, slot: number, fd: number | undefined, request: MemoryRequest): MemoryObject {
    if (fd === undefined) throw new ErrnoError(errno.EBADF, 'create memory needs a memfd');
    let seals: number;
    try {
      seals = native.fcntl(fd, C.F_GET_SEALS, 0);
    } catch {
      throw new ErrnoError(errno.EPERM, 'the memory fd is not a memfd');
    }
    if ((seals & C.F_SEAL_SHRINK) === 0) throw new ErrnoError(errno.EPERM, 'the memfd is not sealed against shrinking');
    const { offset, start, length } = request;
    if (wrapsPastU64(offset, length) || wrapsPastU64(start, length))
      throw new ErrnoError(errno.EOVERFLOW, 'memory range overflows');
    if (offset + length > BigInt(native.fstatSize(fd)))
      throw new ErrnoError(errno.EINVAL, 'memory range passes the end of the memfd');
    if (length === 0n || length > BigInt(Number.MAX_SAFE_INTEGER)) throw new ErrnoError(errno.EINVAL, 'bad memory length');
    const address = native.mmap(Number(length), C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, fd, Number(offset));
    try {
      vm.setUserMemoryRegion({
        slot,
        flags: (request.readOnly ? C.KVM_MEM_READONLY : 0) | (request.dirtyLog ? C.KVM_MEM_LOG_DIRTY_PAGES : 0),
        guestPhysAddr: start,
        memorySize: length,
        userspaceAddr: address,
      });
    } catch (e) {
      native.munmap(address, Number(length));
      throw e;
    }
    return new MemoryObject(slot, start, length, request.dirtyLog, address);
  }

  overlaps(start: bigint, length: bigint): boolean {
    return start < this.start + this.length && this.start < start + length;
  }

  dirtyBitmap(vm: VmFd): Uint8Array {
    return vm.getDirtyLog(this.slot, Number((this.length + BigInt(C.PAGE_SIZE) - 1n) / BigInt(C.PAGE_SIZE)));
  }

  destroy(vm: VmFd): void {
    try {
      vm.setUserMemoryRegion({ slot: this.slot, flags: 0, guestPhysAddr: this.start, memorySize: 0n, userspaceAddr: 0n });
    } finally {
      native.munmap(this.address, Number(this.length));
    }
  }
}
