#!/usr/bin/env node
/**
 * Test plugin: every VCPU runs the same real-mode code with its own AL; each
 * guest reports AL + BL on port 0x10. Prints "vcpu I: V" per VCPU, then exits 0.
 */
import { AddressSpace, Connection, GuestMemory } from '../../src/plugin/index.js';
import { setUpRealMode } from '../support/test-plugin.js';

// Loaded at 0x1000:
// One instruction per line, beside its listing.
// prettier-ignore
const GUEST = [
  0x00, 0xd8, //   add al, bl
  0xe6, 0x10, //   out 0x10, al
  0xf4, //         hlt
];

const conn = Connection.connect();
conn.reserveRange(AddressSpace.IOPORT, 0x10n, 1n);
const memory = GuestMemory.create(0x1000);
memory.bytes.set(GUEST, 0);
conn.createMemory(memory, { start: 0x1000n, length: 0x1000n });
const vcpus = conn.getVcpus();
conn.start();

for (const [id, vcpu] of vcpus.entries()) {
  const event = vcpu.wait();
  if (event.kind !== 'init') throw new Error(`vcpu ${id}: expected init, got ${event.kind}`);
  // Every VCPU but the first would wait for a startup IPI: this makes them all runnable at once.
  setUpRealMode(vcpu, { registers: { rax: BigInt(id), rbx: 100n } });
  vcpu.resume();
}
for (const [id, vcpu] of vcpus.entries()) {
  const event = vcpu.wait();
  if (event.kind !== 'io' || event.address !== 0x10n || !event.isWrite) throw new Error(`vcpu ${id}: unexpected ${event.kind}`);
  process.stdout.write(`vcpu ${id}: ${event.data[0]}\n`);
}
process.exit(0);
