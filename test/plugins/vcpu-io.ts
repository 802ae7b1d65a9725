#!/usr/bin/env node
/**
 * Test plugin: IO port and MMIO accesses of every size. A reserved MMIO range
 * at 0x10000 (no memory there) gets reads and writes of 1, 2, 4 and 8 bytes
 * (8 bytes: cmpxchg8b, which KVM emulates with one 8-byte read and, when
 * the compare succeeds, one 8-byte write); a reserved port gets reads of 1,
 * 2 and 4 bytes; an unreserved port gets a write and a read, and unreserved,
 * unbacked MMIO a read. The plugin answers reads with values of its own; the
 * guest reports what it read on port 0x510. Prints one JSON line: every event
 * the plugin saw, and the guest's reports.
 */
import { AddressSpace } from '../../src/plugin/index.js';
import type { VcpuIoReport } from '../support/reports.js';
import {
  FAULT_PORT,
  connectWithProgram,
  describeEvent,
  finish,
  littleEndian,
  littleEndianBytes,
  pluginMain,
  startVcpu0,
} from '../support/test-plugin.js';

const REPORT = 0x510n;
const PORT = 0x800n;
const UNRESERVED_PORT = 0x900n;
const MMIO = 0x10000n;

/** Values the plugin returns for reads: "space:address:size" → value. */
const READS = new Map<string, bigint>([
  [`mmio:${0x10000}:1`, 0xa1n],
  [`mmio:${0x10002}:2`, 0xb2c3n],
  [`mmio:${0x10004}:4`, 0xd4e5_f607n],
  [`mmio:${0x10008}:8`, 0x1122_3344_5566_7788n],
  [`mmio:${0x10018}:8`, 0x0123_4567_89ab_cdefn],
  [`port:${0x800}:1`, 0x9an],
  [`port:${0x800}:2`, 0x8b7cn],
  [`port:${0x800}:4`, 0x6d5e_4f30n],
]);

const REPORT_EAX = `
  mov dx, ${REPORT}
  out dx, eax`;

const BODY = `
  mov ax, 0x1000          ; ds base 0x10000: the MMIO range
  mov ds, ax
  xor eax, eax
  mov al, [0]             ; MMIO read, 1 byte
  ${REPORT_EAX}
  xor eax, eax
  mov ax, [2]             ; 2 bytes
  ${REPORT_EAX}
  mov eax, [4]            ; 4 bytes
  ${REPORT_EAX}
  xor eax, eax            ; 8 bytes: edx:eax (0) differs from memory,
  xor edx, edx            ; so cmpxchg8b loads the 8 bytes into edx:eax
  cmpxchg8b [8]
  mov esi, edx
  ${REPORT_EAX}
  mov eax, esi
  out dx, eax
  mov byte [0x10], 0x11   ; MMIO writes of 1, 2, 4 bytes
  mov word [0x12], 0x2222
  mov dword [0x14], 0x33333333
  mov eax, 0x89abcdef     ; 8 bytes: the compare matches what the plugin
  mov edx, 0x01234567     ; returns, so ecx:ebx is written
  mov ebx, 0x44444444
  mov ecx, 0x55555555
  cmpxchg8b [0x18]
  mov dx, ${PORT}
  xor eax, eax
  in al, dx               ; port reads of 1, 2, 4 bytes
  ${REPORT_EAX}
  mov dx, ${PORT}
  xor eax, eax
  in ax, dx
  ${REPORT_EAX}
  mov dx, ${PORT}
  in eax, dx
  ${REPORT_EAX}
  mov dx, ${UNRESERVED_PORT}
  mov eax, 0x77777777
  out dx, eax             ; unreserved: dropped
  mov eax, 0xffffffff
  in eax, dx              ; unreserved: zeros
  ${REPORT_EAX}
  mov ax, 0x2000          ; unreserved, unbacked MMIO at 0x20000
  mov ds, ax
  mov eax, 0xffffffff
  mov eax, [0]
  ${REPORT_EAX}
  mov eax, 0xd0e
  ${REPORT_EAX}
  hlt
`;

pluginMain(() => {
  const { conn } = connectWithProgram({ body: BODY }, [{ space: AddressSpace.MMIO, start: MMIO, length: 0x20n }, PORT, REPORT]);
  const vcpu = startVcpu0(conn);

  const events: string[] = [];
  const reports: bigint[] = [];
  for (;;) {
    const event = vcpu.wait();
    if (event.kind !== 'io') throw new Error(`unexpected ${describeEvent(event)}`);
    if (event.space === AddressSpace.IOPORT && event.address === FAULT_PORT) throw new Error(`guest exception ${event.data[0]}`);
    if (event.space === AddressSpace.IOPORT && event.address === REPORT) {
      const value = littleEndian(event.data);
      if (value === 0xd0en) break;
      reports.push(value);
      vcpu.resume();
      continue;
    }
    const space = event.space === AddressSpace.IOPORT ? 'port' : 'mmio';
    events.push(
      `${space} ${event.isWrite ? 'write' : 'read'} 0x${event.address.toString(16)} size ${event.data.length}` +
        (event.isWrite ? ` = 0x${littleEndian(event.data).toString(16)}` : ''),
    );
    if (event.isWrite) {
      vcpu.resume();
    } else {
      const value = READS.get(`${space}:${event.address}:${event.data.length}`);
      if (value === undefined) throw new Error(`no value for ${describeEvent(event)}`);
      vcpu.resume(littleEndianBytes(value, event.data.length));
    }
  }
  const report: VcpuIoReport = { events, reports };
  finish(report);
});
