/**
 * The benchmark guest, shared by the plugins in bench/plugins/. These are the
 * same bytes as bench/c/common.h gives the C baselines (keep the two in step),
 * so every case measures the same guest instructions.
 *
 * Layout: one 64 KiB memory slot at guest-physical 0xffff0000. A VCPU's reset
 * state (real mode, CS base 0xffff0000, IP 0xfff0) lands in it, so the plugin
 * sets no registers at all. Nothing is mapped below 0xffff0000, so the data
 * write to DS:0x8000 (DS base is 0 at reset) is an MMIO exit.
 *
 * Ports: 0x12 read (4 bytes) = "how many measured exits?", 0x10 write = one
 * measured exit (IO variant), 0x11 write = done (then the guest halts).
 * MMIO variant: the measured exit is a 1-byte write to 0x8000.
 */

export const GUEST_MEM_BASE = 0xffff0000n;
export const GUEST_MEM_SIZE = 0x10000;
const CODE_OFFSET = 0xff00;
const RESET_OFFSET = 0xfff0;

export const PORT_EXIT = 0x10n;
export const PORT_DONE = 0x11n;
export const PORT_COUNT = 0x12n;
export const MMIO_EXIT = 0x8000n;

/**
 * IO variant, at CS:0xff00 (16-bit real mode):
 *
 *   ff00  66 E5 12     in   eax, 0x12      ; eax = exit count (from the plugin)
 *   ff03  66 89 C1     mov  ecx, eax
 *   ff06  E6 10        out  0x10, al       ; <- the measured exit
 *   ff08  66 49        dec  ecx
 *   ff0a  75 FA        jnz  0xff06         ; rel8 -6 (from ff0c)
 *   ff0c  E6 11        out  0x11, al       ; done
 *   ff0e  F4           hlt
 *   ff0f  EB FD        jmp  0xff0e         ; rel8 -3 (from ff11)
 */
const LOOP_IO = [0x66, 0xe5, 0x12, 0x66, 0x89, 0xc1, 0xe6, 0x10, 0x66, 0x49, 0x75, 0xfa, 0xe6, 0x11, 0xf4, 0xeb, 0xfd];

/**
 * MMIO variant, at CS:0xff00:
 *
 *   ff00  66 E5 12     in   eax, 0x12
 *   ff03  66 89 C1     mov  ecx, eax
 *   ff06  A2 00 80     mov  [0x8000], al   ; <- the measured exit (MMIO write)
 *   ff09  66 49        dec  ecx
 *   ff0b  75 F9        jnz  0xff06         ; rel8 -7 (from ff0d)
 *   ff0d  E6 11        out  0x11, al
 *   ff0f  F4           hlt
 *   ff10  EB FD        jmp  0xff0f
 */
const LOOP_MMIO = [0x66, 0xe5, 0x12, 0x66, 0x89, 0xc1, 0xa2, 0x00, 0x80, 0x66, 0x49, 0x75, 0xf9, 0xe6, 0x11, 0xf4, 0xeb, 0xfd];

/** At the reset vector, CS:0xfff0:  E9 0D FF   jmp near 0xff00 (rel16 -0xf3, from fff3). */
const RESET_JMP = [0xe9, 0x0d, 0xff];

/** Writes the guest into `memory` (the GUEST_MEM_SIZE bytes mapped at GUEST_MEM_BASE). */
export function writeGuest(memory: Uint8Array, mmio: boolean): void {
  if (memory.length < GUEST_MEM_SIZE) throw new RangeError(`guest memory must be ${GUEST_MEM_SIZE} bytes`);
  memory.set(mmio ? LOOP_MMIO : LOOP_IO, CODE_OFFSET);
  memory.set(RESET_JMP, RESET_OFFSET);
}
