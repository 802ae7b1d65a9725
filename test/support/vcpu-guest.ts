/**
 * Helpers for test plugins that run small real-mode guests: a program
 * skeleton whose CPU exceptions are reported on a port instead of running
 * wild, VCPU set-up at `init`, and a way to report results / fail loudly.
 *
 * Memory layout used by every guest built here (one slot from 0):
 *   0x0000  real-mode IVT (vectors 0..31 point at the fault stubs)
 *   0x1000  the program (org 0x1000): `jmp start`, then at 0x1010 an optional
 *           interrupt handler, at 0x1100 the fault stubs, then the body
 *   0x3000  scratch data the guest may use
 *   0x4000  top of the stack (sp)
 */
import { writeSync } from 'node:fs';
import { assemble } from './asm.js';
import {
  AddressSpace,
  PluginError,
  RegsView,
  SregsView,
  VcpuStateSet,
  kvmConstants,
  type GuestMemory,
  type IoAccessEvent,
  type Vcpu,
  type VcpuEvent,
} from '../../src/plugin/index.js';

export const CODE = 0x1000n;
/** Where the optional `handler` section of a program starts. */
export const HANDLER = 0x1010;
export const SCRATCH = 0x3000;
export const STACK_TOP = 0x4000n;
/** A guest memory size that covers the layout above. */
export const MEMORY_SIZE = 0x4000;
/** The guest writes the number of a CPU exception it took here (1 byte), then halts. */
export const FAULT_PORT = 0x5ffn;
const STUBS = 0x1100;
const STUB_SIZE = 8;

/**
 * Assembles a 16-bit real-mode program: `body` runs from `start`; `handler`
 * (if any) is placed at {@link HANDLER}. Exceptions 0..31 report their
 * vector on {@link FAULT_PORT}.
 */
export function realModeProgram(body: string, handler = ''): Uint8Array {
  return assemble(`
bits 16
org 0x1000
  jmp start
  times ${HANDLER - 0x1000}-($-$$) db 0x90
handler:
${handler}
  times ${STUBS - 0x1000}-($-$$) db 0x90
%assign v 0
%rep 32
  mov al, v
  jmp fault
  align ${STUB_SIZE}, db 0x90
%assign v v+1
%endrep
fault:
  mov dx, ${FAULT_PORT}
  out dx, al
  hlt
start:
${body}
`);
}

/** Loads `program` at 0x1000 and points vectors 0..31 at its fault stubs. */
export function loadProgram(memory: GuestMemory, program: Uint8Array): void {
  if (program.length > SCRATCH - Number(CODE)) throw new Error(`program too large (${program.length} bytes)`);
  memory.bytes.set(program, Number(CODE));
  const ivt = new DataView(memory.bytes.buffer, memory.bytes.byteOffset, 0x400);
  for (let v = 0; v < 32; v++) {
    ivt.setUint16(v * 4, STUBS + v * STUB_SIZE, true);
    ivt.setUint16(v * 4 + 2, 0, true);
  }
}

/** Points real-mode interrupt vector `vector` at the program's handler. */
export function routeVectorToHandler(memory: GuestMemory, vector: number): void {
  const ivt = new DataView(memory.bytes.buffer, memory.bytes.byteOffset, 0x400);
  ivt.setUint16(vector * 4, HANDLER, true);
  ivt.setUint16(vector * 4 + 2, 0, true);
}

/**
 * Sets up a VCPU stopped at `init` to run the program in real mode from
 * `start` (rip 0x1000, unless `registers.rip` says otherwise) with the given registers; `editSregs` may change the
 * special registers further. Also makes the VCPU runnable (VCPUs other than
 * 0 otherwise wait for a startup IPI). Does not resume.
 */
