/**
 * The parts of plugvisor/guest that need no VM: the ring-0 stub against its
 * nasm listing, the C header against abi.ts, page tables (walked as the MMU
 * walks them), the memory image and argument block, the 16550 model, the
 * host calls' memory checks and the fault descriptions.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { assemble } from './support/asm.js';
import { GUEST_HEADER_DIR } from './support/guest-c.js';
import * as abi from '../src/guest/abi.js';
import { buildImage, checkImage, ImageError, type Image } from '../src/guest/image.js';
import { Page, PageMap, buildPageTables } from '../src/guest/paging.js';
import { stubCode, STUB_REPORT_OFFSET, STUB_SYSCALL_OFFSET, VECTORS_WITH_ERROR_CODE } from '../src/guest/stub.js';
import { Uart16550 } from '../src/guest/uart.js';
import { HostCallError, ProgramMemory } from '../src/guest/host-calls.js';
import { describeFault, type GuestFault } from '../src/guest/faults.js';
import type { ElfProgram } from '../src/guest/elf.js';
import { cpuFeatures, userModeSregs } from '../src/guest/cpu.js';
import { REG_NAMES, SregsView } from '../src/plugin/index.js';

test('the ring-0 stub is the code of its nasm listing', () => {
  const source = `
bits 64
%assign v 0
%rep 256
  %if v >= 32
    push rax
    mov al, v
    out ${abi.INTERRUPT_PORT}, al
    pop rax
    iretq
  %else
    %if ${[...VECTORS_WITH_ERROR_CODE].map((n) => `v == ${n}`).join(' || ')}
      push v
    %else
      push 0
      push v
    %endif
    jmp strict near report
  %endif
  align 16, db 0x90
%assign v v+1
%endrep
report:
  out ${abi.FAULT_PORT}, al
halt:
  hlt
  jmp halt
  times ${STUB_SYSCALL_OFFSET - STUB_REPORT_OFFSET - 5} db 0x90
syscall_entry:
  out ${abi.SYSCALL_PORT}, al
halt2:
  hlt
  jmp halt2
`;
  assert.deepEqual(Buffer.from(stubCode()).toString('hex'), Buffer.from(assemble(source)).toString('hex'));
});

test('examples/guest/plugvisor.h states the numbers of abi.ts', () => {
  const header = readFileSync(path.join(GUEST_HEADER_DIR, 'plugvisor.h'), 'utf8');
  const defines = new Map(
    [...header.matchAll(/^#define (PV_[A-Z0-9_]+) (0x[0-9a-f]+|\d+)u?\b/gm)].map((m) => [m[1], Number(m[2])]),
  );
  const expected: Record<string, number> = {
    PV_COM1_PORT: abi.COM1_PORT,
    PV_DEBUG_EXIT_PORT: abi.DEBUG_EXIT_PORT,
    PV_HOST_CALL_PORT: abi.HOST_CALL_PORT,
    PV_CALL_BUILTIN_BASE: abi.BUILTIN_CALL_BASE,
    PV_CALL_EXIT: abi.CALL_EXIT,
    PV_CALL_WRITE: abi.CALL_WRITE,
    PV_CALL_CLOCK: abi.CALL_CLOCK,
    PV_INFO_MAGIC: abi.INFO_MAGIC,
  };
  for (const [name, value] of Object.entries(expected)) assert.equal(defines.get(name), value, name);
  // struct pv_info's fields in order, all u64 after the two u32s.
  const fields = /struct pv_info \{([^}]*)\}/.exec(header)![1].match(/\b(uint\d+_t) (\w+);/g)!;
  assert.deepEqual(fields, [
    'uint32_t magic;',
    'uint32_t size;',
    'uint64_t memory_size;',
    'uint64_t heap_start;',
    'uint64_t heap_end;',
    'uint64_t stack_top;',
  ]);
  assert.equal(abi.INFO.sizeof, 40);
});

/** What the MMU finds for `address`: the leaf entry's permissions, or undefined when not present. */
function translate(memory: Uint8Array, cr3: bigint, address: number): { flags: number; large: boolean } | undefined {
  const view = new DataView(memory.buffer, memory.byteOffset);
  let table = Number(cr3);
  let writable = true;
  let user = true;
  for (const [level, shift] of [
    [4, 39],
    [3, 30],
    [2, 21],
    [1, 12],
  ] as const) {
    const entry = view.getBigUint64(table + 8 * (Math.floor(address / 2 ** shift) % 512), true);
    if ((entry & 1n) === 0n) return undefined;
    writable &&= (entry & 2n) !== 0n;
    user &&= (entry & 4n) !== 0n;
    const leaf = level === 1 || (level === 2 && (entry & 0x80n) !== 0n);
    if (leaf) {
      assert.equal(
        Number(entry & 0x000f_ffff_ffff_f000n) & ~(2 ** shift - 1),
        Math.floor(address / 2 ** shift) * 2 ** shift,
        'identity map',
      );
      const executable = entry >> 63n === 0n;
      return {
        flags: Page.PRESENT | (writable ? Page.WRITABLE : 0) | (user ? Page.USER : 0) | (executable ? Page.EXECUTABLE : 0),
        large: level === 2,
      };
    }
    table = Number(entry & 0x000f_ffff_ffff_f000n);
  }
  return undefined;
}

