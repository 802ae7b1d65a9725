/**
 * The x86-64 descriptor tables a 64-bit user-mode program needs under it:
 * the GDT (ring-0 and ring-3 code and data, the TSS), the TSS (the ring-0
 * stack for exceptions and interrupts taken from CPL 3, and the IO
 * permission bitmap) and the IDT (every vector to the ring-0 stub).
 *
 * They are written into guest memory because the CPU reads them from there
 * on every exception (IDT, TSS, GDT) and every IRETQ (GDT); the plugin also
 * loads the same values into the VCPU's segment registers (see cpu.ts).
 */
import { PAGE_SIZE } from './abi.js';

/** GDT selectors (index << 3 | RPL). */
export const SELECTOR = Object.freeze({
  kernelCode: 0x08,
  kernelData: 0x10,
  userCode: 0x18 | 3,
  userData: 0x20 | 3,
  tss: 0x28,
});

/** Segment descriptor types (the 4-bit type field) and the TSS's. */
export const SEGMENT_TYPE = Object.freeze({
  /** Code, execute/read, accessed. */
  code: 0xb,
  /** Data, read/write, accessed. */
  data: 0x3,
  /** 64-bit TSS, busy (what the CPU expects in TR once it is loaded). */
  busyTss: 0xb,
});

/** The TSS: 0x68 bytes, then the IO bitmap (one bit per port, 1 = denied), then the 0xff byte the CPU may read past its end. */
export const TSS_SIZE = 0x68;
const TSS_RSP0 = 0x04;
const TSS_IOMAP_BASE = 0x66;
const IO_BITMAP_BYTES = 0x10000 / 8;
/** The TSS limit (its last byte), bitmap and trailing byte included. */
export const TSS_LIMIT = TSS_SIZE + IO_BITMAP_BYTES;

/** GDT limit: five 8-byte descriptors and the 16-byte TSS descriptor, minus one. */
export const GDT_LIMIT = 7 * 8 - 1;
/** IDT limit: 256 16-byte gates, minus one. */
export const IDT_LIMIT = 256 * 16 - 1;

/** A code or data descriptor: base 0, limit 4 GiB (ignored in 64-bit mode, kept for the hidden parts). */
function flatDescriptor(type: number, dpl: number, longMode: boolean): bigint {
  const access = 0x80n | (BigInt(dpl) << 5n) | 0x10n | BigInt(type); // present | DPL | code/data | type
  const flags = longMode ? 0xan : 0xcn; // G, and L (64-bit code) or D/B (32-bit data)
  return 0xffffn | (access << 40n) | (0xfn << 48n) | (flags << 52n);
}

/** Writes the GDT at `at` for a TSS at `tss`. */
export function writeGdt(view: DataView, at: number, tss: number): void {
  for (let i = 0; i < GDT_LIMIT + 1; i += 8) view.setBigUint64(at + i, 0n, true);
  view.setBigUint64(at + SELECTOR.kernelCode, flatDescriptor(SEGMENT_TYPE.code, 0, true), true);
  view.setBigUint64(at + SELECTOR.kernelData, flatDescriptor(SEGMENT_TYPE.data, 0, false), true);
  view.setBigUint64(at + (SELECTOR.userCode & ~3), flatDescriptor(SEGMENT_TYPE.code, 3, true), true);
  view.setBigUint64(at + (SELECTOR.userData & ~3), flatDescriptor(SEGMENT_TYPE.data, 3, false), true);
  // A 16-byte system descriptor: limit, base, present | type, then base bits 32..63.
  const base = BigInt(tss);
  const limit = BigInt(TSS_LIMIT);
  const low =
    (limit & 0xffffn) |
    ((base & 0xff_ffffn) << 16n) |
    ((0x80n | BigInt(SEGMENT_TYPE.busyTss)) << 40n) |
    (((limit >> 16n) & 0xfn) << 48n) |
    (((base >> 24n) & 0xffn) << 56n);
  view.setBigUint64(at + SELECTOR.tss, low, true);
  view.setBigUint64(at + SELECTOR.tss + 8, base >> 32n, true);
}

/**
 * Writes the TSS at `at`: RSP0 = `ring0StackTop`, and an IO bitmap that
 * allows every port but `deniedPorts` to CPL 3. (The bitmap rather than
 * RFLAGS.IOPL = 3: IOPL would also let the program run CLI/STI, and this
 * machine's KVM does not honour IOPL for port IO at CPL 3.)
 */
export function writeTss(view: DataView, at: number, ring0StackTop: number, deniedPorts: readonly number[]): void {
  for (let i = 0; i <= TSS_LIMIT; i++) view.setUint8(at + i, 0);
  view.setBigUint64(at + TSS_RSP0, BigInt(ring0StackTop), true);
  view.setUint16(at + TSS_IOMAP_BASE, TSS_SIZE, true);
  for (const port of deniedPorts) {
    const byte = at + TSS_SIZE + (port >> 3);
    view.setUint8(byte, view.getUint8(byte) | (1 << (port & 7)));
  }
  view.setUint8(at + TSS_LIMIT, 0xff);
}

/**
 * Writes the IDT at `at`: vector v → a 64-bit interrupt gate to
 * `entry(v)` in the ring-0 code segment. Gates are DPL 0 (a program's
 * `int N` is a #GP) except `userVectors` (DPL 3: `int3` reports a #BP).
 */
export function writeIdt(view: DataView, at: number, entry: (vector: number) => number, userVectors: readonly number[]): void {
  for (let v = 0; v < 256; v++) {
    const handler = entry(v);
    const dpl = userVectors.includes(v) ? 3 : 0;
    const gate = at + v * 16;
    view.setUint16(gate, handler & 0xffff, true);
    view.setUint16(gate + 2, SELECTOR.kernelCode, true);
    view.setUint8(gate + 4, 0); // IST 0: the TSS's RSP0
    view.setUint8(gate + 5, 0x80 | (dpl << 5) | 0xe); // present | DPL | 64-bit interrupt gate
    view.setUint16(gate + 6, (handler >>> 16) & 0xffff, true);
    view.setUint32(gate + 8, Math.floor(handler / 2 ** 32), true);
    view.setUint32(gate + 12, 0, true);
  }
}

/** Pages the TSS spans. */
export const TSS_PAGES = Math.ceil((TSS_LIMIT + 1) / PAGE_SIZE);
