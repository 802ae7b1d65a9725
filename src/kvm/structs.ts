/**
 * Memory layouts of the KVM structs that plugvisor builds or reads byte by
 * byte (x86-64, little-endian), and small typed views over raw state bytes.
 *
 * Offsets the native addon computes from the kernel headers (`C.KVM_REGS_*`,
 * `C.KVM_SREGS_*`, `C.KVM_SEGMENT_*`, `C.KVM_DEBUGREGS_*`, `C.SIZEOF_*`) are
 * used directly or checked against. For fields without such a constant the
 * layout is written out once here, next to the name of the header struct, and
 * its total size (plus every field that does have a constant) is asserted at
 * module load: a mismatch with the headers throws on import, loudly, instead
 * of corrupting an ioctl argument.
 *
 * This module is shared with the plugin SDK: it imports nothing host-only
 * (only the addon's constants).
 */
import { C, type ErrnoError } from '../native/index.js';
import { errno, errnoName } from '../errno.js';

// ---------------------------------------------------------------------------
// errno-carrying errors

/**
 * An error shaped like the addon's {@link ErrnoError} (same `errno`, `code` and
 * `syscall` fields), for failures detected before reaching the kernel, such
 * as a state buffer of the wrong size. `where` starts the message (an ioctl
 * name such as KVM_SET_REGS, or a class name); `syscall` is "ioctl" when
 * `where` is an ioctl name, else `where`.
 */
export function errnoError(errno: number, where: string, detail: string): ErrnoError {
  const code = errnoName(errno);
  const err = new Error(`${where}: ${detail} (${code})`) as ErrnoError;
  err.errno = errno;
  err.code = code;
  err.syscall = where.startsWith('KVM_') ? 'ioctl' : where;
  return err;
}

/** Throws an EINVAL error unless `bytes` is exactly `size` bytes long. */
export function expectSize(bytes: Uint8Array, size: number, what: string, where: string): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== size) {
    const got = bytes instanceof Uint8Array ? `${bytes.length} bytes` : typeof bytes;
    throw errnoError(errno.EINVAL, where, `struct ${what} is ${size} bytes, got ${got}`);
  }
}

// ---------------------------------------------------------------------------
// layout assertions

function checkLayout(struct: string, field: string, ours: number, kernel: number): void {
  if (ours !== kernel) {
    throw new Error(
      `plugvisor: layout of struct ${struct} disagrees with the kernel headers: ` +
        `${field} is ${ours} in src/kvm/structs.ts but ${kernel} in <linux/kvm.h>`,
    );
  }
}

/** A struct layout: field offsets plus the total `size`, checked against `C`. */
function layout<T extends Record<string, number>>(
  struct: string,
  fields: T & { size: number },
  kernelSize: number,
): Readonly<T & { size: number }> {
  checkLayout(struct, 'sizeof', fields.size, kernelSize);
  return Object.freeze(fields);
}

// ---------------------------------------------------------------------------
// layouts of structs built or parsed field by field

/** struct kvm_userspace_memory_region (KVM_SET_USER_MEMORY_REGION). */
export const USERSPACE_MEMORY_REGION = layout(
  'kvm_userspace_memory_region',
  { slot: 0, flags: 4, guestPhysAddr: 8, memorySize: 16, userspaceAddr: 24, size: 32 },
  C.SIZEOF_KVM_USERSPACE_MEMORY_REGION,
);

/** struct kvm_ioeventfd (KVM_IOEVENTFD); the rest is `__u8 pad[36]`. */
export const IOEVENTFD = layout(
  'kvm_ioeventfd',
  { datamatch: 0, addr: 8, len: 16, fd: 20, flags: 24, size: 64 },
  C.SIZEOF_KVM_IOEVENTFD,
);

/** struct kvm_irqfd (KVM_IRQFD); the rest is `__u8 pad[16]`. */
export const IRQFD = layout(
  'kvm_irqfd',
  { fd: 0, gsi: 4, flags: 8, resamplefd: 12, size: 32 },
  C.SIZEOF_KVM_IRQFD,
);

/** struct kvm_irq_level (KVM_IRQ_LINE). */
export const IRQ_LEVEL = layout('kvm_irq_level', { irq: 0, level: 4, size: 8 }, C.SIZEOF_KVM_IRQ_LEVEL);

