#!/usr/bin/env node
/**
 * Test plugin for a VCPU failure that comes after teardown (issue 16,
 * failure 1): reserves port 0x10 with async_write, runs
 * `l: out dx, al; jmp l` on VCPU 0 and never reads the host->plugin pipe (so
 * the host's VCPU thread blocks in its write once the pipe is full), starts a
 * child that keeps both pipe ends and sleeps, prints "child PID", then exits 7.
 */
import { spawn } from 'node:child_process';
import { writeSync } from 'node:fs';
import { AddressSpace, Connection, GuestMemory } from '../../src/plugin/index.js';
import { sleepMs, startRealMode } from '../support/test-plugin.js';

const conn = Connection.connect();
const memory = GuestMemory.create(0x2000);
memory.bytes.set([0xba, 0x10, 0x00, 0xee, 0xeb, 0xfd], 0x1000); // mov dx, 0x10; l: out dx, al; jmp l
conn.createMemory(memory, { start: 0n });
conn.reserveRange(AddressSpace.IOPORT, 0x10n, 1n, { asyncWrite: true });
const raw = conn.request({ message: { $case: 'getVcpus', getVcpus: {} } }).fds;
const vcpu = conn.getVcpu(0);
conn.start();
startRealMode(vcpu);
// The child holds both pipe ends (fds 3 and 4 there) and outlives this process.
const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 600000)'], {
  stdio: ['ignore', 'ignore', 'ignore', raw[0], raw[1]],
});
writeSync(1, `child ${child.pid}\n`);
// Time for the guest to fill the 256 KiB response pipe.
sleepMs(500);
process.exit(7);
