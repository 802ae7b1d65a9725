/**
 * The types of the main connection's API ({@link Connection}): what its
 * methods take and give back.
 */
import type { AddressSpace } from '../protocol/gen/plugin.js';
// eslint-disable-next-line @typescript-eslint/no-unused-vars -- named by {@link} in the docs
import type { Connection } from './connection.js';

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
