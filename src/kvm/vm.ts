/**
 * A KVM virtual machine (the fd from KVM_CREATE_VM): one method per VM ioctl.
 */
import { errno, ErrnoError } from '../errno.js';
import { C, native } from '../native/index.js';
import { defineStateMethods, ioctlBytes, ioctlValue } from './ioctl.js';
import {
  allocBytes,
  DIRTY_LOG,
  encodeEntries,
  expectSize,
  IOEVENTFD,
  IRQ_LEVEL,
  IRQ_ROUTING,
  IRQ_ROUTING_ENTRY,
  IRQCHIP,
  IRQFD,
  newStruct,
  PIT_CONFIG,
  USERSPACE_MEMORY_REGION,
  viewOf,
} from './structs.js';

/** Argument of {@link VmFd.setUserMemoryRegion} (struct kvm_userspace_memory_region). */
export interface UserMemoryRegion {
  /** The slot number (the VM's slots are numbered from 0). */
  slot: number;
  /** KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY. */
  flags: number;
  /** Where the slot starts in guest physical memory. */
  guestPhysAddr: bigint;
  /** 0 deletes the slot. */
  memorySize: bigint;
  /** The host address of the memory backing the slot. */
  userspaceAddr: bigint;
}

/** Argument of {@link VmFd.ioeventfd} (struct kvm_ioeventfd). */
export interface IoEventFd {
  /** The eventfd to signal. */
  fd: number;
  /** The port or guest physical address. */
  address: bigint;
  /** Access width 1, 2, 4 or 8; 0 = any width (no datamatch then). */
  length: number;
  /** Signal only for writes of this value (sets KVM_IOEVENTFD_FLAG_DATAMATCH). */
  datamatch?: bigint;
  /** Port IO (true) or MMIO (false). */
  pio: boolean;
  /** Remove a registration made with the same parameters. */
  deassign?: boolean;
}

/** Argument of {@link VmFd.irqfd} (struct kvm_irqfd). */
export interface IrqFd {
  /** The eventfd whose signal raises `gsi`. */
  fd: number;
  /** The interrupt line (global system interrupt). */
  gsi: number;
  /** Level-triggered mode: KVM signals this eventfd on EOI (KVM_IRQFD_FLAG_RESAMPLE). */
  resampleFd?: number;
  /** Remove the irqfd for `fd` and `gsi`. */
  deassign?: boolean;
}

/** One GSI route of {@link VmFd.setGsiRouting} (struct kvm_irq_routing_entry). */
export type GsiRoute =
  | {
      /** The interrupt line being routed. */
      gsi: number;
      /** To a pin of an in-kernel interrupt controller. */
      kind: 'irqchip';
      /** KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE or KVM_IRQCHIP_IOAPIC. */
      irqchip: number;
      /** The pin of that chip. */
      pin: number;
    }
  | {
      /** The interrupt line being routed. */
      gsi: number;
      /** To a message-signalled interrupt. */
      kind: 'msi';
      /** The MSI address. */
      address: bigint;
      /** The MSI data. */
      data: number;
    };

/** Size of the state inside struct kvm_irqchip for a chip id. */
function irqchipStateSize(chipId: number, ioctl: string): number {
  switch (chipId) {
    case C.KVM_IRQCHIP_PIC_MASTER:
    case C.KVM_IRQCHIP_PIC_SLAVE:
      return C.SIZEOF_KVM_PIC_STATE;
    case C.KVM_IRQCHIP_IOAPIC:
      return C.SIZEOF_KVM_IOAPIC_STATE;
    default:
      throw new ErrnoError(errno.EINVAL, `${ioctl}: unknown irqchip id ${chipId}`, { syscall: 'ioctl' });
  }
}

/** The VM's state structs read and written whole, made from the table VM_STATE. */
export interface VmFd {
  /** KVM_GET_PIT2: struct kvm_pit_state2. */
  getPit2(): Uint8Array<ArrayBuffer>;
  /** KVM_GET_CLOCK: struct kvm_clock_data. */
  getClock(): Uint8Array<ArrayBuffer>;
  /** KVM_SET_PIT2: exactly one struct kvm_pit_state2, else EINVAL. */
  setPit2(bytes: Uint8Array): void;
  /** KVM_SET_CLOCK: exactly one struct kvm_clock_data, else EINVAL. */
  setClock(bytes: Uint8Array): void;
}

/** A KVM VM. */
export class VmFd {
  /** The VM file descriptor. */
  readonly fd: number;
  private closed = false;

  /** Wraps a VM descriptor (owned from now on). */
  constructor(fd: number) {
    this.fd = fd;
  }

  /** KVM_CHECK_EXTENSION on the VM: the accurate answer for this VM. */
  checkExtension(cap: number): number {
    return ioctlValue(this.fd, C.KVM_CHECK_EXTENSION, 'KVM_CHECK_EXTENSION', cap);
  }

  /** KVM_CREATE_IRQCHIP: in-kernel PIC pair, IOAPIC and local APICs. Call before creating VCPUs. */
  createIrqchip(): void {
    ioctlValue(this.fd, C.KVM_CREATE_IRQCHIP, 'KVM_CREATE_IRQCHIP', 0);
  }

