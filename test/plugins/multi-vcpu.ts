#!/usr/bin/env node
/**
 * Test plugin: every VCPU runs the same real-mode code with its own AL; each
 * guest reports AL + BL on port 0x10. Prints "vcpu I: V" per VCPU, then exits 0.
 */
import { AddressSpace, Connection, GuestMemory, RegsView, SregsView, VcpuStateSet, kvmConstants } from '../../src/plugin/index.js';

// Loaded at 0x1000:
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
  // With the in-kernel LAPIC, every VCPU but the first waits for a startup
  // IPI; make it runnable at once instead.
  const mpState = new Uint8Array(kvmConstants().SIZEOF_KVM_MP_STATE);
  new DataView(mpState.buffer).setUint32(0, kvmConstants().KVM_MP_STATE_RUNNABLE, true);
  vcpu.setState(VcpuStateSet.MP, mpState);
  const sregs = new SregsView(vcpu.getSregs());
  sregs.cs.base = 0n;
  sregs.cs.selector = 0;
  vcpu.setSregs(sregs.bytes);
  const regs = new RegsView(vcpu.getRegs());
  regs.rip = 0x1000n;
  regs.rflags = 2n;
  regs.rax = BigInt(id);
  regs.rbx = 100n;
  vcpu.setRegs(regs.bytes);
  vcpu.resume();
}
for (const [id, vcpu] of vcpus.entries()) {
  const event = vcpu.wait();
  if (event.kind !== 'io' || event.address !== 0x10n || !event.isWrite) throw new Error(`vcpu ${id}: unexpected ${event.kind}`);
  process.stdout.write(`vcpu ${id}: ${event.data[0]}\n`);
}
process.exit(0);
