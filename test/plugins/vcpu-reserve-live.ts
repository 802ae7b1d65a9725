#!/usr/bin/env node
/**
 * Test plugin: reservations changed while the VCPU runs, from a second
 * connection. The guest loops forever: count, store the count at 0x3000,
 * write it to port 0xc01, then to port 0xc02. At first neither port is
 * reserved, so the guest runs with no stop (the count in memory moves).
 *   1. reserve 0xc01 while it runs → the next stop is a write to 0xc01
 *   2. resume, then at once unreserve 0xc01 and reserve 0xc02: at most one
 *      write to 0xc01 may still be reported (the one the VCPU may already be
 *      stopped at while the requests ran); after it, only 0xc02.
 * Prints one JSON line.
 */
import { AddressSpace } from '../../src/plugin/index.js';
import type { VcpuReserveLiveReport } from '../support/reports.js';
import {
  SCRATCH,
  connectWithProgram,
  describeEvent,
  expectIo,
  finish,
  littleEndian,
  pluginMain,
  startVcpu0,
  waitUntil,
} from '../support/test-plugin.js';

const A = 0xc01n;
const B = 0xc02n;

const BODY = `
  xor ecx, ecx
.l:
  inc ecx
  mov [${SCRATCH}], ecx
  mov eax, ecx
  mov dx, ${A}
  out dx, eax
  inc dx
  out dx, eax
  jmp .l
`;

pluginMain(() => {
  const { conn, memory } = connectWithProgram({ body: BODY });
  const other = conn.newConnection();
  const count = (): number => new DataView(memory.bytes.buffer, memory.bytes.byteOffset + SCRATCH, 4).getUint32(0, true);
  const vcpu = startVcpu0(conn);

  // Unreserved writes do not stop the guest.
  waitUntil('the guest to loop 1000 times', () => count() >= 1000);
  const countBeforeReserve = count();

  // 1. Reserve A while the VCPU runs.
  other.reserveRange(AddressSpace.IOPORT, A, 1n);
  const first = expectIo(vcpu, A, { isWrite: true });
  const firstValue = littleEndian(first.data);
  const countAtFirst = count();

  // 2. Move the reservation from A to B while the VCPU runs.
  vcpu.resume();
  other.unreserveRange(AddressSpace.IOPORT, A);
  other.reserveRange(AddressSpace.IOPORT, B, 1n);
  let staleA = 0;
  const after: { port: string; value: bigint }[] = [];
  let previous = firstValue;
  let ordered = true;
  while (after.length < 4) {
    const event = vcpu.wait();
    if (event.kind !== 'io' || !event.isWrite || (event.address !== A && event.address !== B))
      throw new Error(`unexpected ${describeEvent(event)}`);
    const value = littleEndian(event.data);
    if (value < previous) ordered = false;
    previous = value;
    if (event.address === A && after.length === 0) staleA++;
    else after.push({ port: `0x${event.address.toString(16)}`, value });
    vcpu.resume();
  }
  const report: VcpuReserveLiveReport = { countBeforeReserve, firstValue, countAtFirst, staleA, after, ordered };
  finish(report);
});
