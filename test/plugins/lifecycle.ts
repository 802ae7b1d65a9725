#!/usr/bin/env node
/**
 * Test plugin for the end of a VM's life, chosen by its first argument:
 *   triple-fault   the guest triple-faults (SHUTDOWN exit); the plugin waits
 *                  for the host to signal the shutdown eventfd, then exits 0
 *   vcpu-shutdown  the plugin sends `shutdown` on VCPU 0's pipe itself; the
 *                  host ends that VCPU and signals the shutdown eventfd
 * Before that, a second `wait` with no reason pending is checked to get
 * EPROTO. Prints one line per observation.
 */
import { C, native } from '../../src/native/index.js';
import { VcpuRequest } from '../../src/protocol/gen/plugin.js';
import { Connection, GuestMemory } from '../../src/plugin/index.js';
import { assemble } from '../support/asm.js';
import { setUpRealMode } from '../support/test-plugin.js';

const mode = process.argv[2];
const GUEST = assemble(`
  bits 16
  org 0x1000
  lidt [cs:empty_idt]   ; no interrupt vectors at all
  ud2                   ; -> #UD, undeliverable -> double fault -> triple fault (SHUTDOWN)
  jmp $
empty_idt:
  dw 0                  ; limit 0
  dd 0
`);

const conn = Connection.connect();
const shutdownFd = conn.getShutdownEventfd();
const memory = GuestMemory.create(0x1000);
memory.bytes.set(GUEST, 0);
conn.createMemory(memory, { start: 0x1000n, length: 0x1000n });
const vcpu = conn.getVcpu(0);
conn.start();

const init = vcpu.wait();
process.stdout.write(`first event: ${init.kind}\n`);
const again = vcpu.request({ message: { $case: 'wait', wait: {} } });
process.stdout.write(`second wait: errno ${again.errnoValue}\n`);

if (mode === 'triple-fault') {
  setUpRealMode(vcpu);
  vcpu.resume();
} else if (mode === 'vcpu-shutdown') {
  // The SDK has no call for this (a plugin rarely wants it): write the
  // request on the VCPU's pipe, whose ends a raw get_vcpus hands out again.
  const { fds } = conn.request({ message: { $case: 'getVcpus', getVcpus: {} } });
  const shutdown = VcpuRequest.encode({ message: { $case: 'shutdown', shutdown: {} } }).finish();
  native.write(fds[0], shutdown, 0, shutdown.length);
  for (const fd of fds) native.close(fd);
} else {
  process.stderr.write(`lifecycle: unknown mode ${String(mode)}\n`);
  process.exit(2);
}

const ready = native.poll(shutdownFd, C.POLLIN, 10_000);
process.stdout.write(ready & C.POLLIN ? 'shutdown eventfd signalled\n' : 'shutdown eventfd NOT signalled\n');
process.exit(0);