/** struct kvm_irq_routing (KVM_SET_GSI_ROUTING): header, then `nr` entries. */
export const IRQ_ROUTING = layout(
  'kvm_irq_routing',
  { nr: 0, flags: 4, entries: 8, size: 8 },
  C.SIZEOF_KVM_IRQ_ROUTING,
);

/**
 * struct kvm_irq_routing_entry: gsi, type, flags, pad, then the union `u` at
 * 16 (irqchip = {irqchip, pin}; msi = {address_lo, address_hi, data, pad}).
 */
export const IRQ_ROUTING_ENTRY = layout(
  'kvm_irq_routing_entry',
  {
    gsi: 0, type: 4, flags: 8,
    irqchipIrqchip: 16, irqchipPin: 20,
    msiAddressLo: 16, msiAddressHi: 20, msiData: 24,
    size: 48,
  },
  C.SIZEOF_KVM_IRQ_ROUTING_ENTRY,
);

/** struct kvm_cpuid2 (KVM_GET_SUPPORTED_CPUID & co.): header, then `nent` entries. */
export const CPUID2 = layout('kvm_cpuid2', { nent: 0, padding: 4, entries: 8, size: 8 }, C.SIZEOF_KVM_CPUID2);

/** struct kvm_cpuid_entry2; the rest is `__u32 padding[3]`. */
export const CPUID_ENTRY2 = layout(
  'kvm_cpuid_entry2',
  { function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24, size: 40 },
  C.SIZEOF_KVM_CPUID_ENTRY2,
);

/** struct kvm_msrs (KVM_GET_MSRS / KVM_SET_MSRS): header, then `nmsrs` entries. */
export const MSRS = layout('kvm_msrs', { nmsrs: 0, pad: 4, entries: 8, size: 8 }, C.SIZEOF_KVM_MSRS);

/** struct kvm_msr_entry. */
export const MSR_ENTRY = layout(
  'kvm_msr_entry',
  { index: 0, reserved: 4, data: 8, size: 16 },
  C.SIZEOF_KVM_MSR_ENTRY,
);

/** struct kvm_msr_list (KVM_GET_MSR_INDEX_LIST): `nmsrs`, then u32 indices. */
export const MSR_LIST = layout('kvm_msr_list', { nmsrs: 0, indices: 4, size: 4 }, C.SIZEOF_KVM_MSR_LIST);

/** struct kvm_dirty_log (KVM_GET_DIRTY_LOG): slot, padding, bitmap pointer. */
export const DIRTY_LOG = layout(
  'kvm_dirty_log',
  { slot: 0, padding1: 4, dirtyBitmap: 8, size: 16 },
  C.SIZEOF_KVM_DIRTY_LOG,
);

/** struct kvm_enable_cap (KVM_ENABLE_CAP): cap, flags, `__u64 args[4]`, `__u8 pad[64]`. */
export const ENABLE_CAP = layout(
  'kvm_enable_cap',
  { cap: 0, flags: 4, args: 8, size: 104 },
  C.SIZEOF_KVM_ENABLE_CAP,
);
/** Number of `args` in struct kvm_enable_cap. */
export const ENABLE_CAP_ARGS = 4;

/** struct kvm_irqchip (KVM_GET/SET_IRQCHIP): chip_id, pad, then a 512-byte union `chip`. */
export const IRQCHIP = layout('kvm_irqchip', { chipId: 0, pad: 4, chip: 8, size: 520 }, C.SIZEOF_KVM_IRQCHIP);

/** struct kvm_pit_config (KVM_CREATE_PIT2): flags, then `__u32 pad[15]`. */
export const PIT_CONFIG = layout('kvm_pit_config', { flags: 0, size: 64 }, C.SIZEOF_KVM_PIT_CONFIG);

/** struct kvm_segment. */
export const SEGMENT = layout(
  'kvm_segment',
  {
    base: 0, limit: 8, selector: 12, type: 14, present: 15, dpl: 16, db: 17,
    s: 18, l: 19, g: 20, avl: 21, unusable: 22, padding: 23, size: 24,
  },
  C.SIZEOF_KVM_SEGMENT,
);
checkLayout('kvm_segment', 'base', SEGMENT.base, C.KVM_SEGMENT_BASE);
checkLayout('kvm_segment', 'limit', SEGMENT.limit, C.KVM_SEGMENT_LIMIT);
checkLayout('kvm_segment', 'selector', SEGMENT.selector, C.KVM_SEGMENT_SELECTOR);

