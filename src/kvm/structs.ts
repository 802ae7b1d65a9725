/**
 * The KVM structs that plugvisor builds or reads field by field (x86-64,
 * little-endian): their layouts, which the addon computed from the kernel
 * headers (native/layouts.c), so no offset is written down here; the
 * buffers ioctls take; the CPUID and MSR arrays. Typed views over raw state
 * bytes are in views.ts.
 *
 * This module is shared with the plugin SDK: it imports nothing host-only
 * (only the addon).
 */
import { LAYOUT_FIELDS, native } from '../native/index.js';
import { errno, ErrnoError } from '../errno.js';

// ---------------------------------------------------------------------------
// sizes

/**
 * Throws an EINVAL ErrnoError unless `bytes` is exactly one struct `what`
 * (`size` bytes); `where` (an ioctl such as KVM_SET_REGS, or a view's class)
 * starts the message.
 */
export function expectSize(bytes: Uint8Array, size: number, what: string, where: string): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== size) {
    const got = bytes instanceof Uint8Array ? `${bytes.length} bytes` : typeof bytes;
    throw new ErrnoError(errno.EINVAL, `${where}: struct ${what} is ${size} bytes, got ${got}`, {
      syscall: where.startsWith('KVM_') ? 'ioctl' : undefined,
    });
  }
}

// ---------------------------------------------------------------------------
// layouts (sizes and field offsets from the addon: native/layouts.c)

const L = native.layouts;

/** struct kvm_userspace_memory_region (KVM_SET_USER_MEMORY_REGION). */
export const USERSPACE_MEMORY_REGION = L.kvm_userspace_memory_region;
/** struct kvm_ioeventfd (KVM_IOEVENTFD). */
export const IOEVENTFD = L.kvm_ioeventfd;
/** struct kvm_irqfd (KVM_IRQFD). */
export const IRQFD = L.kvm_irqfd;
/** struct kvm_irq_level (KVM_IRQ_LINE). */
export const IRQ_LEVEL = L.kvm_irq_level;
/** struct kvm_irq_routing (KVM_SET_GSI_ROUTING): header, then `nr` entries. */
export const IRQ_ROUTING = L.kvm_irq_routing;
/** struct kvm_irq_routing_entry: the union `u` is irqchip = {irqchip, pin} or msi = {address_lo, address_hi, data}. */
export const IRQ_ROUTING_ENTRY = L.kvm_irq_routing_entry;
/** struct kvm_cpuid2 (KVM_GET_SUPPORTED_CPUID & co.): header, then `nent` entries. */
export const CPUID2 = L.kvm_cpuid2;
/** struct kvm_cpuid_entry2. */
export const CPUID_ENTRY2 = L.kvm_cpuid_entry2;
/** struct kvm_msrs (KVM_GET_MSRS / KVM_SET_MSRS): header, then `nmsrs` entries. */
export const MSRS = L.kvm_msrs;
/** struct kvm_msr_entry. */
export const MSR_ENTRY = L.kvm_msr_entry;
/** struct kvm_msr_list (KVM_GET_MSR_INDEX_LIST): `nmsrs`, then u32 indices. */
export const MSR_LIST = L.kvm_msr_list;
/** struct kvm_dirty_log (KVM_GET_DIRTY_LOG): slot, then the bitmap pointer. */
export const DIRTY_LOG = L.kvm_dirty_log;
/** struct kvm_enable_cap (KVM_ENABLE_CAP): cap, flags, `__u64 args[]`, then `pad`. */
export const ENABLE_CAP = L.kvm_enable_cap;
/** Number of `args` in struct kvm_enable_cap. */
export const ENABLE_CAP_ARGS = (ENABLE_CAP.pad - ENABLE_CAP.args) / 8;
/** struct kvm_irqchip (KVM_GET/SET_IRQCHIP): chip_id, then the union `chip`. */
export const IRQCHIP = L.kvm_irqchip;
/** struct kvm_pit_config (KVM_CREATE_PIT2). */
export const PIT_CONFIG = L.kvm_pit_config;
/** struct kvm_pic_state (one 8259 in struct kvm_irqchip's union): one byte per field. */
export const PIC_STATE = L.kvm_pic_state;
/** struct kvm_segment. */
export const SEGMENT = L.kvm_segment;
/** struct kvm_dtable (gdt / idt inside kvm_sregs). */
export const DTABLE = L.kvm_dtable;
/** struct kvm_sregs: eight kvm_segment, two kvm_dtable, the control registers, EFER, the APIC base. */
export const SREGS = L.kvm_sregs;
/** struct kvm_regs. */
export const REGS = L.kvm_regs;
/** struct kvm_debugregs: `__u64 db[4]`, dr6, dr7, flags. */
export const DEBUGREGS = L.kvm_debugregs;

