#!/usr/bin/env node
/**
 * Test plugin: interrupts (create.irq_event, set_irq, set_irq_routing).
 *
 *   proto-irq pic      irqfd on GSI 5 (PIC IRQ 5) and set_irq on IRQ 10 (slave PIC)
 *   proto-irq ioapic   irqfd on GSI 20: a level-triggered IOAPIC pin; resample on EOI
 *   proto-irq routing  set_irq_routing: a GSI routed to a PIC pin, and an MSI route
 *
 * Every mode runs the same real-mode guest. It fills its interrupt vector
 * table, programs the 8259 pair (ICW1-4, vector bases 0x20 / 0x28; unmasks
 * IRQ 3, 5, the cascade and IRQ 10), software-enables its LAPIC and programs
 * IOAPIC pin 20 as level-triggered vector 0x40, reports "ready" on port 0x11,
 * then idles in `sti; hlt`. Each interrupt handler reports its vector on port
 * 0x10 and then sends EOI (to the PIC(s), or to the LAPIC).
 *
 * The LAPIC and IOAPIC are MMIO pages above 1 MiB, out of real mode's reach
 * through ordinary segment arithmetic: the plugin gives ES the hidden base
 * 0xfee00000 (LAPIC) and FS the hidden base 0xfec00000 (IOAPIC) at init, and
 * the guest never reloads them. Real mode computes base + offset, so
 * `mov dword [es:0xb0], 0` is a LAPIC EOI and [fs:0] / [fs:0x10] are the
 * IOAPIC's IOREGSEL / IOWIN. That is the simplest guest that gets a
 * level-triggered IOAPIC pin delivered and EOI'd (see ioapic() below).
 *
 * Prints one JSON line with the vectors the guest reported and what the
 * plugin observed around them.
 */
import { assemble } from '../support/asm.js';
import type { ProtoIrqIoapicReport, ProtoIrqPicReport, ProtoIrqRoutingReport } from '../support/reports.js';
import {
  check,
  createCodeMemory,
  expectReport,
  finish,
  pluginMain,
  readableWithin,
  setNonBlocking,
  startVcpu0,
  takeCount,
} from '../support/test-plugin.js';
import { AddressSpace, Connection, VmStateSet, eventfdWrite, kvmConstants, type Vcpu } from '../../src/plugin/index.js';

const REPORT_PORT = 0x10n;
const READY_PORT = 0x11n;
const IOAPIC_PIN = 20;
/** How long the plugin waits for something the guest must do at once. */
const SOON_MS = 5000;

const GUEST = `
  bits 16
  org 0x1000
  %macro vector 2
    mov word [%1 * 4], %2
    mov word [%1 * 4 + 2], 0
  %endmacro
  ; A handler that reports its vector, then EOIs: %2 = pic (master), slave (both PICs) or lapic.
  %macro handler 2
  isr_%1:
    push ax
    mov al, %1
    out ${REPORT_PORT}, al
  %ifidn %2, lapic
    mov dword [es:0xb0], 0       ; LAPIC EOI register
  %else
    mov al, 0x20                 ; OCW2: non-specific EOI
    %ifidn %2, slave
      out 0xa0, al
    %endif
    out 0x20, al
  %endif
    pop ax
    iret
  %endmacro

  start:
    cli
    xor ax, ax
    mov ds, ax
    vector 0x23, isr_0x23
    vector 0x25, isr_0x25
    vector 0x2a, isr_0x2a
    vector 0x40, isr_0x40
    vector 0x50, isr_0x50
    ; 8259 pair. ICW1: edge-triggered, cascade, ICW4 follows.
    mov al, 0x11
    out 0x20, al
    out 0xa0, al
    mov al, 0x20                 ; ICW2: master vectors 0x20-0x27
    out 0x21, al
    mov al, 0x28                 ; ICW2: slave vectors 0x28-0x2f
    out 0xa1, al
    mov al, 0x04                 ; ICW3: slave on master line 2
    out 0x21, al
    mov al, 0x02                 ; ICW3: slave id 2
    out 0xa1, al
    mov al, 0x01                 ; ICW4: 8086 mode
    out 0x21, al
    out 0xa1, al
    mov al, 0xd3                 ; OCW1: unmask master lines 2 (cascade), 3 and 5
    out 0x21, al
    mov al, 0xfb                 ; OCW1: unmask slave line 2 (IRQ 10)
    out 0xa1, al
    ; LAPIC: software-enable (spurious vector register, bit 8).
    mov dword [es:0xf0], 0x1ff
    ; IOAPIC pin ${IOAPIC_PIN}: vector 0x40, fixed, physical, active high, level-triggered, unmasked, to APIC 0.
    mov dword [fs:0x00], 0x10 + 2 * ${IOAPIC_PIN}
    mov dword [fs:0x10], 0x8040
    mov dword [fs:0x00], 0x11 + 2 * ${IOAPIC_PIN}
    mov dword [fs:0x10], 0
    out ${READY_PORT}, al
    sti
  idle:
    hlt
    jmp idle

  handler 0x23, pic
  handler 0x25, pic
  handler 0x2a, slave
  handler 0x40, lapic
  handler 0x50, lapic
`;

/** Starts the VM and runs the guest up to its "ready" report (the VCPU stays stopped there). */
function startGuest(conn: Connection): Vcpu {
  createCodeMemory(conn, assemble(GUEST));
  conn.reserveRange(AddressSpace.IOPORT, REPORT_PORT, 2n);
  const vcpu = startVcpu0(conn, { esBase: 0xfee00000n, fsBase: 0xfec00000n });
  expectReport(vcpu, READY_PORT, { resume: false });
  return vcpu;
}

