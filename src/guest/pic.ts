/**
 * The two 8259 PICs as a program without a kernel finds them: initialised the
 * way a PC BIOS leaves them, through the VM state sets PIC0 and PIC1.
 */
import { PIC_STATE } from '../kvm/structs.js';
import { VmStateSet, type Connection } from '../plugin/index.js';

/** The ISA interrupt vectors: the runner programs the PICs like a PC BIOS does, IRQ n → vector 0x20 + n. */
export const PIC_VECTOR_BASE = 0x20;

/**
 * Both PICs initialised (vectors 0x20 and 0x28, auto-EOI, every line masked
 * but the cascade), as a program without a kernel cannot do it in time and
 * should not have to: a program that wants COM1's interrupt unmasks IRQ 4
 * (`out 0x21`) itself. Auto-EOI: the stub cannot know which controller to
 * acknowledge, and the UART's irqfd resample needs the acknowledgement.
 */
export function setUpPics(conn: Connection): void {
  for (const [set, base, mask] of [
    [VmStateSet.PIC0, PIC_VECTOR_BASE, 0xfb],
    [VmStateSet.PIC1, PIC_VECTOR_BASE + 8, 0xff],
  ] as const) {
    const state = new Uint8Array(conn.getVmState(set));
    state[PIC_STATE.imr] = mask;
    state[PIC_STATE.irqBase] = base;
    state[PIC_STATE.initState] = 0;
    state[PIC_STATE.autoEoi] = 1;
    state[PIC_STATE.init4] = 1;
    conn.setVmState(set, state);
  }
}
