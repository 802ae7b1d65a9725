/**
 * A CPU exception the program took, as the ring-0 stub reported it, and its
 * description for a person: "guest fault: #PF (page fault, vector 14) at
 * rip 0x401234, cr2 0x0, error 0x4: a user-mode read of a not-present page
 * (a null pointer dereference)".
 */
import { REG_NAMES, type RegName } from '../plugin/index.js';
import { Page } from './paging.js';

/** Where a faulting address lies, when that explains the fault. */
export type FaultRegion = 'null page' | 'system area' | 'stack guard page' | 'beyond memory';

export interface GuestFault {
  vector: number;
  /** The CPU's error code (0 for exceptions without one). */
  errorCode: bigint;
  rip: bigint;
  /** The faulting address of a #PF (CR2). */
  cr2: bigint;
  /** The program's RSP, RFLAGS and CS at the fault, from the exception frame. */
  rsp: bigint;
  rflags: bigint;
  cs: number;
  /** The program's general registers at the fault (RIP, RSP and RFLAGS as above). */
  registers: Record<RegName, bigint>;
  /** The bytes at RIP, when they are the program's (for hints). */
  code?: Uint8Array;
  /** For a #PF: the permissions of the page at CR2 (see Page) and where it lies. */
  pageFlags?: number;
  region?: FaultRegion;
  /**
   * Set when the program executed `syscall` (reported as the #UD a CPU
   * without system calls raises): the system call number from RAX. RCX and
   * R11 then hold what `syscall` put there, not the program's values.
   */
  syscall?: bigint;
}

const EXCEPTIONS: Record<number, [string, string]> = {
  0: ['#DE', 'divide error'],
  1: ['#DB', 'debug'],
  2: ['NMI', 'non-maskable interrupt'],
  3: ['#BP', 'breakpoint'],
  4: ['#OF', 'overflow'],
  5: ['#BR', 'bound range exceeded'],
  6: ['#UD', 'invalid opcode'],
  7: ['#NM', 'device not available'],
  8: ['#DF', 'double fault'],
  10: ['#TS', 'invalid TSS'],
  11: ['#NP', 'segment not present'],
  12: ['#SS', 'stack-segment fault'],
  13: ['#GP', 'general protection'],
  14: ['#PF', 'page fault'],
  16: ['#MF', 'x87 floating-point error'],
  17: ['#AC', 'alignment check'],
  18: ['#MC', 'machine check'],
  19: ['#XM', 'SIMD floating-point exception'],
  20: ['#VE', 'virtualization exception'],
  21: ['#CP', 'control protection'],
};

/** "#PF" for 14; "vector 9" for the reserved ones. */
export function exceptionMnemonic(vector: number): string {
  return EXCEPTIONS[vector]?.[0] ?? `vector ${vector}`;
}

const ERROR_PRESENT = 1n;
const ERROR_WRITE = 2n;
const ERROR_USER = 4n;
const ERROR_RESERVED = 8n;
const ERROR_FETCH = 16n;

function pageFaultCause(fault: GuestFault): string {
  const error = fault.errorCode;
  const mode = error & ERROR_USER ? 'user-mode' : 'supervisor-mode';
  const access = error & ERROR_FETCH ? 'instruction fetch' : error & ERROR_WRITE ? 'write' : 'read';
  if (error & ERROR_RESERVED) return `a ${mode} ${access} hit a reserved bit in a page-table entry`;
  let target = 'a not-present page';
  if (error & ERROR_PRESENT) {
    const flags = fault.pageFlags ?? Page.NONE;
    if (!(flags & Page.USER)) target = 'a page the program may not access';
    else if (error & ERROR_FETCH) target = 'a no-execute page';
    else if (error & ERROR_WRITE) target = 'a read-only page';
    else target = 'a protected page';
  }
  return `a ${mode} ${access} of ${target}`;
}

const REGION_NOTES: Record<FaultRegion, string> = {
  'null page': 'a null pointer dereference',
  'system area': "plugvisor's system area, below 0x200000",
  'stack guard page': 'the page below the stack: a stack overflow?',
  'beyond memory': 'beyond the end of guest memory',
};

/** Hints for faults that usually mean the program was built for an operating system. */
function hint(fault: GuestFault): string | undefined {
  if (fault.syscall !== undefined) {
    return (
      `the program made Linux system call ${fault.syscall} (syscall); plugvisor programs have no kernel: ` +
      'use COM1 or the host calls of examples/guest/plugvisor.h'
    );
  }
  if (fault.code?.[0] === 0xcd && fault.code[1] === 0x80)
    return 'the program made a 32-bit Linux system call (int 0x80); plugvisor programs have no kernel';
  if (fault.vector === 14 && fault.region !== undefined) return REGION_NOTES[fault.region];
  return undefined;
}

const hex = (n: bigint | number): string => `0x${n.toString(16)}`;

/** The one-line description of a fault. */
export function describeFault(fault: GuestFault): string {
  const [mnemonic, name] = EXCEPTIONS[fault.vector] ?? [`vector ${fault.vector}`, 'reserved exception'];
  let text = `guest fault: ${mnemonic} (${name}, vector ${fault.vector}) at rip ${hex(fault.rip)}`;
  if (fault.vector === 14) text += `, cr2 ${hex(fault.cr2)}`;
  text += `, error ${hex(fault.errorCode)}`;
  if (fault.vector === 14) text += `: ${pageFaultCause(fault)}`;
  const why = hint(fault);
  return why === undefined ? text : `${text} (${why})`;
}

/** The registers at the fault, four to a line, for a verbose report. */
export function dumpRegisters(fault: GuestFault): string {
  const cells = REG_NAMES.map((name) => `${name.padStart(6)} ${fault.registers[name].toString(16).padStart(16, '0')}`);
  const lines: string[] = [];
  for (let i = 0; i < cells.length; i += 4) lines.push(cells.slice(i, i + 4).join('  '));
  return lines.join('\n');
}