/** The next vector the guest's handlers report (the VCPU stays stopped in the handler, before its EOI). */
function nextVector(vcpu: Vcpu): number {
  return Number(expectReport(vcpu, REPORT_PORT, { resume: false }));
}

function pic(conn: Connection): void {
  const irq = conn.createIrqEvent(5);
  setNonBlocking(irq.resampleFd);
  const vcpu = startGuest(conn);

  // 1. The irqfd: raised while the guest still has interrupts off, taken after its sti.
  eventfdWrite(irq.fd, 1);
  vcpu.resume();
  const irqfdVector = nextVector(vcpu);
  const resampleBeforeEoi = takeCount(irq.resampleFd);
  vcpu.resume();
  const resampleAfterEoi = readableWithin(irq.resampleFd, SOON_MS) ? takeCount(irq.resampleFd) : 0;

  // 2. The same irqfd again: resampling re-armed it.
  eventfdWrite(irq.fd, 1);
  const irqfdAgain = nextVector(vcpu);
  vcpu.resume();
  const resampleAgain = readableWithin(irq.resampleFd, SOON_MS) ? takeCount(irq.resampleFd) : 0;

  // 3. set_irq on IRQ 10 (the slave PIC): an edge, reported by the slave's handler.
  conn.setIrq(10, true);
  const setIrqVector = nextVector(vcpu);
  vcpu.resume();
  conn.setIrq(10, false);
  // ... and a second edge.
  conn.setIrq(10, true);
  const setIrqAgain = nextVector(vcpu);
  finish<ProtoIrqPicReport>({
    irqfdVector,
    resampleBeforeEoi,
    resampleAfterEoi,
    irqfdAgain,
    resampleAgain,
    setIrqVector,
    setIrqAgain,
  });
}

/** Redirection entry `pin` of the in-kernel IOAPIC (struct kvm_ioapic_state, from get_state). */
function redirectionEntry(conn: Connection, pin: number): bigint {
  const state = conn.getVmState(VmStateSet.IOAPIC);
  return new DataView(state.buffer, state.byteOffset, state.byteLength).getBigUint64(24 + 8 * pin, true);
}

/**
 * A level-triggered IOAPIC pin fed by an irqfd with resample. KVM
 * acknowledges the pin (clears its remote IRR, lowers the irqfd's level and
 * signals the resample eventfd) when the interrupt is EOI'd. On hardware
 * virtualization that is the guest's LAPIC EOI in its handler; this
 * machine's KVM backend (kvm_pvm) acknowledges a real-mode guest's LAPIC
 * interrupts as it injects them (the LAPIC's ISR bit is already clear in the
 * handler). So the plugin records, at the handler's report (before its EOI)
 * and after it, both the remote IRR bit and the resample count, and the test
 * asserts what holds on either: one resample per interrupt, never before
 * the pin is acknowledged, and a second interrupt delivered on the same pin.
 */
function ioapic(conn: Connection): void {
  const irq = conn.createIrqEvent(IOAPIC_PIN);
  setNonBlocking(irq.resampleFd);
  const vcpu = startGuest(conn);
  const entryProgrammed = redirectionEntry(conn, IOAPIC_PIN);
  const remoteIrr = (): boolean => (redirectionEntry(conn, IOAPIC_PIN) & (1n << 14n)) !== 0n;

  const rounds: ProtoIrqIoapicReport['rounds'] = [];
  for (let i = 0; i < 2; i++) {
    eventfdWrite(irq.fd, 1);
    if (i === 0) vcpu.resume();
    const vector = nextVector(vcpu);
    const remoteIrrInHandler = remoteIrr();
    const resampleInHandler = takeCount(irq.resampleFd);
    vcpu.resume();
    // Already acknowledged: only check (briefly) that no second signal follows.
    const resampleAfterEoi = readableWithin(irq.resampleFd, resampleInHandler > 0 ? 200 : SOON_MS)
      ? takeCount(irq.resampleFd)
      : 0;
    rounds.push({ vector, remoteIrrInHandler, resampleInHandler, resampleAfterEoi, remoteIrrAfterEoi: remoteIrr() });
  }
  finish<ProtoIrqIoapicReport>({ entryProgrammed, rounds });
}

function routing(conn: Connection): void {
  const C = kvmConstants();
  // Replaces the default table: GSI 30 → master PIC pin 3, GSI 31 → an MSI to
  // APIC 0 (address 0xfee00000) with vector 0x50 (fixed, edge). GSI 5 is no
  // longer routed anywhere.
  conn.setIrqRouting([
    { irqId: 30, kind: 'irqchip', irqchip: C.KVM_IRQCHIP_PIC_MASTER, pin: 3 },
    { irqId: 31, kind: 'msi', address: 0xfee00000n, data: 0x50 },
  ]);
  const vcpu = startGuest(conn);
  const vectors: number[] = [];
  // GSI 5 went nowhere: had it reached PIC IRQ 5, vector 0x25 would show up below.
  conn.setIrq(5, true);
  conn.setIrq(30, true);
  vcpu.resume();
  vectors.push(nextVector(vcpu));
  vcpu.resume();
  conn.setIrq(30, false);
  conn.setIrq(31, true);
  vectors.push(nextVector(vcpu));
  vcpu.resume();
  conn.setIrq(31, false);
  // A last edge on GSI 30 as a fence: anything pending would have come first.
  conn.setIrq(30, true);
  vectors.push(nextVector(vcpu));
  check(vectors.length === 3, 'three reports');
  finish<ProtoIrqRoutingReport>({ vectors });
}

pluginMain(() => {
  const conn = Connection.connect();
  const mode = process.argv[2];
  if (mode === 'pic') pic(conn);
  else if (mode === 'ioapic') ioapic(conn);
  else if (mode === 'routing') routing(conn);
  else throw new Error(`unknown mode ${String(mode)}`);
});
