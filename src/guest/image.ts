/**
 * Lays a program out in guest memory: the system area (descriptor tables,
 * the ring-0 stub, page tables), the program's segments with their
 * permissions, free memory, the stack with a guard page below it, and the
 * argument block on top (layout in abi.ts). Pure: it writes bytes into
 * `memory` and says where things are.
 */
import { AUX, FAULT_PORT, INFO, INFO_MAGIC, INTERRUPT_PORT, PAGE_SIZE, SYSCALL_PORT, SYSTEM, USER_BASE } from './abi.js';
import { writeGdt, writeIdt, writeTss } from './descriptors.js';
import type { ElfProgram } from './elf.js';
import { Page, PageMap, buildPageTables } from './paging.js';
import { stubCode, stubEntry, STUB_SIZE } from './stub.js';

/** 64 MiB: room for a program, its data and a stack; the CLI's --memory default too. */
export const DEFAULT_MEMORY_SIZE = 64 << 20;
/** Memory stays below 3 GiB, clear of the local APIC and IOAPIC (0xfec00000 up) and the host's TSS pages. */
export const MAX_MEMORY_SIZE = 3 * 2 ** 30;
export const DEFAULT_STACK_SIZE = 1 << 20;
/** What the stack must keep free below the argument block. */
const MIN_STACK_LEFT = 16 * PAGE_SIZE;

export interface ImageOptions {
  memorySize: number;
  stackSize: number;
  /** argv, argv[0] included. */
  args: readonly string[];
  /** Mark data pages no-execute (EFER.NXE is set). */
  noExecute: boolean;
}

/** Where the program starts and what it was given. */
export interface Image {
  cr3: bigint;
  entry: bigint;
  /** RSP at entry: the address of argc. */
  stackPointer: bigint;
  argc: number;
  argv: bigint;
  info: bigint;
  heapStart: number;
  heapEnd: number;
  stackTop: number;
  /** Permissions of every page, for telling a program's fault apart (e.g. a write to a read-only page). */
  pages: PageMap;
}

/** A program that does not fit the memory or the layout. */
export class ImageError extends Error {
  override name = 'ImageError';
}

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;
const alignUp = (n: number, to: number): number => Math.ceil(n / to) * to;
const alignDown = (n: number, to: number): number => Math.floor(n / to) * to;

/** Where the pieces of a program's memory go, worked out before anything is written. */
interface Layout {
  heapStart: number;
  heapEnd: number;
  stackTop: number;
  stackBottom: number;
  info: number;
  strings: Uint8Array[];
  /** Where the strings start (they run up to `info`). */
  stringsAt: number;
  stackPointer: number;
}

/**
 * Checks that `program` and its arguments fit `options` and says where
 * everything goes; throws an ImageError that says what to change. Cheap: a
 * CLI can call it before it starts a VM.
 */
export function checkImage(program: ElfProgram, options: Omit<ImageOptions, 'noExecute'>): void {
  layOut(program, options);
}

function layOut(program: ElfProgram, options: Omit<ImageOptions, 'noExecute'>): Layout {
  const { memorySize, stackSize } = options;
  if (!Number.isSafeInteger(memorySize) || memorySize % PAGE_SIZE !== 0 || memorySize > MAX_MEMORY_SIZE) {
    throw new ImageError(`the memory size must be a multiple of 4 KiB up to ${MAX_MEMORY_SIZE >> 20} MiB (got ${memorySize})`);
  }
  if (!Number.isSafeInteger(stackSize) || stackSize % PAGE_SIZE !== 0 || stackSize < MIN_STACK_LEFT * 2) {
    throw new ImageError(
      `the stack size must be a multiple of 4 KiB and at least ${(MIN_STACK_LEFT * 2) / 1024} KiB (got ${stackSize})`,
    );
  }
  const stackTop = memorySize;
  const stackBottom = stackTop - stackSize;
  const guard = stackBottom - PAGE_SIZE;
  if (guard < USER_BASE) {
    throw new ImageError(`${memorySize >> 20} MiB of memory leaves no room for a program beside a ${stackSize >> 10} KiB stack`);
  }
  let programEnd = USER_BASE;
  for (const s of program.segments) {
    const end = s.address + s.memorySize;
    if (s.address < USER_BASE) {
      throw new ImageError(
        `the program has a segment at ${hex(s.address)}, below ${hex(USER_BASE)} where plugvisor keeps its own ` +
          "tables: link it at 0x400000 (the linker's default; do not move -Ttext below it)",
      );
    }
    if (end > guard) {
      throw new ImageError(
        `the program's segment ${hex(s.address)}..${hex(end)} does not fit below the stack ` +
          `(memory ${memorySize >> 20} MiB, stack ${stackSize >> 10} KiB from ${hex(stackBottom)}): give it more memory`,
      );
    }
    programEnd = Math.max(programEnd, end);
  }
  const encoder = new TextEncoder();
  const strings = options.args.map((arg) => {
    if (arg.includes('\0')) throw new ImageError(`a program argument contains a NUL character: ${JSON.stringify(arg)}`);
    return encoder.encode(`${arg}\0`);
  });
  const info = stackTop - alignUp(INFO.sizeof, 16);
  const stringsAt = info - strings.reduce((n, s) => n + s.length, 0);
  const words = 1 + strings.length + 1 + 1 + 2 * auxVector(program).length;
  const stackPointer = alignDown(stringsAt - words * 8, 16);
  if (stackPointer - MIN_STACK_LEFT < stackBottom) {
    throw new ImageError(`the program's arguments take ${info - stringsAt} bytes, too many for a ${stackSize >> 10} KiB stack`);
  }
  return {
    heapStart: alignUp(programEnd, PAGE_SIZE),
    heapEnd: guard,
    stackTop,
    stackBottom,
    info,
    strings,
    stringsAt,
    stackPointer,
  };
}