/** The 18 registers of struct kvm_regs, in header order (all `__u64`). */
export const REG_NAMES = LAYOUT_FIELDS.kvm_regs;
/** The name of a general register of struct kvm_regs (`rax` ... `rflags`). */
export type RegName = (typeof REG_NAMES)[number];

// ---------------------------------------------------------------------------
// buffers

/**
 * A zeroed buffer whose bytes live outside the JS heap (a dedicated
 * ArrayBuffer), so its address stays put while the kernel uses it.
 */
export function allocBytes(length: number): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new ArrayBuffer(length));
}

/** A little-endian DataView over exactly `bytes`. */
export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A zeroed struct of `layout` and a DataView on it, for an ioctl argument filled field by field. */
export function newStruct(layout: { readonly size: number }): { buf: Uint8Array<ArrayBuffer>; dv: DataView } {
  const buf = allocBytes(layout.size);
  return { buf, dv: viewOf(buf) };
}

// ---------------------------------------------------------------------------
// CPUID and MSR arrays

/** One struct kvm_cpuid_entry2 (the padding is not represented). */
export interface CpuidEntry2 {
  /** The leaf (EAX on input to CPUID). */
  function: number;
  /** The sub-leaf (ECX on input), where `flags` has KVM_CPUID_FLAG_SIGNIFCANT_INDEX. */
  index: number;
  /** KVM_CPUID_FLAG_* bits. */
  flags: number;
  /** EAX as CPUID returns it for this leaf. */
  eax: number;
  /** EBX as CPUID returns it. */
  ebx: number;
  /** ECX as CPUID returns it. */
  ecx: number;
  /** EDX as CPUID returns it. */
  edx: number;
}

/**
 * A struct that is a header holding a count, then that many entries
 * (kvm_cpuid2, kvm_msrs, kvm_irq_routing): room for `capacity` entries (at
 * least `items.length`), the count field at `countAt` set to that, and
 * `write` filling entry i in from `items[i]`.
 */
export function encodeEntries<T>(
  header: { readonly size: number; readonly entries: number },
  countAt: number,
  entrySize: number,
  items: readonly T[],
  write: (dv: DataView, at: number, item: T) => void,
  capacity = items.length,
): Uint8Array<ArrayBuffer> {
  const n = Math.max(capacity, items.length);
  const bytes = allocBytes(header.size + n * entrySize);
  const dv = viewOf(bytes);
  dv.setUint32(countAt, n, true);
  items.forEach((item, i) => write(dv, header.entries + i * entrySize, item));
  return bytes;
}

/** The fields of struct kvm_cpuid_entry2 that CpuidEntry2 has (all `__u32`). */
const CPUID_ENTRY_FIELDS = LAYOUT_FIELDS.kvm_cpuid_entry2;

/** A struct kvm_cpuid2 holding `entries`, with room for `capacity` entries. */
export function encodeCpuid2(entries: readonly CpuidEntry2[], capacity = entries.length): Uint8Array<ArrayBuffer> {
  return encodeEntries(
    CPUID2,
    CPUID2.nent,
    CPUID_ENTRY2.size,
    entries,
    (dv, at, e) => {
      for (const field of CPUID_ENTRY_FIELDS) dv.setUint32(at + CPUID_ENTRY2[field], e[field] >>> 0, true);
    },
    capacity,
  );
}

/** The `nent` entries of a struct kvm_cpuid2. */
export function decodeCpuid2(bytes: Uint8Array): CpuidEntry2[] {
  const dv = viewOf(bytes);
  const n = dv.getUint32(CPUID2.nent, true);
  const out: CpuidEntry2[] = [];
  for (let i = 0; i < n; i++) {
    const at = CPUID2.entries + i * CPUID_ENTRY2.size;
    if (at + CPUID_ENTRY2.size > bytes.length) break;
    const entry = {} as CpuidEntry2;
    for (const field of CPUID_ENTRY_FIELDS) entry[field] = dv.getUint32(at + CPUID_ENTRY2[field], true);
    out.push(entry);
  }
  return out;
}

/** A struct kvm_msrs with these entries (data 0 where not given). */
export function encodeMsrs(entries: readonly { index: number; data?: bigint }[]): Uint8Array<ArrayBuffer> {
  return encodeEntries(MSRS, MSRS.nmsrs, MSR_ENTRY.size, entries, (dv, at, e) => {
    dv.setUint32(at + MSR_ENTRY.index, e.index >>> 0, true);
    dv.setBigUint64(at + MSR_ENTRY.data, BigInt.asUintN(64, e.data ?? 0n), true);
  });
}

/** The data of the first `count` entries of a struct kvm_msrs. */
export function decodeMsrData(bytes: Uint8Array, count: number): bigint[] {
  const dv = viewOf(bytes);
  const out: bigint[] = [];
  for (let i = 0; i < count; i++) {
    out.push(dv.getBigUint64(MSRS.entries + i * MSR_ENTRY.size + MSR_ENTRY.data, true));
  }
  return out;
}
