/**
 * The VCPU state that puts a program straight into 64-bit user mode, with
 * no boot code: control registers (long mode, paging, SSE and, where CPUID
 * has them, XSAVE/AVX/AVX-512, NX, FSGSBASE), CPL-3 segments, the
 * descriptor tables and TR, and XCR0.
 */
import { RegsView, SregsView, kvmConstants, type CpuidEntry, type MsrEntry, type SegmentView } from '../plugin/index.js';
import { GDT_LIMIT, IDT_LIMIT, SEGMENT_TYPE, SELECTOR, TSS_LIMIT } from './descriptors.js';

/** What the CPU offers the guest, from KVM's supported CPUID. */
export interface CpuFeatures {
  noExecute: boolean;
  xsave: boolean;
  fsgsbase: boolean;
  /** The XCR0 to set when `xsave`: x87 | SSE, plus AVX and the AVX-512 states when all their parts are offered. */
  xcr0: bigint;
}

const bit = (value: number | undefined, n: number): boolean => (((value ?? 0) >>> n) & 1) === 1;

export function cpuFeatures(cpuid: readonly CpuidEntry[]): CpuFeatures {
  const leaf = (fn: number, index = 0): CpuidEntry | undefined =>
    cpuid.find((e) => e.function === fn && (!e.hasIndex || e.index === index));
  const leaf1 = leaf(1);
  const leaf7 = leaf(7, 0);
  const xsave = bit(leaf1?.ecx, 26);
  const states = leaf(0xd, 0)?.eax ?? 0;
  let xcr0 = 0b11n; // x87, SSE
  if (xsave && bit(leaf1?.ecx, 28) && bit(states, 2)) {
    xcr0 |= 0b100n; // AVX (YMM upper halves)
    if (bit(leaf7?.ebx, 16) && (states & 0xe0) === 0xe0) xcr0 |= 0xe0n; // AVX-512: opmask, ZMM_Hi256, Hi16_ZMM
  }
  return {
    noExecute: bit(leaf(0x8000_0001)?.edx, 20),
    xsave,
    fsgsbase: bit(leaf7?.ebx, 0),
    xcr0: xsave ? xcr0 : 0n,
  };
}

const CR0_PE = 1n << 0n;
const CR0_MP = 1n << 1n;
const CR0_ET = 1n << 4n;
const CR0_NE = 1n << 5n;
const CR0_WP = 1n << 16n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const CR4_OSFXSR = 1n << 9n;
const CR4_OSXMMEXCPT = 1n << 10n;
const CR4_FSGSBASE = 1n << 16n;
const CR4_OSXSAVE = 1n << 18n;
const EFER_SCE = 1n << 0n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;
const EFER_NXE = 1n << 11n;
/** RFLAGS: bit 1 is always set; IF lets the interrupts of devices the program enabled in. */
export const ENTRY_RFLAGS = 0x202n;

export interface SystemTables {
  gdt: number;
  idt: number;
  tss: number;
  cr3: bigint;
}

function flatSegment(segment: SegmentView, selector: number, type: number, dpl: number, longMode: boolean): void {
  segment.base = 0n;
  segment.limit = 0xffff_ffff;
  segment.selector = selector;
  segment.type = type;
  segment.present = 1;
  segment.dpl = dpl;
  segment.db = longMode ? 0 : 1;
  segment.s = 1;
  segment.l = longMode ? 1 : 0;
  segment.g = 1;
  segment.avl = 0;
  segment.unusable = 0;
}

/** Fills `sregs` (the VCPU's current ones, for the APIC base and the interrupt bitmap) for CPL 3 in long mode. */
export function userModeSregs(sregs: SregsView, tables: SystemTables, features: CpuFeatures): void {
  flatSegment(sregs.cs, SELECTOR.userCode, SEGMENT_TYPE.code, 3, true);
  for (const name of ['ds', 'es', 'fs', 'gs', 'ss'] as const)
    flatSegment(sregs.segment(name), SELECTOR.userData, SEGMENT_TYPE.data, 3, false);
  const tr = sregs.tr;
  tr.base = BigInt(tables.tss);
  tr.limit = TSS_LIMIT;
  tr.selector = SELECTOR.tss;
  tr.type = SEGMENT_TYPE.busyTss;
  tr.present = 1;
  tr.dpl = 0;
  tr.db = 0;
  tr.s = 0;
  tr.l = 0;
  tr.g = 0;
  tr.avl = 0;
  tr.unusable = 0;
  const ldt = sregs.ldt;
  ldt.selector = 0;
  ldt.present = 0;
  ldt.unusable = 1;
  sregs.gdt.base = BigInt(tables.gdt);
  sregs.gdt.limit = GDT_LIMIT;
  sregs.idt.base = BigInt(tables.idt);
  sregs.idt.limit = IDT_LIMIT;
  // MP with EM clear: SSE and x87 run natively; NE: x87 errors as #MF, not the legacy IRQ 13.
  sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
  sregs.cr2 = 0n;
  sregs.cr3 = tables.cr3;
  sregs.cr4 =
    CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | (features.xsave ? CR4_OSXSAVE : 0n) | (features.fsgsbase ? CR4_FSGSBASE : 0n);
  // SCE: `syscall` goes to the stub's report (see syscallMsrs), never to LSTAR 0.
  sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | (features.noExecute ? EFER_NXE : 0n);
}

const MSR_STAR = 0xc000_0081;
const MSR_LSTAR = 0xc000_0082;
const MSR_SFMASK = 0xc000_0084;
/** RFLAGS bits `syscall` clears: TF, IF, DF, AC. */
const SYSCALL_FLAGS_MASK = 0x4_0700n;

/**
 * The MSRs that send a `syscall` to `entry` in ring 0 (CS = kernel code,
 * SS = kernel data): a program built for Linux then stops with a report
 * instead of running wild.
 */
export function syscallMsrs(entry: number): MsrEntry[] {
  return [
    { index: MSR_STAR, data: BigInt(SELECTOR.kernelCode) << 32n },
    { index: MSR_LSTAR, data: BigInt(entry) },
    { index: MSR_SFMASK, data: SYSCALL_FLAGS_MASK },
  ];
}

/** The program's first registers: everything 0 but these. */
export function entryRegs(values: { rip: bigint; rsp: bigint; rdi: bigint; rsi: bigint; rdx: bigint }): RegsView {
  const regs = new RegsView();
  regs.rip = values.rip;
  regs.rsp = values.rsp;
  regs.rdi = values.rdi;
  regs.rsi = values.rsi;
  regs.rdx = values.rdx;
  regs.rflags = ENTRY_RFLAGS;
  return regs;
}

/** A struct kvm_xcrs that sets XCR0 (nr_xcrs = 1; xcrs[0] = { xcr 0, value }). */
export function xcr0State(value: bigint): Uint8Array {
  const bytes = new Uint8Array(kvmConstants().SIZEOF_KVM_XCRS);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 1, true); // nr_xcrs
  view.setUint32(8, 0, true); // xcrs[0].xcr
  view.setBigUint64(16, value, true); // xcrs[0].value
  return bytes;
}