/** struct kvm_dtable (gdt / idt inside kvm_sregs): base, limit, `__u16 padding[3]`. */
export const DTABLE = Object.freeze({ base: 0, limit: 8, size: 16 });

/**
 * struct kvm_sregs: eight kvm_segment (cs ds es fs gs ss tr ldt), two
 * kvm_dtable (gdt idt), cr0 cr2 cr3 cr4 cr8 efer apic_base, then the
 * interrupt bitmap (`__u64[4]`).
 */
export const SREGS = layout(
  'kvm_sregs',
  {
    cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168,
    gdt: 192, idt: 208,
    cr0: 224, cr2: 232, cr3: 240, cr4: 248, cr8: 256, efer: 264, apicBase: 272,
    interruptBitmap: 280, size: 312,
  },
  C.SIZEOF_KVM_SREGS,
);
checkLayout('kvm_sregs', 'cs', SREGS.cs, C.KVM_SREGS_CS);
checkLayout('kvm_sregs', 'ds', SREGS.ds, C.KVM_SREGS_DS);
checkLayout('kvm_sregs', 'es', SREGS.es, C.KVM_SREGS_ES);
checkLayout('kvm_sregs', 'ss', SREGS.ss, C.KVM_SREGS_SS);
checkLayout('kvm_sregs', 'cr0', SREGS.cr0, C.KVM_SREGS_CR0);
checkLayout('kvm_sregs', 'cr4', SREGS.cr4, C.KVM_SREGS_CR4);
checkLayout('kvm_sregs', 'efer', SREGS.efer, C.KVM_SREGS_EFER);

/** The 18 registers of struct kvm_regs, in header order (all `__u64`). */
export const REG_NAMES = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15',
  'rip', 'rflags',
] as const;
/** The name of a general register of struct kvm_regs (`rax` ... `rflags`). */
export type RegName = (typeof REG_NAMES)[number];

/** struct kvm_regs: offsets of each register. */
export const REGS = layout(
  'kvm_regs',
  {
    ...(Object.fromEntries(REG_NAMES.map((name, i) => [name, i * 8])) as Record<RegName, number>),
    size: REG_NAMES.length * 8,
  },
  C.SIZEOF_KVM_REGS,
);
checkLayout('kvm_regs', 'rax', REGS.rax, C.KVM_REGS_RAX);
checkLayout('kvm_regs', 'rbx', REGS.rbx, C.KVM_REGS_RBX);
checkLayout('kvm_regs', 'rcx', REGS.rcx, C.KVM_REGS_RCX);
checkLayout('kvm_regs', 'rdx', REGS.rdx, C.KVM_REGS_RDX);
checkLayout('kvm_regs', 'rsi', REGS.rsi, C.KVM_REGS_RSI);
checkLayout('kvm_regs', 'rdi', REGS.rdi, C.KVM_REGS_RDI);
checkLayout('kvm_regs', 'rsp', REGS.rsp, C.KVM_REGS_RSP);
checkLayout('kvm_regs', 'rbp', REGS.rbp, C.KVM_REGS_RBP);
checkLayout('kvm_regs', 'rip', REGS.rip, C.KVM_REGS_RIP);
checkLayout('kvm_regs', 'rflags', REGS.rflags, C.KVM_REGS_RFLAGS);

/** struct kvm_debugregs: `__u64 db[4]`, dr6, dr7, flags, `__u64 reserved[9]`. */
export const DEBUGREGS = layout(
  'kvm_debugregs',
  { db: 0, dr6: 32, dr7: 40, flags: 48, size: 128 },
  C.SIZEOF_KVM_DEBUGREGS,
);
checkLayout('kvm_debugregs', 'db', DEBUGREGS.db, C.KVM_DEBUGREGS_DB);
checkLayout('kvm_debugregs', 'dr6', DEBUGREGS.dr6, C.KVM_DEBUGREGS_DR6);
checkLayout('kvm_debugregs', 'dr7', DEBUGREGS.dr7, C.KVM_DEBUGREGS_DR7);

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

