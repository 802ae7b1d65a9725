#!/usr/bin/env node
/**
 * Test plugin: VM-wide state (get_state / set_state on the main connection).
 *
 * Before start, for each of PIC0, PIC1, IOAPIC, PIT and CLOCK: read, change
 * a meaningful field, write, read back. Then wrong sizes and an unknown set
 * on the wire. Then a real-mode guest reads the changed PIC masks and IOAPIC
 * registers through its own ports / MMIO and reports them on port 0x10.
 *
 * Prints one JSON line; the test asserts on it.
 */
import { assemble } from '../support/asm.js';
import type { ProtoVmStateReport, WireAnswer } from '../support/reports.js';
import { createCodeMemory, expectReport, finish, pluginMain, startVcpu0, wireAnswer } from '../support/test-plugin.js';
import { AddressSpace, Connection, VmStateSet, kvmConstants, type MainRequest } from '../../src/plugin/index.js';

const C = kvmConstants();
const REPORT_PORT = 0x10n;

const GUEST = `
  bits 16
  org 0x1000
    in al, 0x21               ; master PIC: IMR
    out ${REPORT_PORT}, al
    in al, 0xa1               ; slave PIC: IMR
    out ${REPORT_PORT}, al
    mov dword [fs:0x00], 0    ; IOAPIC register 0: ID
    mov eax, [fs:0x10]
    out ${REPORT_PORT}, eax
    mov dword [fs:0x00], 0x1e ; redirection entry 7, low half
    mov eax, [fs:0x10]
    out ${REPORT_PORT}, eax
    mov dword [fs:0x00], 0x1f ; redirection entry 7, high half
    mov eax, [fs:0x10]
    out ${REPORT_PORT}, eax
    hlt
`;

const view = (bytes: Uint8Array): DataView => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

// Offsets in the kernel structs (<asm/kvm.h>).
const PIC_IMR = 2; // struct kvm_pic_state: last_irr, irr, imr, ...
const IOAPIC_ID = 12; // struct kvm_ioapic_state: u64 base_address, u32 ioregsel, u32 id, ...
const IOAPIC_REDIRTBL = 24;
const PIT_CHANNEL_SIZE = 24; // struct kvm_pit_channel_state
const PIT_COUNT = 0; // u32 count
const PIT_MODE = 13; // ... u8 rw_mode (12), u8 mode (13)
const CLOCK_VALUE = 0; // struct kvm_clock_data: u64 clock, u32 flags, ...
const CLOCK_FLAGS = 8;
/** A StateSet value the protocol does not define. */
const UNKNOWN_SET = 99 as VmStateSet;