describe('page tables', () => {
  test('identity-map every page with its permissions, 2 MiB pages where a whole run agrees', () => {
    const size = 12 << 20;
    const memory = new Uint8Array(size);
    const map = new PageMap(size);
    const rw = Page.PRESENT | Page.WRITABLE | Page.USER;
    map.set(0x1000, 0x20_0000, Page.PRESENT | Page.WRITABLE); // supervisor
    map.set(0x40_0000, 0x40_1000, Page.PRESENT | Page.USER); // read-only
    map.set(0x40_1000, 0x40_2000, Page.PRESENT | Page.USER | Page.EXECUTABLE);
    map.set(0x40_2000, 0xa0_0000, rw);
    map.set(0xa0_1000, size, rw); // a hole at 0xa00000
    const cr3 = buildPageTables(memory, map, { base: 0x1000, limit: 0x20_0000, noExecute: true });
    assert.equal(translate(memory, cr3, 0), undefined, 'the null page');
    assert.deepEqual(translate(memory, cr3, 0x5123), { flags: Page.PRESENT | Page.WRITABLE, large: false });
    assert.deepEqual(translate(memory, cr3, 0x40_0010), { flags: Page.PRESENT | Page.USER, large: false });
    assert.deepEqual(translate(memory, cr3, 0x40_1010), { flags: Page.PRESENT | Page.USER | Page.EXECUTABLE, large: false });
    assert.deepEqual(translate(memory, cr3, 0x60_0000), { flags: rw, large: true }, 'a whole aligned 2 MiB run');
    assert.equal(translate(memory, cr3, 0xa0_0800), undefined);
    assert.deepEqual(translate(memory, cr3, 0xa0_1000), { flags: rw, large: false });
    assert.equal(translate(memory, cr3, size + 0x1000), undefined, 'beyond memory');
  });

  test('without NX every present page is executable; too little room is a clear error', () => {
    const map = new PageMap(4 << 20);
    map.set(0x20_0000, 4 << 20, Page.PRESENT | Page.USER);
    const memory = new Uint8Array(4 << 20);
    const cr3 = buildPageTables(memory, map, { base: 0x1000, limit: 0x20_0000, noExecute: false });
    assert.equal(translate(memory, cr3, 0x30_0000)!.flags & Page.EXECUTABLE, Page.EXECUTABLE);
    assert.throws(
      () => buildPageTables(memory, map, { base: 0x1000, limit: 0x3000, noExecute: false }),
      /page tables do not fit/,
    );
  });
});

const PROGRAM: ElfProgram = {
  entry: 0x40_1000,
  segments: [
    {
      address: 0x40_0000,
      memorySize: 0x100,
      data: new Uint8Array([0x7f, 0x45]),
      readable: true,
      writable: false,
      executable: false,
    },
    {
      address: 0x40_1000,
      memorySize: 0x10,
      data: new Uint8Array([0x90, 0xc3]),
      readable: true,
      writable: false,
      executable: true,
    },
    {
      address: 0x40_2000,
      memorySize: 0x3000,
      data: new Uint8Array([1, 2, 3]),
      readable: true,
      writable: true,
      executable: false,
    },
  ],
};