  /** KVM_CREATE_PIT2 with struct kvm_pit_config{flags}. Needs the irqchip first. */
  createPit2(flags = 0): void {
    const { buf, dv } = newStruct(PIT_CONFIG);
    dv.setUint32(PIT_CONFIG.flags, flags >>> 0, true);
    ioctlBytes(this.fd, C.KVM_CREATE_PIT2, 'KVM_CREATE_PIT2', buf);
  }

  /** KVM_SET_TSS_ADDR: three pages of guest address space for Intel real-mode emulation. */
  setTssAddr(addr: number): void {
    ioctlValue(this.fd, C.KVM_SET_TSS_ADDR, 'KVM_SET_TSS_ADDR', addr);
  }

  /** KVM_SET_IDENTITY_MAP_ADDR: one page of guest address space for Intel's identity map. */
  setIdentityMapAddr(addr: bigint): void {
    const buf = allocBytes(8);
    viewOf(buf).setBigUint64(0, BigInt.asUintN(64, addr), true);
    ioctlBytes(this.fd, C.KVM_SET_IDENTITY_MAP_ADDR, 'KVM_SET_IDENTITY_MAP_ADDR', buf);
  }

  /** KVM_SET_USER_MEMORY_REGION: creates, moves, changes flags of, or (size 0) deletes a slot. */
  setUserMemoryRegion(region: UserMemoryRegion): void {
    const L = USERSPACE_MEMORY_REGION;
    const { buf, dv } = newStruct(L);
    dv.setUint32(L.slot, region.slot >>> 0, true);
    dv.setUint32(L.flags, region.flags >>> 0, true);
    dv.setBigUint64(L.guestPhysAddr, BigInt.asUintN(64, region.guestPhysAddr), true);
    dv.setBigUint64(L.memorySize, BigInt.asUintN(64, region.memorySize), true);
    dv.setBigUint64(L.userspaceAddr, BigInt.asUintN(64, region.userspaceAddr), true);
    ioctlBytes(this.fd, C.KVM_SET_USER_MEMORY_REGION, 'KVM_SET_USER_MEMORY_REGION', buf);
  }

  /** KVM_IOEVENTFD: signal an eventfd on a guest write instead of exiting (or remove that). */
  ioeventfd(e: IoEventFd): void {
    const L = IOEVENTFD;
    const { buf, dv } = newStruct(L);
    let flags = 0;
    if (e.datamatch !== undefined) flags |= C.KVM_IOEVENTFD_FLAG_DATAMATCH;
    if (e.pio) flags |= C.KVM_IOEVENTFD_FLAG_PIO;
    if (e.deassign) flags |= C.KVM_IOEVENTFD_FLAG_DEASSIGN;
    dv.setBigUint64(L.datamatch, BigInt.asUintN(64, e.datamatch ?? 0n), true);
    dv.setBigUint64(L.addr, BigInt.asUintN(64, e.address), true);
    dv.setUint32(L.len, e.length >>> 0, true);
    dv.setInt32(L.fd, e.fd, true);
    dv.setUint32(L.flags, flags, true);
    ioctlBytes(this.fd, C.KVM_IOEVENTFD, 'KVM_IOEVENTFD', buf);
  }

  /** KVM_IRQFD: raise `gsi` when an eventfd is signalled (or remove that). */
  irqfd(e: IrqFd): void {
    const L = IRQFD;
    const { buf, dv } = newStruct(L);
    let flags = 0;
    if (e.deassign) flags |= C.KVM_IRQFD_FLAG_DEASSIGN;
    if (e.resampleFd !== undefined) flags |= C.KVM_IRQFD_FLAG_RESAMPLE;
    dv.setUint32(L.fd, e.fd >>> 0, true);
    dv.setUint32(L.gsi, e.gsi >>> 0, true);
    dv.setUint32(L.flags, flags, true);
    dv.setUint32(L.resamplefd, (e.resampleFd ?? 0) >>> 0, true);
    ioctlBytes(this.fd, C.KVM_IRQFD, 'KVM_IRQFD', buf);
  }

  /** KVM_IRQ_LINE: sets the level of an interrupt line (a GSI) of the in-kernel irqchip. */
  setIrqLine(irq: number, level: boolean): void {
    const { buf, dv } = newStruct(IRQ_LEVEL);
    dv.setUint32(IRQ_LEVEL.irq, irq >>> 0, true);
    dv.setUint32(IRQ_LEVEL.level, level ? 1 : 0, true);
    ioctlBytes(this.fd, C.KVM_IRQ_LINE, 'KVM_IRQ_LINE', buf);
  }