pluginMain(() => {
  const conn = Connection.connect();

  const sizes = {
    pic0: conn.getVmState(VmStateSet.PIC0).length,
    pic1: conn.getVmState(VmStateSet.PIC1).length,
    ioapic: conn.getVmState(VmStateSet.IOAPIC).length,
    pit: conn.getVmState(VmStateSet.PIT).length,
    clock: conn.getVmState(VmStateSet.CLOCK).length,
    expected: {
      pic: C.SIZEOF_KVM_PIC_STATE,
      ioapic: C.SIZEOF_KVM_IOAPIC_STATE,
      pit: C.SIZEOF_KVM_PIT_STATE2,
      clock: C.SIZEOF_KVM_CLOCK_DATA,
    },
  };

  /** Reads `set`, lets `change` edit it, writes it, reads it back; returns [before, written, after]. */
  const roundTrip = (set: VmStateSet, change: (state: DataView) => void): [Buffer, Buffer, Buffer] => {
    const before = conn.getVmState(set);
    const written = Buffer.from(before);
    change(view(written));
    conn.setVmState(set, written);
    return [before, written, conn.getVmState(set)];
  };

  const [pic0Before, pic0Written, pic0After] = roundTrip(VmStateSet.PIC0, (s) => s.setUint8(PIC_IMR, 0xa5));
  const [, pic1Written, pic1After] = roundTrip(VmStateSet.PIC1, (s) => s.setUint8(PIC_IMR, 0x5a));
  // IOAPIC: id 5; redirection entry 7 = vector 0x37, level-triggered (bit 15),
  // masked (bit 16), destination 3 (bits 56-63).
  const [ioapicBefore, ioapicWritten, ioapicAfter] = roundTrip(VmStateSet.IOAPIC, (s) => {
    s.setUint32(IOAPIC_ID, 5, true);
    s.setBigUint64(IOAPIC_REDIRTBL + 8 * 7, 0x0300000000018037n, true);
  });
  // PIT channel 2 (no interrupt attached): count 0x4321 in mode 2.
  const pitChannel2 = 2 * PIT_CHANNEL_SIZE;
  const [pitBefore, , pitAfter] = roundTrip(VmStateSet.PIT, (s) => {
    s.setUint32(pitChannel2 + PIT_COUNT, 0x4321, true);
    s.setUint8(pitChannel2 + PIT_MODE, 2);
  });
  // CLOCK: 1000 s ahead (flags 0: a plain value, no realtime adjustment).
  const clockBefore = view(conn.getVmState(VmStateSet.CLOCK)).getBigUint64(CLOCK_VALUE, true);
  const [, , clockAfterBytes] = roundTrip(VmStateSet.CLOCK, (s) => {
    s.setBigUint64(CLOCK_VALUE, clockBefore + 1_000_000_000_000n, true);
    s.setUint32(CLOCK_FLAGS, 0, true);
  });
  const clockAfter = view(clockAfterBytes).getBigUint64(CLOCK_VALUE, true);

  const wire = (request: MainRequest): WireAnswer => wireAnswer(conn.request(request).response);
  const setState = (set: VmStateSet, length: number): MainRequest => ({
    message: { $case: 'setState', setState: { set, state: Buffer.alloc(length) } },
  });
  const refused = {
    pic0Short: wire(setState(VmStateSet.PIC0, C.SIZEOF_KVM_PIC_STATE - 1)),
    ioapicLong: wire(setState(VmStateSet.IOAPIC, C.SIZEOF_KVM_IOAPIC_STATE + 1)),
    pitEmpty: wire(setState(VmStateSet.PIT, 0)),
    clockShort: wire(setState(VmStateSet.CLOCK, 8)),
    getUnknown: wire({ message: { $case: 'getState', getState: { set: UNKNOWN_SET } } }),
    setUnknown: wire(setState(UNKNOWN_SET, 16)),
  };
  // The refused writes changed nothing.
  const pic0Unchanged = view(conn.getVmState(VmStateSet.PIC0)).getUint8(PIC_IMR);

  createCodeMemory(conn, assemble(GUEST));
  conn.reserveRange(AddressSpace.IOPORT, REPORT_PORT, 1n);
  const vcpu = startVcpu0(conn, { fsBase: 0xfec00000n });
  const guestSaw: bigint[] = [];
  for (let i = 0; i < 5; i++) guestSaw.push(expectReport(vcpu, REPORT_PORT, { resume: i < 4 }));

  const pitView = view(pitAfter);
  finish<ProtoVmStateReport>({
    sizes,
    pic0: { before: pic0Before[PIC_IMR], after: pic0After[PIC_IMR], sameAsWritten: pic0After.equals(pic0Written) },
    pic1: { after: pic1After[PIC_IMR], sameAsWritten: pic1After.equals(pic1Written) },
    ioapic: {
      idBefore: view(ioapicBefore).getUint32(IOAPIC_ID, true),
      idAfter: view(ioapicAfter).getUint32(IOAPIC_ID, true),
      entry7After: view(ioapicAfter).getBigUint64(IOAPIC_REDIRTBL + 8 * 7, true),
      sameAsWritten: ioapicAfter.equals(ioapicWritten),
    },
    pit: {
      countBefore: view(pitBefore).getUint32(pitChannel2 + PIT_COUNT, true),
      countAfter: pitView.getUint32(pitChannel2 + PIT_COUNT, true),
      modeAfter: pitView.getUint8(pitChannel2 + PIT_MODE),
    },
    clock: { advancedNs: clockAfter - clockBefore },
    refused,
    pic0Unchanged,
    guestSaw,
  });
});
