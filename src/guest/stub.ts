/**
 * The ring-0 stub: the only code that runs at CPL 0 (which this machine's
 * KVM emulates ~3000x slower than CPL 3, so it must do next to nothing).
 * Every IDT vector has a 16-byte entry point:
 *
 * Exceptions (vectors 0..31) stop the program and tell the plugin:
 *
 *   entry v (no error code):  6a 00        push 0        ; the error code the CPU did not push
 *                             6a vv        push v
 *                             e9 rel32     jmp report
 *   entry v (error code):     6a vv        push v
 *                             e9 rel32     jmp report
 *   report (at +0x1000):      e6 fc        out 0xfc, al  ; FAULT_PORT: the plugin reads the frame
 *                             f4           hlt           ; never resumed; if it were, stay here
 *                             eb fd        jmp hlt
 *
 * so at the `out` RSP points at {@link FAULT_FRAME}: vector, error code,
 * then what the CPU pushed (RIP, CS, RFLAGS, RSP, SS), and every general
 * register still holds the program's value. CR2 is read from the sregs.
 *
 * External interrupts (vectors 32..255) are reported and the program goes on:
 *
 *   entry v:                  50           push rax
 *                             b0 vv        mov al, v
 *                             e6 fd        out 0xfd, al  ; INTERRUPT_PORT: the vector is the data
 *                             58           pop rax
 *                             48 cf        iretq
 *
 * A `syscall` (LSTAR points here: programs built for Linux make system
 * calls, and this machine's KVM runs `syscall` even with EFER.SCE clear,
 * so it gets a handler that reports it rather than a jump to address 0):
 *
 *   syscall (at +0x1008):     e6 fe        out 0xfe, al  ; SYSCALL_PORT: RCX holds the return RIP, RAX the number
 *                             f4           hlt
 *                             eb fd        jmp hlt
 *
 * (Vectors >= 0x80 are written as `push imm8` would sign-extend them; they
 * only occur in the interrupt form, which uses `mov al, imm8`.) The test
 * test/guest-stub.test.ts assembles this listing with nasm and compares.
 */
import { FAULT_PORT, INTERRUPT_PORT, SYSCALL_PORT } from './abi.js';

/** Bytes per entry point. */
export const STUB_ENTRY_SIZE = 16;
/** Offset of the report code from the stub's start. */
export const STUB_REPORT_OFFSET = 256 * STUB_ENTRY_SIZE;
/** Offset of the `syscall` entry (LSTAR) from the stub's start. */
export const STUB_SYSCALL_OFFSET = STUB_REPORT_OFFSET + 8;
/** Bytes the stub occupies. */
export const STUB_SIZE = STUB_SYSCALL_OFFSET + 5;

/** The exceptions for which the CPU pushes an error code. */
export const VECTORS_WITH_ERROR_CODE: ReadonlySet<number> = new Set([8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
/** The first vector that is an external interrupt rather than an exception. */
export const FIRST_INTERRUPT_VECTOR = 32;

/** Offsets (from RSP at the fault report) of the words the stub and the CPU pushed. */
export const FAULT_FRAME = Object.freeze({ vector: 0, errorCode: 8, rip: 16, cs: 24, rflags: 32, rsp: 40, ss: 48, size: 56 });

/** The entry point of `vector` for a stub at `base`. */
export function stubEntry(base: number, vector: number): number {
  return base + vector * STUB_ENTRY_SIZE;
}

/** The stub's machine code for a stub loaded at any address (it is position-independent). */
export function stubCode(): Uint8Array {
  const code = new Uint8Array(STUB_SIZE).fill(0x90); // nop padding between entries
  for (let v = 0; v < 256; v++) {
    const at = v * STUB_ENTRY_SIZE;
    let bytes: number[];
    if (v >= FIRST_INTERRUPT_VECTOR) {
      bytes = [0x50, 0xb0, v, 0xe6, INTERRUPT_PORT, 0x58, 0x48, 0xcf];
    } else {
      const head = VECTORS_WITH_ERROR_CODE.has(v) ? [0x6a, v] : [0x6a, 0x00, 0x6a, v];
      const rel = STUB_REPORT_OFFSET - (at + head.length + 5);
      bytes = [...head, 0xe9, rel & 0xff, (rel >> 8) & 0xff, (rel >> 16) & 0xff, (rel >>> 24) & 0xff];
    }
    code.set(bytes, at);
  }
  code.set([0xe6, FAULT_PORT, 0xf4, 0xeb, 0xfd], STUB_REPORT_OFFSET);
  code.set([0xe6, SYSCALL_PORT, 0xf4, 0xeb, 0xfd], STUB_SYSCALL_OFFSET);
  return code;
}