export function setUpRealMode(
  vcpu: Vcpu,
  registers: Partial<Record<'rax' | 'rbx' | 'rcx' | 'rdx' | 'rsi' | 'rdi' | 'rbp' | 'rip', bigint>> = {},
  editSregs?: (sregs: SregsView) => void,
): void {
  if (vcpu.id !== 0) setMpState(vcpu, kvmConstants().KVM_MP_STATE_RUNNABLE);
  const sregs = new SregsView(vcpu.getSregs());
  for (const segment of [sregs.cs, sregs.ds, sregs.es, sregs.ss]) {
    segment.base = 0n;
    segment.selector = 0;
  }
  editSregs?.(sregs);
  vcpu.setSregs(sregs.bytes);
  const regs = new RegsView(vcpu.getRegs());
  regs.rip = CODE;
  regs.rflags = 2n;
  regs.rsp = STACK_TOP;
  for (const [name, value] of Object.entries(registers)) regs.set(name as 'rax', value);
  vcpu.setRegs(regs.bytes);
}

export function setMpState(vcpu: Vcpu, state: number): void {
  const bytes = new Uint8Array(kvmConstants().SIZEOF_KVM_MP_STATE);
  new DataView(bytes.buffer).setUint32(0, state, true);
  vcpu.setState(VcpuStateSet.MP, bytes);
}

export function mpState(vcpu: Vcpu): number {
  const bytes = vcpu.getState(VcpuStateSet.MP);
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(0, true);
}

/** Little-endian value of an access's bytes (up to 8). */
export function le(data: Uint8Array): bigint {
  let value = 0n;
  for (let i = data.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(data[i]!);
  return value;
}

/** `value` as `size` little-endian bytes. */
export function bytesOf(value: bigint, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = Number((value >> BigInt(8 * i)) & 0xffn);
  return out;
}

export function describe(event: VcpuEvent): string {
  if (event.kind !== 'io') return event.kind;
  const space = event.space === AddressSpace.IOPORT ? 'port' : 'mmio';
  return `io ${event.isWrite ? 'write' : 'read'} of ${event.data.length} byte(s) at ${space} 0x${event.address.toString(16)}` +
    `${event.isWrite ? ` = 0x${le(event.data).toString(16)}` : ''}${event.noResume ? ' (no_resume)' : ''}`;
}

/**
 * Waits for the next event, which must be an io access at `address`
 * (IO port unless `space` says otherwise); a guest exception fails clearly.
 */
export function expectIo(vcpu: Vcpu, address: bigint, options: { isWrite?: boolean; space?: AddressSpace } = {}): IoAccessEvent {
  const event = vcpu.wait();
  const space = options.space ?? AddressSpace.IOPORT;
  if (event.kind === 'io' && event.space === AddressSpace.IOPORT && event.address === FAULT_PORT) {
    const rip = new RegsView(vcpu.getRegs()).rip;
    throw new Error(`vcpu ${vcpu.id}: the guest took exception ${event.data[0]} (now at rip 0x${rip.toString(16)})`);
  }
  if (event.kind !== 'io' || event.space !== space || event.address !== address ||
      (options.isWrite !== undefined && event.isWrite !== options.isWrite)) {
    throw new Error(`vcpu ${vcpu.id}: expected an access at 0x${address.toString(16)}, got ${describe(event)}`);
  }
  return event;
}

/** Waits for a write to `port` and returns its value; resumes unless told not to. */
export function expectReport(vcpu: Vcpu, port: bigint, options: { resume?: boolean } = {}): bigint {
  const event = expectIo(vcpu, port, { isWrite: true });
  const value = le(event.data);
  if (options.resume ?? true) vcpu.resume();
  return value;
}

/** Runs a plugin's main; on failure prints the reason on stderr and exits 1. */
export function runPlugin(main: () => void): void {
  try {
    main();
  } catch (e) {
    const text = e instanceof PluginError ? `${e.message}\n${e.stack ?? ''}` : String((e as Error)?.stack ?? e);
    writeSync(2, `${text}\n`);
    process.exit(1);
  }
}

/** Prints the plugin's result as one JSON line (bigints as hex strings) and exits 0. */
export function finish(result: unknown): never {
  writeSync(1, `${JSON.stringify(result, (_key, value: unknown) => typeof value === 'bigint' ? `0x${value.toString(16)}` : value)}\n`);
  process.exit(0);
}

/** Polls `condition` (busy-waiting in small sleeps) until true, or throws after `ms`. */
export function waitUntil(what: string, condition: () => boolean, ms = 5000): void {
  const deadline = Date.now() + ms;
  const cell = new Int32Array(new SharedArrayBuffer(4));
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    Atomics.wait(cell, 0, 0, 2);
  }
}
