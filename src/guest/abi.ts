/**
 * The guest ABI of `plugvisor/guest`: what a program compiled for plugvisor
 * may rely on, in one place. examples/guest/plugvisor.h states the same
 * numbers for C (test/guest-parts.test.ts checks that they agree), and
 * docs/guest.md explains them.
 *
 * Memory (guest physical = guest virtual, identity-mapped from 0):
 *
 *   0x0000_0000  not mapped: a null pointer faults
 *   0x0000_1000  the system area, ring 0 only: GDT, IDT, fault stub, TSS,
 *                ring-0 stack, page tables ({@link SYSTEM})
 *   0x0020_0000  USER_BASE: the program's PT_LOAD segments (gcc's default
 *                link address 0x400000 is above it), then free memory
 *                ("heap") up to the stack's guard page
 *   top          the stack, and above its first frame the argument block
 *
 * Ports (the program runs at CPL 3; the TSS's IO bitmap lets it use every
 * port but the ring-0 stub's report ports):
 */

/** COM1: a 16550 UART, eight registers from here. Bytes written to THR are the program's serial output. */
export const COM1_PORT = 0x3f8;
export const COM1_PORT_COUNT = 8;
/** COM1's interrupt line (GSI / ISA IRQ 4). */
export const COM1_IRQ = 4;

/**
 * isa-debug-exit, as QEMU's `-device isa-debug-exit,iobase=0xf4,iosize=4`: a
 * write of `value` (1, 2 or 4 bytes) ends the program with exit status
 * `(value << 1) | 1` (so it is always odd; use the exit host call for 0).
 */
export const DEBUG_EXIT_PORT = 0xf4;
export const DEBUG_EXIT_PORT_COUNT = 4;

/**
 * The host-call port: `out 0xf8, eax` with the function number in RAX and
 * up to six arguments in RDI, RSI, RDX, RCX, R8, R9 (the System V order);
 * the result comes back in RAX, every other register is kept. A port below
 * 0x100 lets the instruction carry the port itself, so RDX stays free for
 * the third argument.
 */
export const HOST_CALL_PORT = 0xf8;
/** The ring-0 stub reports a CPU exception here (CPL 3 may not use it: the IO bitmap denies it; clear of the host-call port's four bytes). */
export const FAULT_PORT = 0xfc;
/** The ring-0 stub reports an external interrupt's vector here (CPL 3 may not use it either). */
export const INTERRUPT_PORT = 0xfd;
/** The ring-0 stub reports a `syscall` instruction here (LSTAR points at it; CPL 3 may not use the port). */
export const SYSCALL_PORT = 0xfe;

/** Host calls of the runner itself; a plugin's own functions use numbers below this. */
export const BUILTIN_CALL_BASE = 0x8000_0000;
/** exit(status): ends the program with exactly `status` (0..255). */
export const CALL_EXIT = 0x8000_0000;
/** write(stream, pointer, length): 1 = stdout, 2 = stderr; returns `length`. One exit for a whole buffer. */
export const CALL_WRITE = 0x8000_0001;
/** clock(which): 0 = the host's wall clock (ns since the Unix epoch), 1 = its monotonic clock (ns). */
export const CALL_CLOCK = 0x8000_0002;

/** Where the program's segments may start. */
export const USER_BASE = 0x20_0000;
export const PAGE_SIZE = 0x1000;
export const LARGE_PAGE_SIZE = 0x20_0000;

/**
 * The system area (all below {@link USER_BASE}, supervisor-only pages). The
 * TSS with its 8 KiB IO bitmap spans three pages.
 */
export const SYSTEM = Object.freeze({
  gdt: 0x1000,
  idt: 0x2000,
  /** The ring-0 stub: 256 entry points of 16 bytes, then the report code. */
  stub: 0x3000,
  stubSize: 0x2000,
  tss: 0x5000,
  /** Ring-0 stack (for exceptions and interrupts taken from CPL 3): two pages below `ring0StackTop`. */
  ring0StackTop: 0xa000,
  /** Page tables are allocated upwards from here. */
  pageTables: 0xa000,
  end: USER_BASE,
});

/**
 * The program's entry state, as on Linux where it matters: RSP points at
 * argc (16-byte aligned), then argv[0..argc-1], NULL, an empty envp (NULL),
 * an auxiliary vector ending in AT_NULL; the strings lie above. Registers:
 * RDI = argc, RSI = argv, RDX = the {@link INFO} block (Linux has an atexit
 * pointer there), the rest 0; RFLAGS = IF | bit 1 (interrupts only arrive
 * from devices the program enabled).
 */
export const AUX = Object.freeze({ AT_NULL: 0, AT_PAGESZ: 6, AT_ENTRY: 9 });

/** struct pv_info, in the argument block: `u32 magic, u32 size, u64 memory_size, u64 heap_start, u64 heap_end, u64 stack_top`. */
export const INFO = Object.freeze({
  magic: 0,
  size: 4,
  memorySize: 8,
  heapStart: 16,
  heapEnd: 24,
  stackTop: 32,
  sizeof: 40,
});
/** "PVG1", little-endian. */
export const INFO_MAGIC = 0x31475650;
