/**
 * Four-level x86-64 page tables for an identity map of guest memory, with
 * per-page permissions: the caller marks 4 KiB pages (present, writable,
 * user, executable) and {@link buildPageTables} writes the tables, using a
 * 2 MiB page wherever a whole aligned 2 MiB run has one permission (the
 * program's heap and stack then cost the TLB almost nothing) and a 4 KiB
 * page table only where permissions change (the system area, the program's
 * segments, the stack's guard page).
 */
import { LARGE_PAGE_SIZE, PAGE_SIZE } from './abi.js';

/** Permission bits of one 4 KiB page in a {@link PageMap} (not the hardware's layout). */
export const Page = Object.freeze({
  NONE: 0,
  PRESENT: 1,
  WRITABLE: 2,
  USER: 4,
  EXECUTABLE: 8,
});

// Hardware page-table entry bits.
const PTE_PRESENT = 1n;
const PTE_WRITABLE = 2n;
const PTE_USER = 4n;
const PTE_LARGE = 0x80n;
const PTE_NO_EXECUTE = 1n << 63n;
const ENTRIES = 512;
const PAGES_PER_LARGE = LARGE_PAGE_SIZE / PAGE_SIZE;

/** Permissions for every 4 KiB page of guest memory (all NONE at first). */
export class PageMap {
  readonly pages: Uint8Array;

  constructor(readonly memorySize: number) {
    if (memorySize % PAGE_SIZE !== 0) throw new RangeError(`memory size 0x${memorySize.toString(16)} is not a multiple of 4 KiB`);
    this.pages = new Uint8Array(memorySize / PAGE_SIZE);
  }

  /** Sets the permissions of every page that [start, end) touches. */
  set(start: number, end: number, flags: number): void {
    this.pages.fill(flags, Math.floor(start / PAGE_SIZE), Math.ceil(end / PAGE_SIZE));
  }

  /** Adds permissions to every page that [start, end) touches (segments sharing a page get the union). */
  add(start: number, end: number, flags: number): void {
    for (let p = Math.floor(start / PAGE_SIZE); p < Math.ceil(end / PAGE_SIZE); p++) this.pages[p] |= flags;
  }

  flagsAt(address: number): number {
    return this.pages[Math.floor(address / PAGE_SIZE)] ?? Page.NONE;
  }
}

export interface PageTableOptions {
  /** Where the tables go: page-aligned, inside guest memory. */
  base: number;
  /** Where they must end (exclusive). */
  limit: number;
  /** Set NX on pages that are not EXECUTABLE (needs EFER.NXE, i.e. CPUID NX). */
  noExecute: boolean;
}

/** Writes the tables into `memory` (guest physical address = offset) and returns CR3. */
export function buildPageTables(memory: Uint8Array, map: PageMap, options: PageTableOptions): bigint {
  const view = new DataView(memory.buffer, memory.byteOffset, memory.byteLength);
  let next = options.base;
  const allocate = (): number => {
    if (next + PAGE_SIZE > options.limit) {
      throw new RangeError(
        `the page tables do not fit below 0x${options.limit.toString(16)}: too many differently-protected 2 MiB regions`,
      );
    }
    const at = next;
    next += PAGE_SIZE;
    memory.fill(0, at, at + PAGE_SIZE);
    return at;
  };
  const entry = (address: number, flags: number, large: boolean): bigint => {
    let e = BigInt(address) | PTE_PRESENT;
    if (flags & Page.WRITABLE) e |= PTE_WRITABLE;
    if (flags & Page.USER) e |= PTE_USER;
    if (large) e |= PTE_LARGE;
    if (options.noExecute && !(flags & Page.EXECUTABLE)) e |= PTE_NO_EXECUTE;
    return e;
  };
  // Upper levels allow everything: the leaf entries decide.
  const table = (address: number): bigint => BigInt(address) | PTE_PRESENT | PTE_WRITABLE | PTE_USER;

  const pml4 = allocate();
  const largeCount = Math.ceil(map.pages.length / PAGES_PER_LARGE);
  let pdpt = 0;
  let pd = 0;
  for (let large = 0; large < largeCount; large++) {
    const gib = Math.floor(large / ENTRIES);
    if (large % (ENTRIES * ENTRIES) === 0) {
      pdpt = allocate();
      view.setBigUint64(pml4 + 8 * Math.floor(large / (ENTRIES * ENTRIES)), table(pdpt), true);
    }
    if (large % ENTRIES === 0) {
      pd = allocate();
      view.setBigUint64(pdpt + 8 * (gib % ENTRIES), table(pd), true);
    }
    const first = large * PAGES_PER_LARGE;
    const pages = map.pages.subarray(first, first + PAGES_PER_LARGE);
    const flags = pages[0];
    const uniform = pages.length === PAGES_PER_LARGE && pages.every((f) => f === flags);
    const pdSlot = pd + 8 * (large % ENTRIES);
    if (uniform) {
      if (flags & Page.PRESENT) view.setBigUint64(pdSlot, entry(large * LARGE_PAGE_SIZE, flags, true), true);
      continue;
    }
    const pt = allocate();
    view.setBigUint64(pdSlot, table(pt), true);
    pages.forEach((f, i) => {
      if (f & Page.PRESENT) view.setBigUint64(pt + 8 * i, entry((first + i) * PAGE_SIZE, f, false), true);
    });
  }
  return BigInt(pml4);
}
