/**
 * Typed views over raw KVM state bytes (struct kvm_regs, kvm_sregs and the
 * segments and tables in it, kvm_debugregs): reads and writes go straight to
 * the bytes, at the offsets the addon computed from the headers.
 *
 * The field accessors are made from a table (field name → width) rather than
 * written one by one: every one of them is "read or write this many bytes
 * at this offset", and the interfaces beside the classes give them their types
 * and doc comments. Shared with the plugin SDK.
 */
import { allocBytes, DEBUGREGS, DTABLE, expectSize, REG_NAMES, REGS, SEGMENT, SREGS, viewOf, type RegName } from './structs.js';

/** How wide a field is: its accessor's value is a bigint for u64, else a number. */
type Width = 'u8' | 'u16' | 'u32' | 'u64';

/** What an accessor reads from: the struct's bytes and where in them the struct starts. */
interface FieldHost {
  readonly dv: DataView;
  readonly at: number;
}

const READ: Record<Width, (dv: DataView, at: number) => number | bigint> = {
  u8: (dv, at) => dv.getUint8(at),
  u16: (dv, at) => dv.getUint16(at, true),
  u32: (dv, at) => dv.getUint32(at, true),
  u64: (dv, at) => dv.getBigUint64(at, true),
};

// DataView's setters already wrap a value to the field's width (as C stores it).
const WRITE: Record<Width, (dv: DataView, at: number, value: number | bigint) => void> = {
  u8: (dv, at, v) => dv.setUint8(at, v as number),
  u16: (dv, at, v) => dv.setUint16(at, v as number, true),
  u32: (dv, at, v) => dv.setUint32(at, v as number, true),
  u64: (dv, at, v) => dv.setBigUint64(at, v as bigint, true),
};

/** The type of a field's value. */
type Value<W extends Width> = W extends 'u64' ? bigint : number;

/**
 * Gives `view`'s instances one accessor per field of `widths`, at the field's
 * offset in `layout` (the view's interface must declare each with its type).
 */
function defineFields<const W extends Readonly<Record<string, Width>>>(
  view: new (...args: never[]) => { [K in keyof W]: Value<W[K]> },
  layout: NoInfer<Readonly<Record<keyof W & string, number>>>,
  widths: W,
): void {
  for (const [field, width] of Object.entries(widths) as [keyof W & string, Width][]) {
    const offset = layout[field];
    const read = READ[width];
    const write = WRITE[width];
    Object.defineProperty(view.prototype, field, {
      get(this: FieldHost) {
        return read(this.dv, this.at + offset);
      },
      set(this: FieldHost, value: number | bigint) {
        write(this.dv, this.at + offset, value);
      },
      enumerable: false,
      configurable: false,
    });
  }
}

/**
 * What the whole-struct views share: the bytes of one kernel struct.
 * @internal
 */
export abstract class StructView {
  /** The struct's bytes, which the accessors read and write. */
  readonly bytes: Uint8Array;
  /** @internal The bytes as the accessors read them. */
  readonly dv: DataView;
  /** @internal Where the struct starts in them. */
  readonly at = 0;

  /**
   * @internal `bytes` must be exactly one struct `struct` (of `layout`), else
   * EINVAL naming `view`; without them the view makes zeroed ones.
   */
  protected constructor(bytes: Uint8Array | undefined, layout: { readonly size: number }, struct: string, view: string) {
    this.bytes = bytes ?? allocBytes(layout.size);
    expectSize(this.bytes, layout.size, struct, view);
    this.dv = viewOf(this.bytes);
  }
}

// ---------------------------------------------------------------------------

/** Typed access to struct kvm_regs bytes (e.g. from `Vcpu.getRegs()`); writes go to the bytes. */
export class RegsView extends StructView {
  /** `bytes` must be exactly one struct kvm_regs; omit it for a zeroed one. */
  constructor(bytes?: Uint8Array) {
    super(bytes, REGS, 'kvm_regs', 'RegsView');
  }