/** A struct kvm_cpuid2 holding `entries`, with room for `capacity` entries. */
export function encodeCpuid2(entries: readonly CpuidEntry2[], capacity = entries.length): Uint8Array<ArrayBuffer> {
  const n = Math.max(capacity, entries.length);
  const bytes = allocBytes(CPUID2.size + n * CPUID_ENTRY2.size);
  const dv = viewOf(bytes);
  dv.setUint32(CPUID2.nent, n, true);
  entries.forEach((e, i) => {
    const at = CPUID2.entries + i * CPUID_ENTRY2.size;
    dv.setUint32(at + CPUID_ENTRY2.function, e.function >>> 0, true);
    dv.setUint32(at + CPUID_ENTRY2.index, e.index >>> 0, true);
    dv.setUint32(at + CPUID_ENTRY2.flags, e.flags >>> 0, true);
    dv.setUint32(at + CPUID_ENTRY2.eax, e.eax >>> 0, true);
    dv.setUint32(at + CPUID_ENTRY2.ebx, e.ebx >>> 0, true);
    dv.setUint32(at + CPUID_ENTRY2.ecx, e.ecx >>> 0, true);
    dv.setUint32(at + CPUID_ENTRY2.edx, e.edx >>> 0, true);
  });
  return bytes;
}

/** The `nent` entries of a struct kvm_cpuid2. */
export function decodeCpuid2(bytes: Uint8Array): CpuidEntry2[] {
  const dv = viewOf(bytes);
  const n = dv.getUint32(CPUID2.nent, true);
  const out: CpuidEntry2[] = [];
  for (let i = 0; i < n; i++) {
    const at = CPUID2.entries + i * CPUID_ENTRY2.size;
    if (at + CPUID_ENTRY2.size > bytes.length) break;
    out.push({
      function: dv.getUint32(at + CPUID_ENTRY2.function, true),
      index: dv.getUint32(at + CPUID_ENTRY2.index, true),
      flags: dv.getUint32(at + CPUID_ENTRY2.flags, true),
      eax: dv.getUint32(at + CPUID_ENTRY2.eax, true),
      ebx: dv.getUint32(at + CPUID_ENTRY2.ebx, true),
      ecx: dv.getUint32(at + CPUID_ENTRY2.ecx, true),
      edx: dv.getUint32(at + CPUID_ENTRY2.edx, true),
    });
  }
  return out;
}

