#!/usr/bin/env node
/**
 * Test plugin: guest memory slots.
 *
 *   proto-memory dirty     dirty logging (create.memory.dirty_log, dirty_log)
 *   proto-memory readonly  read-only slots (create.memory.read_only)
 *
 * Prints one JSON line with what it observed; the test asserts on it.
 */
import { assemble } from '../support/asm.js';
import type { ProtoMemoryDirtyReport, ProtoMemoryReadonlyReport } from '../support/reports.js';
import {
  check,
  createCodeMemory,
  expectReport,
  finish,
  littleEndian,
  nextIo,
  pluginMain,
  startVcpu0,
  wireAnswer,
} from '../support/test-plugin.js';
import { AddressSpace, Connection, GuestMemory } from '../../src/plugin/index.js';

const PAGE = 0x1000;
const REPORT_PORT = 0x10n;

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

function dirty(conn: Connection): void {
  // Slot A: 16 pages at 0x10000. Slot B: 70 pages at 0x20000 (70 is not a
  // multiple of 64: the kernel fills two 64-bit words, the wire carries 9 bytes).
  const guest = assemble(`
    bits 16
    org 0x1000
      mov ax, 0x1000            ; slot A
      mov es, ax
      mov byte [es:0x0000], 0x11 ; page 0
      mov byte [es:0x3004], 0x33 ; page 3
      mov byte [es:0xf0ff], 0xff ; page 15 (last)
      mov ax, 0x2000            ; slot B
      mov es, ax
      mov byte [es:0x1000], 0x01 ; page 1
      mov ax, 0x6000            ; 0x60000 = slot B page 64
      mov es, ax
      mov byte [es:0x0000], 0x40 ; page 64
      mov byte [es:0x5fff], 0x45 ; page 69 (last)
      out ${REPORT_PORT}, al     ; round 1 done
      mov ax, 0x1000
      mov es, ax
      mov word [es:0x5000], 0x5555 ; slot A page 5
      out ${REPORT_PORT}, al     ; round 2 done
      hlt
  `);
  createCodeMemory(conn, guest, 0x2000); // the code in a slot of its own, not dirty-logged
  const memA = GuestMemory.create(16 * PAGE);
  const memB = GuestMemory.create(70 * PAGE);
  const slotA = conn.createMemory(memA, { start: 0x10000n, dirtyLog: true });
  const slotB = conn.createMemory(memB, { start: 0x20000n, dirtyLog: true });
  // Another slot without dirty_log, to ask for its log.
  const plain = GuestMemory.create(PAGE);
  const plainSlot = conn.createMemory(plain, { start: 0x80000n });
  conn.reserveRange(AddressSpace.IOPORT, REPORT_PORT, 1n);

  const raw = (id: number): ProtoMemoryDirtyReport['unknownId'] => {
    const { response } = conn.request({ message: { $case: 'dirtyLog', dirtyLog: { id } } });
    const bytes = response.message?.$case === 'dirtyLog' ? response.message.dirtyLog.bitmap.length : -1;
    return { ...wireAnswer(response), bytes };
  };
  // Before the guest ran: nothing is dirty.
  const before = { a: hex(slotA.dirtyLog()), b: hex(slotB.dirtyLog()) };

  const vcpu = startVcpu0(conn);

  expectReport(vcpu, REPORT_PORT, { resume: false });
  const round1 = { a: hex(slotA.dirtyLog()), b: hex(slotB.dirtyLog()) };
  const again = { a: hex(slotA.dirtyLog()), b: hex(slotB.dirtyLog()) };
  const contents = [
    memA.bytes[0x0000],
    memA.bytes[0x3004],
    memA.bytes[0xf0ff],
    memB.bytes[0x1000],
    memB.bytes[0x40000],
    memB.bytes[0x45fff],
  ];
  vcpu.resume();

  expectReport(vcpu, REPORT_PORT, { resume: false });
  const round2 = { a: hex(slotA.dirtyLog()), b: hex(slotB.dirtyLog()) };

  finish<ProtoMemoryDirtyReport>({
    before,
    round1,
    again,
    round2,
    contents,
    slotWithoutDirtyLog: raw(plainSlot.id),
    unknownId: raw(0x7fff_0000),
  });
}

function readonly(conn: Connection): void {
  const guest = assemble(`
    bits 16
    org 0x1000
      mov ax, 0x3000            ; the read-only slot at 0x30000
      mov es, ax
      mov eax, [es:0x10]
      out ${REPORT_PORT}, eax    ; report 1: the memfd's value
      mov eax, [es:0x10]
      out ${REPORT_PORT}, eax    ; report 2: what the plugin stored meanwhile
      mov dword [es:0x20], 0xcafef00d ; reserved: MMIO write, 4 bytes
      mov word [es:0x28], 0xbeef ;      2 bytes
      mov byte [es:0x3f], 0x5a   ;      1 byte, last reserved byte
      mov dword [es:0x100], 0x11111111 ; not reserved: dropped
      mov eax, [es:0x100]
      out ${REPORT_PORT}, eax    ; report 3: unchanged
      mov eax, [es:0x20]
      out ${REPORT_PORT}, eax    ; report 4: reads come from memory, not MMIO
      hlt
  `);
  createCodeMemory(conn, guest, 0x2000); // the code in a slot of its own, not dirty-logged
  const rom = GuestMemory.create(PAGE);
  const view = new DataView(rom.bytes.buffer, rom.bytes.byteOffset, rom.bytes.byteLength);
  view.setUint32(0x10, 0x12345678, true);
  view.setUint32(0x20, 0x77665544, true);
  view.setUint32(0x28, 0x33221100, true);
  view.setUint32(0x3c, 0xddccbbaa, true);
  view.setUint32(0x100, 0x0badf00d, true);
  conn.createMemory(rom, { start: 0x30000n, readOnly: true });
  conn.reserveRange(AddressSpace.MMIO, 0x30000n, 0x40n);
  conn.reserveRange(AddressSpace.IOPORT, REPORT_PORT, 4n);

  const vcpu = startVcpu0(conn);

  const events: ProtoMemoryReadonlyReport['events'] = [];
  let reports = 0;
  while (reports < 4) {
    const event = nextIo(vcpu);
    events.push({
      space: event.space === AddressSpace.IOPORT ? 'port' : 'mmio',
      address: `0x${event.address.toString(16)}`,
      write: event.isWrite,
      size: event.data.length,
      value: `0x${littleEndian(event.data).toString(16)}`,
    });
    if (event.space === AddressSpace.IOPORT && event.address === REPORT_PORT) {
      reports++;
      // The guest's next read must see this store into the shared memfd.
      if (reports === 1) view.setUint32(0x10, 0x9abcdef0, true);
    }
    if (reports < 4) vcpu.resume();
  }
  check(events.length > 0, 'no events');
  const memoryAfter = [0x20, 0x28, 0x3c, 0x100].map((at) => `0x${view.getUint32(at, true).toString(16)}`);
  finish<ProtoMemoryReadonlyReport>({ events, memoryAfter });
}

pluginMain(() => {
  const conn = Connection.connect();
  const mode = process.argv[2];
  if (mode === 'dirty') dirty(conn);
  else if (mode === 'readonly') readonly(conn);
  else throw new Error(`unknown mode ${String(mode)}`);
});