  /** The register called `name`. */
  get(name: RegName): bigint {
    return this.dv.getBigUint64(REGS[name], true);
  }
  /** Sets the register called `name` (to `value` modulo 2^64). */
  set(name: RegName, value: bigint): void {
    this.dv.setBigUint64(REGS[name], value, true);
  }
}
defineFields(RegsView, REGS, Object.fromEntries(REG_NAMES.map((name) => [name, 'u64'])) as Record<RegName, 'u64'>);

/** The fields of {@link RegsView}, made above: their types and docs. */
export interface RegsView {
  /** The RAX register. */
  rax: bigint;
  /** The RBX register. */
  rbx: bigint;
  /** The RCX register. */
  rcx: bigint;
  /** The RDX register. */
  rdx: bigint;
  /** The RSI register. */
  rsi: bigint;
  /** The RDI register. */
  rdi: bigint;
  /** The RSP register. */
  rsp: bigint;
  /** The RBP register. */
  rbp: bigint;
  /** The R8 register. */
  r8: bigint;
  /** The R9 register. */
  r9: bigint;
  /** The R10 register. */
  r10: bigint;
  /** The R11 register. */
  r11: bigint;
  /** The R12 register. */
  r12: bigint;
  /** The R13 register. */
  r13: bigint;
  /** The R14 register. */
  r14: bigint;
  /** The R15 register. */
  r15: bigint;
  /** The instruction pointer. */
  rip: bigint;
  /** RFLAGS (bit 1 is always set on real hardware: use 2n for "no flags"). */
  rflags: bigint;
}

/** One struct kvm_segment inside a struct kvm_sregs; writes go to the bytes. */
export class SegmentView {
  /** The segment at byte `at` of the struct that `dv` views (see {@link SregsView.segment}). */
  constructor(
    /** @internal The bytes of the struct this one is in. */
    readonly dv: DataView,
    /** @internal Where this one starts in them. */
    readonly at: number,
  ) {}
}
defineFields(SegmentView, SEGMENT, {
  base: 'u64',
  limit: 'u32',
  selector: 'u16',
  type: 'u8',
  present: 'u8',
  dpl: 'u8',
  db: 'u8',
  s: 'u8',
  l: 'u8',
  g: 'u8',
  avl: 'u8',
  unusable: 'u8',
});

/** The fields of {@link SegmentView}, made above: their types and docs. */
export interface SegmentView {
  /** The segment's base address. */
  base: bigint;
  /** The segment's limit. */
  limit: number;
  /** The selector (the value of the segment register). */
  selector: number;
  /** The descriptor type field (4 bits). */
  type: number;
  /** The present bit (1 = present). */
  present: number;
  /** The descriptor privilege level (0 to 3). */
  dpl: number;
  /** The default operation size bit: 1 = 32-bit. */
  db: number;
  /** The descriptor type bit: 1 = code or data, 0 = system. */
  s: number;
  /** The 64-bit code segment bit. */
  l: number;
  /** The granularity bit: 1 = the limit counts 4 KiB pages. */
  g: number;
  /** The bit available to system software. */
  avl: number;
  /** 1 when the segment is unusable (a null selector loaded). */
  unusable: number;
}

/** A struct kvm_dtable (gdt / idt) inside a struct kvm_sregs. */
export class DtableView {
  /** The table register at byte `at` of the struct that `dv` views. */
  constructor(
    /** @internal The bytes of the struct this one is in. */
    readonly dv: DataView,
    /** @internal Where this one starts in them. */
    readonly at: number,
  ) {}
}
defineFields(DtableView, DTABLE, { base: 'u64', limit: 'u16' });

/** The fields of {@link DtableView}, made above: their types and docs. */
export interface DtableView {
  /** The table's linear base address. */
  base: bigint;
  /** The table's limit (its size in bytes, minus 1). */
  limit: number;
}

