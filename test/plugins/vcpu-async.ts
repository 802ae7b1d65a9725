#!/usr/bin/env node
/**
 * Test plugin: an async-write range (IO port 0x700). The guest writes 1000
 * distinct 16-bit values there, then reads the port (with eax preset to all
 * ones) and reports what it read on the ordinary port 0x701. The plugin
 * never resumes while it collects the notifications: the guest must get to
 * its report on its own. Prints one JSON line.
 */
import { AddressSpace, Connection, GuestMemory } from '../../src/plugin/index.js';
import { FAULT_PORT, MEMORY_SIZE, describe, expectReport, finish, le, loadProgram, realModeProgram, runPlugin, setUpRealMode } from '../support/vcpu-guest.js';

const ASYNC = 0x700n;
const REPORT = 0x701n;
const COUNT = 1000;

const BODY = `
  mov dx, ${ASYNC}
  mov cx, 1
.l:
  mov ax, cx
  xor ax, 0x5a00          ; distinct values, not just a count
  out dx, ax
  inc cx
  cmp cx, ${COUNT + 1}
  jne .l
  mov eax, 0xffffffff
  in eax, dx              ; a read of the async range: zeros, no stop
  mov dx, ${REPORT}
  out dx, eax
  hlt
`;

runPlugin(() => {
  const conn = Connection.connect();
  conn.reserveRange(AddressSpace.IOPORT, ASYNC, 1n, { asyncWrite: true });
  conn.reserveRange(AddressSpace.IOPORT, REPORT, 1n);
  conn.reserveRange(AddressSpace.IOPORT, FAULT_PORT, 1n);
  const memory = GuestMemory.create(MEMORY_SIZE);
  loadProgram(memory, realModeProgram(BODY));
  conn.createMemory(memory, { start: 0n });
  const vcpu = conn.getVcpu(0);
  conn.start();
  if (vcpu.wait().kind !== 'init') throw new Error('expected init');
  setUpRealMode(vcpu);
  vcpu.resume();

  const values: number[] = [];
  let allNoResume = true;
  let allWrites = true;
  const sizes = new Set<number>();
  for (let i = 0; i < COUNT; i++) {
    const event = vcpu.wait(); // no resume in between
    if (event.kind !== 'io' || event.address !== ASYNC) throw new Error(`notification ${i}: got ${describe(event)}`);
    allNoResume &&= event.noResume;
    allWrites &&= event.isWrite;
    sizes.add(event.data.length);
    values.push(Number(le(event.data)));
  }
  const read = expectReport(vcpu, REPORT, { resume: false });
  finish({ count: values.length, first: values.slice(0, 3), last: values.at(-1), values, allNoResume, allWrites, sizes: [...sizes], read });
});