/** A struct kvm_msrs with these entries (data 0 where not given). */
export function encodeMsrs(entries: readonly { index: number; data?: bigint }[]): Uint8Array<ArrayBuffer> {
  const bytes = allocBytes(MSRS.size + entries.length * MSR_ENTRY.size);
  const dv = viewOf(bytes);
  dv.setUint32(MSRS.nmsrs, entries.length, true);
  entries.forEach((e, i) => {
    const at = MSRS.entries + i * MSR_ENTRY.size;
    dv.setUint32(at + MSR_ENTRY.index, e.index >>> 0, true);
    dv.setBigUint64(at + MSR_ENTRY.data, BigInt.asUintN(64, e.data ?? 0n), true);
  });
  return bytes;
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

// ---------------------------------------------------------------------------
// views over raw state bytes

/** Typed access to struct kvm_regs bytes (e.g. from `Vcpu.getRegs()`); writes go to the bytes. */
export class RegsView {
  /** The size of struct kvm_regs in bytes. */
  static readonly SIZE = REGS.size;
  /** The struct's bytes, which the accessors read and write. */
  readonly bytes: Uint8Array;
  private readonly dv: DataView;

  /** `bytes` must be exactly one struct kvm_regs; omit it for a zeroed one. */
  constructor(bytes: Uint8Array = allocBytes(REGS.size)) {
    expectSize(bytes, REGS.size, 'kvm_regs', 'RegsView');
    this.bytes = bytes;
    this.dv = viewOf(bytes);
  }

  /** The register called `name`. */
  get(name: RegName): bigint {
    return this.dv.getBigUint64(REGS[name], true);
  }
  /** Sets the register called `name` (to `value` modulo 2^64). */
  set(name: RegName, value: bigint): void {
    this.dv.setBigUint64(REGS[name], BigInt.asUintN(64, value), true);
  }

  /** The RAX register. */
  get rax(): bigint { return this.get('rax'); }
  set rax(v: bigint) { this.set('rax', v); }
  /** The RBX register. */
  get rbx(): bigint { return this.get('rbx'); }
  set rbx(v: bigint) { this.set('rbx', v); }
  /** The RCX register. */
  get rcx(): bigint { return this.get('rcx'); }
  set rcx(v: bigint) { this.set('rcx', v); }
  /** The RDX register. */
  get rdx(): bigint { return this.get('rdx'); }
  set rdx(v: bigint) { this.set('rdx', v); }
  /** The RSI register. */
  get rsi(): bigint { return this.get('rsi'); }
  set rsi(v: bigint) { this.set('rsi', v); }
  /** The RDI register. */
  get rdi(): bigint { return this.get('rdi'); }
  set rdi(v: bigint) { this.set('rdi', v); }
  /** The RSP register. */
  get rsp(): bigint { return this.get('rsp'); }
  set rsp(v: bigint) { this.set('rsp', v); }
  /** The RBP register. */
  get rbp(): bigint { return this.get('rbp'); }
  set rbp(v: bigint) { this.set('rbp', v); }
  /** The R8 register. */
  get r8(): bigint { return this.get('r8'); }
  set r8(v: bigint) { this.set('r8', v); }
  /** The R9 register. */
  get r9(): bigint { return this.get('r9'); }
  set r9(v: bigint) { this.set('r9', v); }
  /** The R10 register. */
  get r10(): bigint { return this.get('r10'); }
  set r10(v: bigint) { this.set('r10', v); }
  /** The R11 register. */
  get r11(): bigint { return this.get('r11'); }
  set r11(v: bigint) { this.set('r11', v); }
  /** The R12 register. */
  get r12(): bigint { return this.get('r12'); }
  set r12(v: bigint) { this.set('r12', v); }
  /** The R13 register. */
  get r13(): bigint { return this.get('r13'); }
  set r13(v: bigint) { this.set('r13', v); }
  /** The R14 register. */
  get r14(): bigint { return this.get('r14'); }
  set r14(v: bigint) { this.set('r14', v); }
  /** The R15 register. */
  get r15(): bigint { return this.get('r15'); }
  set r15(v: bigint) { this.set('r15', v); }
  /** The instruction pointer. */
  get rip(): bigint { return this.get('rip'); }
  set rip(v: bigint) { this.set('rip', v); }
  /** RFLAGS (bit 1 is always set on real hardware: use 2n for "no flags"). */
  get rflags(): bigint { return this.get('rflags'); }
  set rflags(v: bigint) { this.set('rflags', v); }
}

/** One struct kvm_segment inside a struct kvm_sregs; writes go to the bytes. */
export class SegmentView {
  /** The segment at byte `at` of the struct that `dv` views (see {@link SregsView.segment}). */
  constructor(private readonly dv: DataView, private readonly at: number) {}

  /** The segment's base address. */
  get base(): bigint { return this.dv.getBigUint64(this.at + SEGMENT.base, true); }
  set base(v: bigint) { this.dv.setBigUint64(this.at + SEGMENT.base, BigInt.asUintN(64, v), true); }
  /** The segment's limit. */
  get limit(): number { return this.dv.getUint32(this.at + SEGMENT.limit, true); }
  set limit(v: number) { this.dv.setUint32(this.at + SEGMENT.limit, v >>> 0, true); }
  /** The selector (the value of the segment register). */
  get selector(): number { return this.dv.getUint16(this.at + SEGMENT.selector, true); }
  set selector(v: number) { this.dv.setUint16(this.at + SEGMENT.selector, v & 0xffff, true); }
  /** The descriptor type field (4 bits). */
  get type(): number { return this.dv.getUint8(this.at + SEGMENT.type); }
  set type(v: number) { this.dv.setUint8(this.at + SEGMENT.type, v); }
  /** The present bit (1 = present). */
  get present(): number { return this.dv.getUint8(this.at + SEGMENT.present); }
  set present(v: number) { this.dv.setUint8(this.at + SEGMENT.present, v); }
  /** The descriptor privilege level (0 to 3). */
  get dpl(): number { return this.dv.getUint8(this.at + SEGMENT.dpl); }
  set dpl(v: number) { this.dv.setUint8(this.at + SEGMENT.dpl, v); }
  /** The default operation size bit: 1 = 32-bit. */
  get db(): number { return this.dv.getUint8(this.at + SEGMENT.db); }
  set db(v: number) { this.dv.setUint8(this.at + SEGMENT.db, v); }
  /** The descriptor type bit: 1 = code or data, 0 = system. */
  get s(): number { return this.dv.getUint8(this.at + SEGMENT.s); }
  set s(v: number) { this.dv.setUint8(this.at + SEGMENT.s, v); }
  /** The 64-bit code segment bit. */
  get l(): number { return this.dv.getUint8(this.at + SEGMENT.l); }
  set l(v: number) { this.dv.setUint8(this.at + SEGMENT.l, v); }
  /** The granularity bit: 1 = the limit counts 4 KiB pages. */
  get g(): number { return this.dv.getUint8(this.at + SEGMENT.g); }
  set g(v: number) { this.dv.setUint8(this.at + SEGMENT.g, v); }
  /** The bit available to system software. */
  get avl(): number { return this.dv.getUint8(this.at + SEGMENT.avl); }
  set avl(v: number) { this.dv.setUint8(this.at + SEGMENT.avl, v); }
  /** 1 when the segment is unusable (a null selector loaded). */
  get unusable(): number { return this.dv.getUint8(this.at + SEGMENT.unusable); }
  set unusable(v: number) { this.dv.setUint8(this.at + SEGMENT.unusable, v); }
}

/** A struct kvm_dtable (gdt / idt) inside a struct kvm_sregs. */
export class DtableView {
  /** The table register at byte `at` of the struct that `dv` views. */
  constructor(private readonly dv: DataView, private readonly at: number) {}

  /** The table's linear base address. */
  get base(): bigint { return this.dv.getBigUint64(this.at + DTABLE.base, true); }
  set base(v: bigint) { this.dv.setBigUint64(this.at + DTABLE.base, BigInt.asUintN(64, v), true); }
  /** The table's limit (its size in bytes, minus 1). */
  get limit(): number { return this.dv.getUint16(this.at + DTABLE.limit, true); }
  set limit(v: number) { this.dv.setUint16(this.at + DTABLE.limit, v & 0xffff, true); }
}

/** The segment registers of struct kvm_sregs. */
export type SegmentName = 'cs' | 'ds' | 'es' | 'fs' | 'gs' | 'ss' | 'tr' | 'ldt';

/** Typed access to struct kvm_sregs bytes (e.g. from `Vcpu.getSregs()`); writes go to the bytes. */
export class SregsView {
  /** The size of struct kvm_sregs in bytes. */
  static readonly SIZE = SREGS.size;
  /** The struct's bytes, which the accessors read and write. */
  readonly bytes: Uint8Array;
  private readonly dv: DataView;

  /** `bytes` must be exactly one struct kvm_sregs; omit it for a zeroed one. */
  constructor(bytes: Uint8Array = allocBytes(SREGS.size)) {
    expectSize(bytes, SREGS.size, 'kvm_sregs', 'SregsView');
    this.bytes = bytes;
    this.dv = viewOf(bytes);
  }

  /** The segment register called `name`. */
  segment(name: SegmentName): SegmentView {
    return new SegmentView(this.dv, SREGS[name]);
  }
  /** The code segment. */
  get cs(): SegmentView { return this.segment('cs'); }
  /** The data segment. */
  get ds(): SegmentView { return this.segment('ds'); }
  /** The ES segment. */
  get es(): SegmentView { return this.segment('es'); }
  /** The FS segment. */
  get fs(): SegmentView { return this.segment('fs'); }
  /** The GS segment. */
  get gs(): SegmentView { return this.segment('gs'); }
  /** The stack segment. */
  get ss(): SegmentView { return this.segment('ss'); }
  /** The task register. */
  get tr(): SegmentView { return this.segment('tr'); }
  /** The local descriptor table register. */
  get ldt(): SegmentView { return this.segment('ldt'); }

  /** Shorthand for `cs.base`. */
  get csBase(): bigint { return this.cs.base; }
  set csBase(v: bigint) { this.cs.base = v; }
  /** Shorthand for `cs.selector`. */
  get csSelector(): number { return this.cs.selector; }
  set csSelector(v: number) { this.cs.selector = v; }

  /** The global descriptor table register. */
  get gdt(): DtableView { return new DtableView(this.dv, SREGS.gdt); }
  /** The interrupt descriptor table register. */
  get idt(): DtableView { return new DtableView(this.dv, SREGS.idt); }

  private u64(at: number): bigint { return this.dv.getBigUint64(at, true); }
  private setU64(at: number, v: bigint): void { this.dv.setBigUint64(at, BigInt.asUintN(64, v), true); }

  /** Control register CR0. */
  get cr0(): bigint { return this.u64(SREGS.cr0); }
  set cr0(v: bigint) { this.setU64(SREGS.cr0, v); }
  /** CR2, the page-fault linear address. */
  get cr2(): bigint { return this.u64(SREGS.cr2); }
  set cr2(v: bigint) { this.setU64(SREGS.cr2, v); }
  /** CR3, the page-table base. */
  get cr3(): bigint { return this.u64(SREGS.cr3); }
  set cr3(v: bigint) { this.setU64(SREGS.cr3, v); }
  /** Control register CR4. */
  get cr4(): bigint { return this.u64(SREGS.cr4); }
  set cr4(v: bigint) { this.setU64(SREGS.cr4, v); }
  /** CR8, the task priority. */
  get cr8(): bigint { return this.u64(SREGS.cr8); }
  set cr8(v: bigint) { this.setU64(SREGS.cr8, v); }
  /** The EFER MSR (long mode, NX, ...). */
  get efer(): bigint { return this.u64(SREGS.efer); }
  set efer(v: bigint) { this.setU64(SREGS.efer, v); }
  /** The APIC base MSR. */
  get apicBase(): bigint { return this.u64(SREGS.apicBase); }
  set apicBase(v: bigint) { this.setU64(SREGS.apicBase, v); }
}

/** Typed access to struct kvm_debugregs bytes; writes go to the bytes. */
export class DebugregsView {
  /** The size of struct kvm_debugregs in bytes. */
  static readonly SIZE = DEBUGREGS.size;
  /** The struct's bytes, which the accessors read and write. */
  readonly bytes: Uint8Array;
  private readonly dv: DataView;

  /** `bytes` must be exactly one struct kvm_debugregs; omit it for a zeroed one. */
  constructor(bytes: Uint8Array = allocBytes(DEBUGREGS.size)) {
    expectSize(bytes, DEBUGREGS.size, 'kvm_debugregs', 'DebugregsView');
    this.bytes = bytes;
    this.dv = viewOf(bytes);
  }

  /** Debug address register DR`i` (`i` from 0 to 3). */
  db(i: number): bigint {
    return this.dv.getBigUint64(DEBUGREGS.db + checkDr(i) * 8, true);
  }
  /** Sets debug address register DR`i`. */
  setDb(i: number, value: bigint): void {
    this.dv.setBigUint64(DEBUGREGS.db + checkDr(i) * 8, BigInt.asUintN(64, value), true);
  }
  /** DR6, the debug status. */
  get dr6(): bigint { return this.dv.getBigUint64(DEBUGREGS.dr6, true); }
  set dr6(v: bigint) { this.dv.setBigUint64(DEBUGREGS.dr6, BigInt.asUintN(64, v), true); }
  /** DR7, the debug control. */
  get dr7(): bigint { return this.dv.getBigUint64(DEBUGREGS.dr7, true); }
  set dr7(v: bigint) { this.dv.setBigUint64(DEBUGREGS.dr7, BigInt.asUintN(64, v), true); }
  /** The struct's flags field. */
  get flags(): bigint { return this.dv.getBigUint64(DEBUGREGS.flags, true); }
  set flags(v: bigint) { this.dv.setBigUint64(DEBUGREGS.flags, BigInt.asUintN(64, v), true); }
}

function checkDr(i: number): number {
  if (!Number.isInteger(i) || i < 0 || i > 3) throw new RangeError(`debug register index ${i} is not 0..3`);
  return i;
}