/** The segment registers of struct kvm_sregs, in header order. */
export const SEGMENT_NAMES = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
/** The segment registers of struct kvm_sregs. */
export type SegmentName = (typeof SEGMENT_NAMES)[number];

/** Typed access to struct kvm_sregs bytes (e.g. from `Vcpu.getSregs()`); writes go to the bytes. */
export class SregsView extends StructView {
  /** `bytes` must be exactly one struct kvm_sregs; omit it for a zeroed one. */
  constructor(bytes?: Uint8Array) {
    super(bytes, SREGS, 'kvm_sregs', 'SregsView');
  }

  /** The segment register called `name`. */
  segment(name: SegmentName): SegmentView {
    return new SegmentView(this.dv, SREGS[name]);
  }
  /** The global descriptor table register. */
  get gdt(): DtableView {
    return new DtableView(this.dv, SREGS.gdt);
  }
  /** The interrupt descriptor table register. */
  get idt(): DtableView {
    return new DtableView(this.dv, SREGS.idt);
  }
}
// cs, ds, ... ldt: one getter each, like segment(name).
for (const name of SEGMENT_NAMES) {
  Object.defineProperty(SregsView.prototype, name, {
    get(this: SregsView) {
      return this.segment(name);
    },
    enumerable: false,
    configurable: false,
  });
}
defineFields(SregsView, SREGS, {
  cr0: 'u64',
  cr2: 'u64',
  cr3: 'u64',
  cr4: 'u64',
  cr8: 'u64',
  efer: 'u64',
  apicBase: 'u64',
});

/** The fields of {@link SregsView}, made above: their types and docs. */
export interface SregsView {
  /** Control register CR0. */
  cr0: bigint;
  /** CR2, the page-fault linear address. */
  cr2: bigint;
  /** CR3, the page-table base. */
  cr3: bigint;
  /** Control register CR4. */
  cr4: bigint;
  /** CR8, the task priority. */
  cr8: bigint;
  /** The EFER MSR (long mode, NX, ...). */
  efer: bigint;
  /** The APIC base MSR. */
  apicBase: bigint;
  /** The code segment. */
  readonly cs: SegmentView;
  /** The data segment. */
  readonly ds: SegmentView;
  /** The ES segment. */
  readonly es: SegmentView;
  /** The FS segment. */
  readonly fs: SegmentView;
  /** The GS segment. */
  readonly gs: SegmentView;
  /** The stack segment. */
  readonly ss: SegmentView;
  /** The task register. */
  readonly tr: SegmentView;
  /** The local descriptor table register. */
  readonly ldt: SegmentView;
}

/** Typed access to struct kvm_debugregs bytes; writes go to the bytes. */
export class DebugregsView extends StructView {
  /** `bytes` must be exactly one struct kvm_debugregs; omit it for a zeroed one. */
  constructor(bytes?: Uint8Array) {
    super(bytes, DEBUGREGS, 'kvm_debugregs', 'DebugregsView');
  }

  /** Debug address register DR`i` (`i` from 0 to 3). */
  db(i: number): bigint {
    return this.dv.getBigUint64(DEBUGREGS.db + checkDr(i) * 8, true);
  }
  /** Sets debug address register DR`i`. */
  setDb(i: number, value: bigint): void {
    this.dv.setBigUint64(DEBUGREGS.db + checkDr(i) * 8, value, true);
  }
}
defineFields(DebugregsView, DEBUGREGS, { dr6: 'u64', dr7: 'u64', flags: 'u64' });

/** The fields of {@link DebugregsView}, made above: their types and docs. */
export interface DebugregsView {
  /** DR6, the debug status. */
  dr6: bigint;
  /** DR7, the debug control. */
  dr7: bigint;
  /** The struct's flags field. */
  flags: bigint;
}

function checkDr(i: number): number {
  if (!Number.isInteger(i) || i < 0 || i > 3) throw new RangeError(`debug register index ${i} is not 0..3`);
  return i;
}
