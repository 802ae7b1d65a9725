#!/usr/bin/env node
/**
 * Test plugin for fault injection: runs a VM up to a point, then ends in a
 * chosen way there.
 *
 *   fault.js ENDING POINT TOKEN
 *
 * POINT, in the order a run gets there:
 *   before-connect     at once, before touching the socket
 *   after-create       memory, an io event, an irq event, a reserved port, the VCPU pipes
 *   after-start        start, and every VCPU's init collected (each VCPU waits for resume)
 *   mid-exit           every VCPU is stopped in a port write the plugin does not answer
 *   while-host-writes  every VCPU loops writing an async port: the host pushes
 *                      notifications the plugin never reads, until its pipe write blocks
 * ENDING:
 *   exit0, exit3, sigkill, sigsegv   exit or die by that signal
 *   closeall   close every descriptor (stderr too), then block forever
 *   hang       block forever (never reading, never resuming)
 *   noresume   never resume, but exit 0 once the host signals the shutdown eventfd
 *
 * Before ending, it writes "fault: at POINT" to stderr (for the runner, which
 * stops the run itself when the ending never exits). TOKEN only marks the
 * command line, so the runner can find anything left behind.
 */
import { C, native } from '../../src/native/index.js';
import { AddressSpace, Connection, GuestMemory } from '../../src/plugin/index.js';
import { expectInit, setUpRealMode, sleepMs } from '../support/test-plugin.js';

const [ending, point] = process.argv.slice(2);
const POINTS = ['before-connect', 'after-create', 'after-start', 'mid-exit', 'while-host-writes'];
if (!POINTS.includes(point ?? '')) throw new Error(`fault: unknown point ${String(point)}`);
const PORT = 0x10n;

function blockForever(): never {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (;;) Atomics.wait(cell, 0, 0);
}

function end(shutdownFd: number | undefined): never {
  process.stderr.write(`fault: at ${point}\n`);
  switch (ending) {
    case 'exit0':
      return process.exit(0);
    case 'exit3':
      return process.exit(3);
    case 'sigkill':
      process.kill(process.pid, 'SIGKILL');
      break;
    case 'sigsegv':
      process.kill(process.pid, 'SIGSEGV');
      break;
    case 'closeall':
      for (let fd = 0; fd < 1024; fd++) {
        try {
          native.close(fd);
        } catch {
          // Not open.
        }
      }
      return blockForever();
    case 'hang':
      return blockForever();
    case 'noresume':
      if (shutdownFd === undefined) throw new Error('noresume needs the shutdown eventfd');
      native.poll(shutdownFd, C.POLLIN, -1);
      process.exit(0);
  }
  throw new Error(`fault: unknown ending ${String(ending)}`);
}

if (point === 'before-connect') end(undefined);

const conn = Connection.connect();
const shutdownFd = conn.getShutdownEventfd();
const memory = GuestMemory.create(0x2000);
// At 0x1000. mid-exit:            mov al, 1; out 0x10, al; hlt
//            while-host-writes:   mov dx, 0x10; l: out dx, al; jmp l
memory.bytes.set(point === 'while-host-writes' ? [0xba, 0x10, 0x00, 0xee, 0xeb, 0xfd] : [0xb0, 0x01, 0xe6, 0x10, 0xf4], 0x1000);
conn.createMemory(memory, { start: 0n });
conn.createIoEvent(AddressSpace.IOPORT, 0x20n, 1, 7n);
conn.createIrqEvent(5);
conn.reserveRange(AddressSpace.IOPORT, PORT, 1n, { asyncWrite: point === 'while-host-writes' });
const vcpus = conn.getVcpus();
if (point === 'after-create') end(shutdownFd);

conn.start();
for (const vcpu of vcpus) expectInit(vcpu);
if (point === 'after-start') end(shutdownFd);

for (const vcpu of vcpus) {
  setUpRealMode(vcpu);
  vcpu.resume();
}
if (point === 'mid-exit') {
  for (const vcpu of vcpus) {
    const event = vcpu.wait();
    if (event.kind !== 'io' || event.address !== PORT) throw new Error(`expected the port write, got ${event.kind}`);
  }
  end(shutdownFd);
}
// while-host-writes: give the guests time to fill every response pipe (256 KiB each).
sleepMs(500);
end(shutdownFd);
