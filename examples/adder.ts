#!/usr/bin/env node
/**
 * The classic plugin demo: a real-mode guest adds two registers and prints
 * the sum on a "serial port" that this plugin emulates.
 *
 *   plugvisor run --plugin dist/examples/adder.js
 *
 * The plugin supplies the guest's only memory (one page at 0x1000), reserves
 * I/O ports 0x3f8 (output characters) and 0x3f9 (a write of 1 = done), starts
 * VCPU 0 at 0x1000 with AL = 2 and BL = 7, and prints what the guest writes.
 */
import { writeSync } from 'node:fs';
import {
  AddressSpace,
  Connection,
  GuestMemory,
  PluginError,
  RegsView,
  SregsView,
  eventfdWrite,
  type VcpuEvent,
} from 'plugvisor/plugin';

const SERIAL_PORT = 0x3f8n;
const KILL_PORT = 0x3f9n;
const CODE_ADDRESS = 0x1000n;
const MEMORY_SIZE = 0x1000;
const A = 2;
const B = 7;

// Real-mode guest code, loaded at 0x1000 (checked with nasm -f bin / ndisasm -b16):
// One instruction per line, beside its listing.
// prettier-ignore
const GUEST_CODE = new Uint8Array([
  0x00, 0xd8, //       add al, bl     ; al = 2 + 7
  0x04, 0x30, //       add al, '0'    ; as an ASCII digit
  0xba, 0xf8, 0x03, // mov dx, 0x3f8
  0xee, //             out dx, al     ; print the digit
  0xb0, 0x0a, //       mov al, 0x0a
  0xee, //             out dx, al     ; print a newline
  0x42, //             inc dx         ; dx = 0x3f9
  0xb0, 0x01, //       mov al, 1
  0xee, //             out dx, al     ; tell the plugin we are done
  0xf4, //             hlt
]);

function fail(message: string): never {
  process.stderr.write(`adder: ${message}\n`);
  process.exit(1);
}

function describe(event: VcpuEvent): string {
  if (event.kind === 'io') {
    const space = event.space === AddressSpace.IOPORT ? 'port' : 'mmio';
    return `io ${event.isWrite ? 'write' : 'read'} of ${event.data.length} byte(s) at ${space} 0x${event.address.toString(16)}`;
  }
  return event.kind;
}

function main(): void {
  const conn = Connection.connect();
  const second = conn.newConnection();
  const shutdownFd = conn.getShutdownEventfd();

  conn.reserveRange(AddressSpace.IOPORT, SERIAL_PORT, 1n);
  conn.reserveRange(AddressSpace.IOPORT, KILL_PORT, 1n);

  const memory = GuestMemory.create(MEMORY_SIZE, 'adder-guest');
  memory.bytes.set(GUEST_CODE, 0);
  const slot = conn.createMemory(memory, { start: CODE_ADDRESS, length: BigInt(MEMORY_SIZE) });

  const vcpu = conn.getVcpu(0);
  second.start();

  let output = '';
  for (;;) {
    const event = vcpu.wait();
    switch (event.kind) {
      case 'init': {
        const sregs = new SregsView(vcpu.getSregs());
        sregs.cs.base = 0n;
        sregs.cs.selector = 0;
        vcpu.setSregs(sregs.bytes);
        const regs = new RegsView(vcpu.getRegs());
        regs.rip = CODE_ADDRESS;
        regs.rax = BigInt(A);
        regs.rbx = BigInt(B);
        regs.rflags = 2n; // bit 1 is always set
        vcpu.setRegs(regs.bytes);
        break;
      }
      case 'io': {
        if (event.space !== AddressSpace.IOPORT || !event.isWrite || event.data.length !== 1) {
          fail(`unexpected ${describe(event)}`);
        }
        if (event.address === SERIAL_PORT) {
          const text = String.fromCharCode(event.data[0]);
          output += text;
          writeSync(1, text);
        } else if (event.address === KILL_PORT && event.data[0] === 1) {
          writeSync(1, `guest computed ${A} + ${B} = ${output.trim()}\n`);
          eventfdWrite(shutdownFd, 1);
          slot.destroy();
          memory.close();
          conn.unreserveRange(AddressSpace.IOPORT, SERIAL_PORT);
          conn.unreserveRange(AddressSpace.IOPORT, KILL_PORT);
          if (output !== `${A + B}\n`) fail(`the guest printed ${JSON.stringify(output)}, expected "${A + B}\\n"`);
          process.exit(0);
        } else {
          fail(`unexpected ${describe(event)} (value ${event.data[0]})`);
        }
        break;
      }
      default:
        fail(`unexpected VCPU event: ${describe(event)}`);
    }
    vcpu.resume();
  }
}

try {
  main();
} catch (e) {
  fail(e instanceof PluginError ? e.message : String((e as Error)?.stack ?? e));
}
