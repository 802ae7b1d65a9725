#!/usr/bin/env node
/**
 * Test plugin: leaves its VCPUs where a host must still get them back, then
 * exits with status 3 (argv[3] VCPUs; the host's --cpus). By argv[2]:
 *   spin          every guest spins (`jmp $`) with no exit at all: each VCPU
 *                 thread is inside KVM_RUN
 *   paused        the same, then every VCPU is paused and never resumed
 *   never-resume  every VCPU took `init` and is never resumed: each thread
 *                 waits for the plugin on its pipe
 *   full-pipe     every guest floods an async_write port and the plugin never
 *                 reads: each thread blocks writing into a full pipe
 */
import { AddressSpace, Connection, GuestMemory } from '../../src/plugin/index.js';
import { CODE, MEMORY_SIZE, expectInit, pluginMain, setUpRealMode, sleepMs } from '../support/test-plugin.js';

const FLOOD_PORT = 0x700n;
const mode = process.argv[2];
// Real-mode guests at CODE, hand-assembled (no nasm in the jail of a library run).
const SPIN = [0xeb, 0xfe]; // jmp $
const GUESTS: Record<string, number[]> = {
  spin: SPIN,
  paused: SPIN,
  'never-resume': [0xf4], // hlt (never reached)
  // One instruction per line, beside its listing.
  // prettier-ignore
  'full-pipe': [
    0xba, 0x00, 0x07, // mov dx, 0x700
    0xee, //             l: out dx, al
    0xeb, 0xfd, //       jmp l
  ],
};

pluginMain(() => {
  const guest = GUESTS[mode ?? ''];
  if (guest === undefined) throw new Error(`vcpu-ends: unknown mode ${String(mode)}`);
  const conn = Connection.connect();
  conn.reserveRange(AddressSpace.IOPORT, FLOOD_PORT, 1n, { asyncWrite: true });
  const memory = GuestMemory.create(MEMORY_SIZE);
  memory.bytes.set(guest, Number(CODE));
  conn.createMemory(memory, { start: 0n });
  const vcpus = conn.getVcpus();
  conn.start();
  for (const vcpu of vcpus) {
    expectInit(vcpu);
    if (mode === 'never-resume') continue;
    setUpRealMode(vcpu);
    vcpu.resume();
  }
  if (mode === 'paused') {
    conn.pauseVcpus((1n << BigInt(vcpus.length)) - 1n, 7n);
    for (const vcpu of vcpus) if (vcpu.wait().kind !== 'paused') throw new Error(`vcpu ${vcpu.id}: expected paused`);
  }
  // Long enough for the guests to be spinning, or the pipes to fill.
  sleepMs(mode === 'full-pipe' ? 1500 : 200);
  process.exit(3);
});