function auxVector(program: ElfProgram): (readonly [number, number])[] {
  return [
    [AUX.AT_PAGESZ, PAGE_SIZE],
    [AUX.AT_ENTRY, program.entry],
    [AUX.AT_NULL, 0],
  ];
}

/** Writes the whole image into `memory`, which must be zero-filled (a new GuestMemory is) and at least `options.memorySize` bytes. */
export function buildImage(memory: Uint8Array, program: ElfProgram, options: ImageOptions): Image {
  const layout = layOut(program, options);
  const { memorySize } = options;
  if (memory.length < memorySize) throw new RangeError(`memory is ${memory.length} bytes, the image wants ${memorySize}`);
  const view = new DataView(memory.buffer, memory.byteOffset, memorySize);
  const pages = new PageMap(memorySize);

  // The system area, ring 0 only.
  writeGdt(view, SYSTEM.gdt, SYSTEM.tss);
  writeIdt(view, SYSTEM.idt, (v) => stubEntry(SYSTEM.stub, v), [3]);
  writeTss(view, SYSTEM.tss, SYSTEM.ring0StackTop, [FAULT_PORT, INTERRUPT_PORT, SYSCALL_PORT]);
  memory.set(stubCode(), SYSTEM.stub);
  pages.set(SYSTEM.gdt, SYSTEM.end, Page.PRESENT | Page.WRITABLE);
  pages.set(SYSTEM.stub, SYSTEM.stub + STUB_SIZE, Page.PRESENT | Page.EXECUTABLE);

  // The program, free memory and the stack (the guard page below it stays unmapped).
  for (const s of program.segments) {
    memory.set(s.data, s.address); // the rest (.bss) is zero already: not touched, so not allocated before the program uses it
    pages.add(
      s.address,
      s.address + s.memorySize,
      Page.PRESENT | Page.USER | (s.writable ? Page.WRITABLE : 0) | (s.executable ? Page.EXECUTABLE : 0),
    );
  }
  pages.set(layout.heapStart, layout.heapEnd, Page.PRESENT | Page.WRITABLE | Page.USER);
  pages.set(layout.stackBottom, layout.stackTop, Page.PRESENT | Page.WRITABLE | Page.USER);

  // The argument block: pv_info on top, the strings below it, the vectors at RSP.
  const { info } = layout;
  view.setUint32(info + INFO.magic, INFO_MAGIC, true);
  view.setUint32(info + INFO.size, INFO.sizeof, true);
  view.setBigUint64(info + INFO.memorySize, BigInt(memorySize), true);
  view.setBigUint64(info + INFO.heapStart, BigInt(layout.heapStart), true);
  view.setBigUint64(info + INFO.heapEnd, BigInt(layout.heapEnd), true);
  view.setBigUint64(info + INFO.stackTop, BigInt(layout.stackTop), true);
  let word = layout.stackPointer;
  const push = (value: number): void => {
    view.setBigUint64(word, BigInt(value), true);
    word += 8;
  };
  push(layout.strings.length);
  let at = layout.stringsAt;
  for (const s of layout.strings) {
    memory.set(s, at);
    push(at);
    at += s.length;
  }
  push(0); // argv's NULL
  push(0); // envp: empty
  for (const [key, value] of auxVector(program)) {
    push(key);
    push(value);
  }

  const cr3 = buildPageTables(memory, pages, { base: SYSTEM.pageTables, limit: SYSTEM.end, noExecute: options.noExecute });
  return {
    cr3,
    entry: BigInt(program.entry),
    stackPointer: BigInt(layout.stackPointer),
    argc: layout.strings.length,
    argv: BigInt(layout.stackPointer + 8),
    info: BigInt(info),
    heapStart: layout.heapStart,
    heapEnd: layout.heapEnd,
    stackTop: layout.stackTop,
    pages,
  };
}