describe('the memory image', () => {
  const memorySize = 16 << 20;
  const build = (args: string[]): { memory: Uint8Array; image: Image } => {
    const memory = new Uint8Array(memorySize);
    return { memory, image: buildImage(memory, PROGRAM, { memorySize, stackSize: 1 << 20, args, noExecute: true }) };
  };

  test('the argument block is laid out as on Linux, with pv_info in RDX', () => {
    const { memory, image } = build(['prog', 'héllo', '']);
    const view = new DataView(memory.buffer);
    const sp = Number(image.stackPointer);
    assert.equal(sp % 16, 0);
    assert.equal(view.getBigUint64(sp, true), 3n, 'argc');
    const cString = (at: number): string => Buffer.from(memory.subarray(at, memory.indexOf(0, at))).toString();
    const argv = [0, 1, 2].map((i) => cString(Number(view.getBigUint64(sp + 8 + 8 * i, true))));
    assert.deepEqual(argv, ['prog', 'héllo', '']);
    assert.equal(image.argv, BigInt(sp + 8));
    assert.equal(view.getBigUint64(sp + 8 * 4, true), 0n, "argv's NULL");
    assert.equal(view.getBigUint64(sp + 8 * 5, true), 0n, 'an empty envp');
    const auxv = [6, 7, 8, 9, 10, 11].map((i) => view.getBigUint64(sp + 8 * i, true));
    assert.deepEqual(auxv, [6n, 4096n, 9n, 0x40_1000n, 0n, 0n], 'AT_PAGESZ, AT_ENTRY, AT_NULL');
    const info = Number(image.info);
    assert.equal(view.getUint32(info, true), abi.INFO_MAGIC);
    assert.equal(view.getUint32(info + 4, true), abi.INFO.sizeof);
    assert.equal(view.getBigUint64(info + abi.INFO.memorySize, true), BigInt(memorySize));
    assert.equal(view.getBigUint64(info + abi.INFO.heapStart, true), 0x40_5000n, 'the page after the last segment');
    assert.equal(view.getBigUint64(info + abi.INFO.heapEnd, true), BigInt(memorySize - (1 << 20) - 4096), 'the guard page');
    assert.equal(view.getBigUint64(info + abi.INFO.stackTop, true), BigInt(memorySize));
  });

  test("segments land with their bytes and permissions; the system area is the supervisor's", () => {
    const { memory, image } = build(['prog']);
    assert.deepEqual([...memory.subarray(0x40_2000, 0x40_2005)], [1, 2, 3, 0, 0]);
    assert.deepEqual([...memory.subarray(0x40_1000, 0x40_1002)], [0x90, 0xc3]);
    const at = (address: number) => translate(memory, image.cr3, address)?.flags;
    assert.equal(at(0x40_0000), Page.PRESENT | Page.USER);
    assert.equal(at(0x40_1000), Page.PRESENT | Page.USER | Page.EXECUTABLE);
    assert.equal(at(0x40_2000), Page.PRESENT | Page.USER | Page.WRITABLE);
    assert.equal(at(image.heapStart), Page.PRESENT | Page.USER | Page.WRITABLE);
    assert.equal(at(image.heapEnd), undefined, 'the stack guard page');
    assert.equal(at(abi.SYSTEM.idt), Page.PRESENT | Page.WRITABLE);
    assert.equal(at(abi.SYSTEM.stub), Page.PRESENT | Page.EXECUTABLE);
    assert.equal(at(0), undefined);
  });

  test('what does not fit is an ImageError that says what to change', () => {
    const check =
      (program: ElfProgram, memory: number, args = ['p']) =>
      () =>
        checkImage(program, { memorySize: memory, stackSize: 1 << 20, args });
    assert.throws(
      check(PROGRAM, 4 << 20),
      (e) => e instanceof ImageError && /does not fit below the stack .*give it more memory/.test(e.message),
    );
    const low = { ...PROGRAM, segments: [{ ...PROGRAM.segments[0], address: 0x10_0000 }] };
    assert.throws(check(low, memorySize), /below 0x200000 where plugvisor keeps its own tables: link it at 0x400000/);
    assert.throws(check(PROGRAM, memorySize, ['x'.repeat(1 << 20)]), /arguments take \d+ bytes, too many for a 1024 KiB stack/);
    assert.throws(check(PROGRAM, memorySize, ['a\0b']), /contains a NUL character/);
    assert.throws(check(PROGRAM, memorySize + 1), /multiple of 4 KiB/);
  });
});

