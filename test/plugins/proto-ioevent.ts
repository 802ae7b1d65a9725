#!/usr/bin/env node
/**
 * Test plugin: IO events (create.io_event / destroy).
 *
 * Registers ioeventfds on ports and MMIO addresses, with datamatch of 1, 2, 4
 * and 8 bytes and without (length 0). The guest runs the same sequence of
 * writes twice (matching and non-matching values and widths), reporting on
 * port 0x10 after each round. After round 1 the plugin reads every eventfd
 * counter (non-blocking) and destroys every IO event, keeping the eventfds
 * open: after round 2 nothing may have counted.
 *
 * Port 0x230 is also reserved: writes the ioeventfd does not take (a
 * non-matching value; after destroy, all of them) come to the plugin as io
 * exits, which proves the guest's writes really happened.
 *
 * Prints { round1: {counts, port230}, round2: {...}, destroyed: errno[] }.
 */
import { assemble } from '../support/asm.js';
import type { ProtoIoeventReport } from '../support/reports.js';
import {
  check,
  createCodeMemory,
  describeEvent,
  finish,
  littleEndian,
  nextIo,
  pluginMain,
  setNonBlocking,
  startVcpu0,
  takeCount,
} from '../support/test-plugin.js';
import { native } from '../../src/native/index.js';
import { AddressSpace, Connection, type Vcpu } from '../../src/plugin/index.js';

const REPORT_PORT = 0x10n;
const WATCHED_PORT = 0x230n;

const GUEST = `
  bits 16
  org 0x1000
    call writes
    out 0x10, al          ; round 1 done
    call writes
    out 0x10, al          ; round 2 done
    hlt

  writes:
    ; port 0x200, length 0: every width counts (3)
    mov dx, 0x200
    mov al, 1
    out dx, al
    mov ax, 2
    out dx, ax
    mov eax, 3
    out dx, eax
    ; port 0x210, 1 byte == 0x5a: 2 of 4 (a miss, and the right value at the wrong width)
    mov dx, 0x210
    mov al, 0x5a
    out dx, al
    mov al, 0x5b
    out dx, al
    mov ax, 0x005a
    out dx, ax
    mov al, 0x5a
    out dx, al
    ; port 0x220, 2 bytes == 0x1234: 1 of 2
    mov dx, 0x220
    mov ax, 0x1234
    out dx, ax
    mov ax, 0x1235
    out dx, ax
    ; port 0x230, 4 bytes == 0xdeadbeef: 3 of 4 (the miss exits to the plugin)
    mov dx, 0x230
    mov eax, 0xdeadbeef
    out dx, eax
    out dx, eax
    mov eax, 0xdeadbeee
    out dx, eax
    mov eax, 0xdeadbeef
    out dx, eax
    ; MMIO (no memory there) through es = 0xd000
    mov ax, 0xd000
    mov es, ax
    mov byte [es:0x00], 1            ; 0xd0000, length 0: 3 of 3
    mov word [es:0x00], 2
    mov dword [es:0x00], 3
    mov byte [es:0x10], 0xa5         ; 0xd0010, 1 byte == 0xa5: 1 of 2
    mov byte [es:0x10], 0xa4
    mov word [es:0x20], 0xbeef       ; 0xd0020, 2 bytes == 0xbeef: 2 of 2
    mov word [es:0x20], 0xbeef
    mov dword [es:0x30], 0xcafef00d  ; 0xd0030, 4 bytes == 0xcafef00d: 1 of 2
    mov dword [es:0x30], 0
    movq mm0, [qmatch]               ; 0xd0040, 8 bytes (MMX stores) == qmatch: 1 of 3
    movq [es:0x40], mm0
    movq mm1, [qmiss]
    movq [es:0x40], mm1
    mov dword [es:0x40], 0x55667788  ; the low half alone: wrong width
    ret

  align 8
  qmatch: dq 0x1122334455667788
  qmiss:  dq 0x1122334455667789
`;

interface Registration {
  name: string;
  space: AddressSpace;
  address: bigint;
  length: 0 | 1 | 2 | 4 | 8;
  datamatch: bigint;
}

const REGISTRATIONS: Registration[] = [
  { name: 'port0', space: AddressSpace.IOPORT, address: 0x200n, length: 0, datamatch: 0n },
  { name: 'port1', space: AddressSpace.IOPORT, address: 0x210n, length: 1, datamatch: 0x5an },
  { name: 'port2', space: AddressSpace.IOPORT, address: 0x220n, length: 2, datamatch: 0x1234n },
  { name: 'port4', space: AddressSpace.IOPORT, address: 0x230n, length: 4, datamatch: 0xdeadbeefn },
  { name: 'mmio0', space: AddressSpace.MMIO, address: 0xd0000n, length: 0, datamatch: 0n },
  { name: 'mmio1', space: AddressSpace.MMIO, address: 0xd0010n, length: 1, datamatch: 0xa5n },
  { name: 'mmio2', space: AddressSpace.MMIO, address: 0xd0020n, length: 2, datamatch: 0xbeefn },
  { name: 'mmio4', space: AddressSpace.MMIO, address: 0xd0030n, length: 4, datamatch: 0xcafef00dn },
  { name: 'mmio8', space: AddressSpace.MMIO, address: 0xd0040n, length: 8, datamatch: 0x1122334455667788n },
];

/** Runs the guest to its next report; returns the values written to the watched port meanwhile. */
function round(vcpu: Vcpu): string[] {
  const watched: string[] = [];
  for (;;) {
    const event = nextIo(vcpu);
    check(event.space === AddressSpace.IOPORT && event.isWrite, `unexpected ${describeEvent(event)}`);
    if (event.address === REPORT_PORT) return watched;
    check(event.address === WATCHED_PORT, `unexpected ${describeEvent(event)}`);
    watched.push(`0x${littleEndian(event.data).toString(16)}`);
    vcpu.resume();
  }
}

pluginMain(() => {
  const conn = Connection.connect();
  createCodeMemory(conn, assemble(GUEST));
  conn.reserveRange(AddressSpace.IOPORT, REPORT_PORT, 1n);
  conn.reserveRange(AddressSpace.IOPORT, WATCHED_PORT, 4n);

  // Raw create/destroy: the SDK's handles close the eventfd on destroy, and
  // this plugin wants to read it after the destroy.
  const events = REGISTRATIONS.map((r, i) => {
    const id = 100 + i;
    const { response, fds } = conn.request({
      message: {
        $case: 'create',
        create: {
          id,
          kind: { $case: 'ioEvent', ioEvent: { space: r.space, address: r.address, length: r.length, datamatch: r.datamatch } },
        },
      },
    });
    check(
      response.errnoValue === 0 && fds.length === 1,
      `create io_event ${r.name}: errno ${response.errnoValue}, ${fds.length} fds`,
    );
    setNonBlocking(fds[0]);
    return { ...r, id, fd: fds[0] };
  });
  const counts = (): Record<string, number> => Object.fromEntries(events.map((e) => [e.name, takeCount(e.fd)]));

  const vcpu = startVcpu0(conn);

  const round1 = { port230: round(vcpu), counts: counts() };
  const destroyed = events.map((e) => conn.request({ message: { $case: 'destroy', destroy: { id: e.id } } }).response.errnoValue);
  vcpu.resume();
  const round2 = { port230: round(vcpu), counts: counts() };
  for (const e of events) native.close(e.fd);
  finish<ProtoIoeventReport>({ round1, round2, destroyed });
});