  /** KVM_SET_GSI_ROUTING: replaces the whole GSI routing table with `routes` (empty clears it). */
  setGsiRouting(routes: readonly GsiRoute[]): void {
    const E = IRQ_ROUTING_ENTRY;
    const buf = encodeEntries(IRQ_ROUTING, IRQ_ROUTING.nr, E.size, routes, (dv, at, r) => {
      dv.setUint32(at + E.gsi, r.gsi >>> 0, true);
      if (r.kind === 'irqchip') {
        dv.setUint32(at + E.type, C.KVM_IRQ_ROUTING_IRQCHIP, true);
        dv.setUint32(at + E.irqchipIrqchip, r.irqchip >>> 0, true);
        dv.setUint32(at + E.irqchipPin, r.pin >>> 0, true);
      } else if (r.kind === 'msi') {
        const address = BigInt.asUintN(64, r.address);
        dv.setUint32(at + E.type, C.KVM_IRQ_ROUTING_MSI, true);
        dv.setUint32(at + E.msiAddressLo, Number(address & 0xffffffffn), true);
        dv.setUint32(at + E.msiAddressHi, Number(address >> 32n), true);
        dv.setUint32(at + E.msiData, r.data >>> 0, true);
      } else {
        throw new ErrnoError(errno.EINVAL, `KVM_SET_GSI_ROUTING: unknown route kind ${String((r as { kind: unknown }).kind)}`, {
          syscall: 'ioctl',
        });
      }
    });
    ioctlBytes(this.fd, C.KVM_SET_GSI_ROUTING, 'KVM_SET_GSI_ROUTING', buf);
  }

  /**
   * KVM_GET_IRQCHIP: the chip's state, i.e. the union inside struct
   * kvm_irqchip: struct kvm_pic_state (PIC master/slave, SIZEOF_KVM_PIC_STATE
   * bytes) or struct kvm_ioapic_state (IOAPIC, SIZEOF_KVM_IOAPIC_STATE bytes).
   */
  getIrqchip(chipId: number): Uint8Array<ArrayBuffer> {
    const size = irqchipStateSize(chipId, 'KVM_GET_IRQCHIP');
    const { buf, dv } = newStruct(IRQCHIP);
    dv.setUint32(IRQCHIP.chipId, chipId >>> 0, true);
    ioctlBytes(this.fd, C.KVM_GET_IRQCHIP, 'KVM_GET_IRQCHIP', buf);
    return buf.slice(IRQCHIP.chip, IRQCHIP.chip + size);
  }

  /** KVM_SET_IRQCHIP: `state` must be exactly the chip's struct (see {@link getIrqchip}), else EINVAL. */
  setIrqchip(chipId: number, state: Uint8Array): void {
    const size = irqchipStateSize(chipId, 'KVM_SET_IRQCHIP');
    expectSize(state, size, chipId === C.KVM_IRQCHIP_IOAPIC ? 'kvm_ioapic_state' : 'kvm_pic_state', 'KVM_SET_IRQCHIP');
    const { buf, dv } = newStruct(IRQCHIP);
    dv.setUint32(IRQCHIP.chipId, chipId >>> 0, true);
    buf.set(state, IRQCHIP.chip);
    ioctlBytes(this.fd, C.KVM_SET_IRQCHIP, 'KVM_SET_IRQCHIP', buf);
  }

  /**
   * KVM_GET_DIRTY_LOG: the slot's dirty bitmap, `ceil(pages / 8)` bytes, page
   * i being bit `i % 8` of byte `i / 8`; the kernel resets the log as it reads
   * it. `pages` must be the slot's page count: the kernel writes the
   * bitmap of the whole slot, in whole 64-bit words.
   */
  getDirtyLog(slot: number, pages: number): Uint8Array<ArrayBuffer> {
    if (!Number.isSafeInteger(pages) || pages < 0) {
      throw new ErrnoError(errno.EINVAL, `KVM_GET_DIRTY_LOG: bad page count ${pages}`, { syscall: 'ioctl' });
    }
    const words = Math.max(1, Math.ceil(pages / 64));
    const bitmap = allocBytes(words * 8);
    const { buf, dv } = newStruct(DIRTY_LOG);
    dv.setUint32(DIRTY_LOG.slot, slot >>> 0, true);
    dv.setBigUint64(DIRTY_LOG.dirtyBitmap, native.addressOf(bitmap), true);
    ioctlBytes(this.fd, C.KVM_GET_DIRTY_LOG, 'KVM_GET_DIRTY_LOG', buf);
    return bitmap.subarray(0, Math.ceil(pages / 8));
  }

  /** KVM_CREATE_VCPU: returns the new VCPU's fd (wrap it in a VcpuFd). */
  createVcpu(id: number): number {
    return ioctlValue(this.fd, C.KVM_CREATE_VCPU, 'KVM_CREATE_VCPU', id);
  }

  /** Closes the VM fd (the VM lives on while VCPU fds or mappings hold it). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    native.close(this.fd);
  }
}

/** The state structs of {@link VmFd} that one pair of ioctls reads and writes whole (the irqchip's take a chip id). */
const VM_STATE = {
  Pit2: { ioctl: 'PIT2', struct: 'kvm_pit_state2' },
  Clock: { ioctl: 'CLOCK', struct: 'kvm_clock_data' },
} as const;
defineStateMethods(VmFd, VM_STATE);