describe('the 16550 UART', () => {
  const make = () => {
    const out: number[] = [];
    const levels: boolean[] = [];
    const uart = new Uart16550((b) => out.push(b), { set: (level) => levels.push(level) });
    return { uart, out, levels };
  };

  test('transmits, reports an always-empty transmitter, latches the divisor and loops back', () => {
    const { uart, out } = make();
    uart.write(0, 0x41);
    assert.deepEqual(out, [0x41]);
    assert.equal(uart.read(5), 0x60, 'LSR: THRE | TEMT, no data');
    uart.write(3, 0x83); // DLAB
    uart.write(0, 0x01);
    uart.write(1, 0x00);
    assert.equal(uart.read(0), 0x01, 'DLL');
    uart.write(3, 0x03);
    uart.write(7, 0x5a);
    assert.equal(uart.read(7), 0x5a, 'scratch');
    uart.write(4, 0x10 | 0x03); // loopback, DTR, RTS
    uart.write(0, 0x42);
    assert.deepEqual(out, [0x41], 'loopback does not transmit');
    assert.equal(uart.read(5) & 1, 1, 'the byte came back');
    assert.equal(uart.read(0), 0x42);
    assert.equal(uart.read(6), 0x30, 'MSR: DSR and CTS from DTR and RTS');
  });

  test('interrupts: THRE and received data by priority, gated by OUT2', () => {
    const { uart, levels } = make();
    uart.write(1, 0x02); // THRE interrupt, but OUT2 is clear
    assert.deepEqual(levels, []);
    assert.equal(uart.read(2), 0x02, 'IIR: THR empty');
    assert.equal(uart.read(2), 0x01, 'reading IIR cleared it');
    uart.write(4, 0x08); // OUT2
    uart.write(0, 0x20); // the byte is sent at once: THRE again
    assert.deepEqual(levels, [true]);
    uart.write(1, 0x03);
    uart.receive(new Uint8Array([7]));
    assert.equal(uart.read(2), 0x04, 'received data outranks THRE');
    assert.equal(uart.read(0), 7);
    assert.equal(uart.read(2), 0x02);
    assert.equal(uart.read(2), 0x01);
    assert.deepEqual(levels, [true, false], 'lowered once nothing is pending');
    uart.write(2, 0x07); // FIFO on, clear
    assert.equal(uart.read(2), 0xc1, 'FIFO bits in IIR');
    uart.write(0, 0x21);
    uart.resample();
    assert.equal(levels.at(-1), true, 'still pending after an acknowledgement: raised again');
  });
});

