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
import { AddressSpace, Connection, GuestMemory } from '../../src/plugin/index.js';
import { FAULT_PORT, MEMORY_SIZE, SCRATCH, describe, expectIo, finish, le, loadProgram, realModeProgram, runPlugin, setUpRealMode, waitUntil } from '../support/vcpu-guest.js';

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

runPlugin(() => {
  const conn = Connection.connect();
  const other = conn.newConnection();
  conn.reserveRange(AddressSpace.IOPORT, FAULT_PORT, 1n);
  const memory = GuestMemory.create(MEMORY_SIZE);
  loadProgram(memory, realModeProgram(BODY));
  conn.createMemory(memory, { start: 0n });
  const count = (): number => new DataView(memory.bytes.buffer, memory.bytes.byteOffset + SCRATCH, 4).getUint32(0, true);
  const vcpu = conn.getVcpu(0);
  conn.start();
  if (vcpu.wait().kind !== 'init') throw new Error('expected init');
  setUpRealMode(vcpu);
  vcpu.resume();

  // Unreserved writes do not stop the guest.
  waitUntil('the guest to loop 1000 times', () => count() >= 1000);
  const countBeforeReserve = count();

  // 1. Reserve A while the VCPU runs.
  other.reserveRange(AddressSpace.IOPORT, A, 1n);
  const first = expectIo(vcpu, A, { isWrite: true });
  const firstValue = le(first.data);
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
    if (event.kind !== 'io' || !event.isWrite || (event.address !== A && event.address !== B)) throw new Error(`unexpected ${describe(event)}`);
    const value = le(event.data);
    if (value < previous) ordered = false;
    previous = value;
    if (event.address === A && after.length === 0) staleA++;
    else after.push({ port: `0x${event.address.toString(16)}`, value });
    vcpu.resume();
  }
  finish({ countBeforeReserve, firstValue, countAtFirst, staleA, after, ordered });
});