test("host calls reach only the program's own memory", () => {
  const memory = new Uint8Array(16 << 20);
  const image = buildImage(memory, PROGRAM, { memorySize: memory.length, stackSize: 1 << 20, args: ['p'], noExecute: true });
  const pm = new ProgramMemory(memory, image.pages);
  pm.write(0x40_2000, new Uint8Array([9, 8]));
  assert.deepEqual([...pm.read(0x40_2000n, 2n)], [9, 8]);
  pm.writeU64(image.heapStart, 0x1122334455667788n);
  assert.equal(pm.readU64(BigInt(image.heapStart)), 0x1122334455667788n);
  memory.set(Buffer.from('hi\0'), image.heapStart + 16);
  assert.equal(pm.readCString(image.heapStart + 16), 'hi');
  assert.equal(pm.readString(0x40_0000, 2), '\x7fE');
  assert.throws(
    () => pm.read(abi.SYSTEM.idt, 16),
    (e) => e instanceof HostCallError && /not the program's memory/.test(e.message),
  );
  assert.throws(() => pm.write(0x40_1000, new Uint8Array(1)), /not writable by the program/);
  assert.throws(() => pm.read(image.heapEnd, 1), /not readable by the program/, 'the guard page');
  assert.throws(() => pm.read(memory.length - 4, 8), /not the program's memory/);
  memory.fill(0x41, image.heapStart + 32, image.heapStart + 64);
  assert.throws(() => pm.readCString(image.heapStart + 32, 8), /no NUL within 8 bytes/);
});

test('faults are described with their cause', () => {
  const registers = Object.fromEntries(REG_NAMES.map((r) => [r, 0n])) as GuestFault['registers'];
  const fault = (f: Partial<GuestFault>): GuestFault => ({
    vector: 14,
    errorCode: 0n,
    rip: 0x40_1234n,
    cr2: 0n,
    rsp: 0n,
    rflags: 0n,
    cs: 0x1b,
    registers,
    ...f,
  });
  assert.equal(
    describeFault(fault({ errorCode: 4n, region: 'null page' })),
    'guest fault: #PF (page fault, vector 14) at rip 0x401234, cr2 0x0, error 0x4: a user-mode read of a not-present page (a null pointer dereference)',
  );
  assert.match(
    describeFault(fault({ errorCode: 7n, cr2: 0x40_2000n, pageFlags: Page.PRESENT | Page.USER })),
    /error 0x7: a user-mode write of a read-only page$/,
  );
  assert.match(
    describeFault(fault({ errorCode: 0x15n, pageFlags: Page.PRESENT | Page.USER })),
    /a user-mode instruction fetch of a no-execute page$/,
  );
  assert.match(
    describeFault(fault({ errorCode: 5n, cr2: 0x5000n, pageFlags: Page.PRESENT, region: 'system area' })),
    /a user-mode read of a page the program may not access \(plugvisor's system area, below 0x200000\)$/,
  );
  assert.equal(
    describeFault(fault({ vector: 13, errorCode: 0n })),
    'guest fault: #GP (general protection, vector 13) at rip 0x401234, error 0x0',
  );
  assert.match(
    describeFault(fault({ vector: 6, code: new Uint8Array([0xcd, 0x80]) })),
    /\(the program made a 32-bit Linux system call \(int 0x80\)/,
  );
  assert.match(describeFault(fault({ vector: 9 })), /^guest fault: vector 9 \(reserved exception, vector 9\)/);
});

test('the CPU features come from CPUID, and the sregs put the VCPU at CPL 3 in long mode', () => {
  const entry = (fn: number, regs: { eax?: number; ebx?: number; ecx?: number; edx?: number }, index = 0) => ({
    function: fn,
    index,
    hasIndex: fn === 7 || fn === 0xd,
    eax: 0,
    ebx: 0,
    ecx: 0,
    edx: 0,
    ...regs,
  });
  const sse = cpuFeatures([entry(1, { ecx: 0 }), entry(0x8000_0001, { edx: 1 << 20 })]);
  assert.deepEqual(sse, { noExecute: true, xsave: false, fsgsbase: false, xcr0: 0n });
  const avx = cpuFeatures([entry(1, { ecx: (1 << 26) | (1 << 28) }), entry(0xd, { eax: 0x7 }), entry(7, { ebx: 1 })]);
  assert.deepEqual(avx, { noExecute: false, xsave: true, fsgsbase: true, xcr0: 0x7n });
  const avx512 = cpuFeatures([entry(1, { ecx: (1 << 26) | (1 << 28) }), entry(0xd, { eax: 0xe7 }), entry(7, { ebx: 1 << 16 })]);
  assert.equal(avx512.xcr0, 0xe7n);
  const noAvx = cpuFeatures([entry(1, { ecx: 1 << 26 }), entry(0xd, { eax: 0xe7 }), entry(7, { ebx: 1 << 16 })]);
  assert.equal(noAvx.xcr0, 0x3n, 'AVX-512 states need AVX');

  const sregs = new SregsView();
  userModeSregs(sregs, { gdt: 0x1000, idt: 0x2000, tss: 0x5000, cr3: 0xa000n }, avx);
  assert.equal(sregs.cs.selector, 0x1b);
  assert.equal(sregs.cs.dpl, 3);
  assert.equal(sregs.cs.l, 1);
  assert.equal(sregs.ss.selector, 0x23);
  assert.equal(sregs.ss.dpl, 3);
  assert.equal(sregs.tr.base, 0x5000n);
  assert.equal(sregs.cr3, 0xa000n);
  assert.equal(sregs.cr0 & 0x8000_0007n, 0x8000_0003n, 'PG, PE and MP set, EM clear');
  assert.equal(
    sregs.cr4,
    (1n << 5n) | (1n << 9n) | (1n << 10n) | (1n << 16n) | (1n << 18n),
    'PAE, OSFXSR, OSXMMEXCPT, FSGSBASE, OSXSAVE',
  );
  assert.equal(sregs.efer, 0x501n, 'SCE, LME, LMA; no NXE without CPUID NX');
});
