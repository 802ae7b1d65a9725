/**
 * What the test plugins (test/plugins/*.ts) share: a main that turns any
 * exception into a message and exit 1, the one JSON line a plugin reports
 * (typed in ./reports.ts), small real-mode guests whose CPU exceptions are
 * reported on a port instead of running wild, VCPU set-up at `init`, the
 * events a plugin expects, and non-blocking eventfds.
 *
 * Memory layout of the programs built by {@link realModeProgram} (one slot from 0):
 *   0x0000  real-mode IVT (vectors 0..31 point at the fault stubs)
 *   0x1000  the program (org 0x1000): `jmp start`, then at 0x1010 an optional
 *           interrupt handler, at 0x1100 the fault stubs, then the body
 *   0x3000  scratch data the guest may use
 *   0x4000  top of the stack (sp)
 * Plugins that assemble a whole program of their own load it at {@link CODE} too.
 */
import { writeSync } from 'node:fs';
import { C, native } from '../../src/native/index.js';
import {
  AddressSpace,
  Connection,
  GuestMemory,
  RegsView,
  SregsView,
  VcpuStateSet,
  kvmConstants,
  type IoAccessEvent,
  type Vcpu,
  type VcpuEvent,
} from '../../src/plugin/index.js';
import { assemble } from './asm.js';
import { jsonReplacer, type WireAnswer } from './reports.js';

// ---------------------------------------------------------------------------
// A plugin's life: its main, its failures, its report

/** Throws (→ exit 1 through {@link pluginMain}) unless `condition` holds. */
export function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

/** Runs a plugin's main; any exception becomes its reason on stderr (the host logs it as "[plugin] ...") and exit 1. */
export function pluginMain(main: () => void): void {
  try {
    main();
  } catch (e) {
    // A PluginError's stack starts with its message, like any Error's.
    writeSync(2, `${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  }
}

/** Prints `report` as one JSON line on stdout (bigints as hex strings, see ./reports.ts). */
export function printReport<T>(report: T): void {
  writeSync(1, `${JSON.stringify(report, jsonReplacer)}\n`);
}

/** Prints the plugin's report ({@link printReport}) and exits 0. */
export function finish<T>(report: T): never {
  printReport(report);
  process.exit(0);
}

/** A response (main or VCPU) as a report records it: its errno and the member it carried. */
export function wireAnswer(response: { errnoValue: number; message?: { $case: string } }): WireAnswer {
  return { errno: response.errnoValue, member: response.message?.$case ?? null };
}

/** CPUID register values as the text they spell (4 bytes each, little-endian), e.g. a vendor signature. */
export function cpuidText(...registers: number[]): string {
  return Buffer.concat(
    registers.map((r) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(r >>> 0);
      return b;
    }),
  ).toString('latin1');
}

// ---------------------------------------------------------------------------
// Real-mode programs

/** Where programs are loaded and start (cs = 0, so a physical address). */
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
  for (let v = 0; v < 32; v++) setVector(memory, v, STUBS + v * STUB_SIZE);
}

/**
 * The guest of a plugin built on {@link realModeProgram}: `program` loaded in
 * a slot of {@link MEMORY_SIZE} at 0, and {@link FAULT_PORT} reserved, so a
 * guest exception stops the VCPU ({@link expectIo} names it).
 */
export function createProgramMemory(conn: Connection, program: Uint8Array): GuestMemory {
  conn.reserveRange(AddressSpace.IOPORT, FAULT_PORT, 1n);
  const memory = GuestMemory.create(MEMORY_SIZE);
  loadProgram(memory, program);
  conn.createMemory(memory, { start: 0n });
  return memory;
}

/** A range to reserve: an IO port alone (1 byte), or a range in full (IO ports, 1 byte, unless it says otherwise). */
export type Reservation = bigint | { start: bigint; length?: bigint; space?: AddressSpace; asyncWrite?: boolean };

/**
 * How a plugin that runs one {@link realModeProgram} begins: connects,
 * reserves the ranges of `reserve` and loads the program of `body` (and
 * `handler`) with {@link createProgramMemory}. Then it starts the VM, e.g.
 * with {@link startVcpu0}.
 */
export function connectWithProgram(
  program: { body: string; handler?: string },
  reserve: readonly Reservation[] = [],
): { conn: Connection; memory: GuestMemory } {
  const conn = Connection.connect();
  for (const reservation of reserve) {
    const range = typeof reservation === 'bigint' ? { start: reservation } : reservation;
    conn.reserveRange(range.space ?? AddressSpace.IOPORT, range.start, range.length ?? 1n, { asyncWrite: range.asyncWrite });
  }
  return { conn, memory: createProgramMemory(conn, realModeProgram(program.body, program.handler)) };
}

/** A slot of `size` bytes at 0 holding `code`, a whole program of the plugin's own (org 0x1000), at {@link CODE}. */
export function createCodeMemory(conn: Connection, code: Uint8Array, size = 0x10000): GuestMemory {
  const memory = GuestMemory.create(size);
  memory.bytes.set(code, Number(CODE));
  conn.createMemory(memory, { start: 0n });
  return memory;
}

/** Points real-mode interrupt vector `vector` at the program's handler. */
export function routeVectorToHandler(memory: GuestMemory, vector: number): void {
  setVector(memory, vector, HANDLER);
}

function setVector(memory: GuestMemory, vector: number, offset: number): void {
  const ivt = new DataView(memory.bytes.buffer, memory.bytes.byteOffset, 0x400);
  ivt.setUint16(vector * 4, offset, true);
  ivt.setUint16(vector * 4 + 2, 0, true);
}

// ---------------------------------------------------------------------------
// VCPU set-up

export interface RealModeSetup {
  /** General registers; rip defaults to {@link CODE}, rsp to {@link STACK_TOP}. */
  registers?: Partial<Record<'rax' | 'rbx' | 'rcx' | 'rdx' | 'rsi' | 'rdi' | 'rbp' | 'rsp' | 'rip', bigint>>;
  /**
   * Hidden bases given to ES / FS. Real mode only computes base + offset, so
   * a guest that never reloads the register reaches any 32-bit physical
   * address through it (e.g. the LAPIC page at 0xfee00000).
   */
  esBase?: bigint;
  fsBase?: bigint;
}

/**
 * Sets up a VCPU stopped at `init` to run real-mode code at segment 0 (cs,
 * ds, es and ss 0) from {@link CODE} with the stack at {@link STACK_TOP},
 * unless `setup` says otherwise. Also makes the VCPU runnable (VCPUs other
 * than 0 otherwise wait for a startup IPI). Does not resume.
 */
export function setUpRealMode(vcpu: Vcpu, setup: RealModeSetup = {}): void {
  if (vcpu.id !== 0) setMpState(vcpu, kvmConstants().KVM_MP_STATE_RUNNABLE);
  const sregs = new SregsView(vcpu.getSregs());
  for (const segment of [sregs.cs, sregs.ds, sregs.es, sregs.ss]) {
    segment.base = 0n;
    segment.selector = 0;
  }
  if (setup.esBase !== undefined) sregs.es.base = setup.esBase;
  if (setup.fsBase !== undefined) {
    sregs.fs.base = setup.fsBase;
    sregs.fs.selector = 0;
  }
  vcpu.setSregs(sregs.bytes);
  const regs = new RegsView(vcpu.getRegs());
  regs.rip = CODE;
  regs.rflags = 2n;
  regs.rsp = STACK_TOP;
  for (const [name, value] of Object.entries(setup.registers ?? {})) regs.set(name as 'rax', value);
  vcpu.setRegs(regs.bytes);
}

/** Waits for the VCPU's first stop, which must be `init`. */
export function expectInit(vcpu: Vcpu): void {
  const event = vcpu.wait();
  check(event.kind === 'init', `vcpu ${vcpu.id}: expected the init stop, got ${describeEvent(event)}`);
}

/** Waits for `init`, sets the VCPU up ({@link setUpRealMode}) and resumes it. */
export function startRealMode(vcpu: Vcpu, setup: RealModeSetup = {}): void {
  expectInit(vcpu);
  setUpRealMode(vcpu, setup);
  vcpu.resume();
}

/** Starts the VM, then VCPU 0 in real mode ({@link startRealMode}); returns VCPU 0, running. */
export function startVcpu0(conn: Connection, setup: RealModeSetup = {}): Vcpu {
  const vcpu = conn.getVcpu(0);
  conn.start();
  startRealMode(vcpu, setup);
  return vcpu;
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

// ---------------------------------------------------------------------------
// Events

/** Little-endian value of an access's bytes (up to 8). */
export function littleEndian(data: Uint8Array): bigint {
  let value = 0n;
  for (let i = data.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(data[i]);
  return value;
}

/** `value` as `size` little-endian bytes. */
export function littleEndianBytes(value: bigint, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = Number((value >> BigInt(8 * i)) & 0xffn);
  return out;
}

/** An event for a failure message. */
export function describeEvent(event: VcpuEvent): string {
  if (event.kind !== 'io') return event.kind;
  const space = event.space === AddressSpace.IOPORT ? 'port' : 'mmio';
  return (
    `io ${event.isWrite ? 'write' : 'read'} of ${event.data.length} byte(s) at ${space} 0x${event.address.toString(16)}` +
    `${event.isWrite ? ` = 0x${littleEndian(event.data).toString(16)}` : ''}${event.noResume ? ' (no_resume)' : ''}`
  );
}

/** The next event, which must be an io access; returns it (the VCPU stays stopped). */
export function nextIo(vcpu: Vcpu): IoAccessEvent {
  const event = vcpu.wait();
  check(event.kind === 'io', `vcpu ${vcpu.id}: expected an io access, got ${describeEvent(event)}`);
  return event;
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
  if (
    event.kind !== 'io' ||
    event.space !== space ||
    event.address !== address ||
    (options.isWrite !== undefined && event.isWrite !== options.isWrite)
  ) {
    throw new Error(`vcpu ${vcpu.id}: expected an access at 0x${address.toString(16)}, got ${describeEvent(event)}`);
  }
  return event;
}

/** Waits for a write to `port` and returns its value (little-endian); resumes unless told not to. */
export function expectReport(vcpu: Vcpu, port: bigint, options: { resume?: boolean } = {}): bigint {
  const event = expectIo(vcpu, port, { isWrite: true });
  const value = littleEndian(event.data);
  if (options.resume ?? true) vcpu.resume();
  return value;
}

// ---------------------------------------------------------------------------
// Waiting

/** Makes `fd` non-blocking (for eventfd counters read with {@link takeCount}). */
export function setNonBlocking(fd: number): void {
  native.fcntl(fd, C.F_SETFL, native.fcntl(fd, C.F_GETFL, 0) | C.O_NONBLOCK);
}

/** Reads and clears a non-blocking eventfd's counter: 0 when nothing was signalled. */
export function takeCount(fd: number): number {
  const value = native.eventfdRead(fd);
  return value === -1 ? 0 : Number(value);
}

/** True when `fd` becomes readable within `timeoutMs`. */
export function readableWithin(fd: number, timeoutMs: number): boolean {
  return (native.poll(fd, C.POLLIN, timeoutMs) & C.POLLIN) !== 0;
}

/** Polls `condition` (busy-waiting in small sleeps) until true, or throws after `ms`. */
export function waitUntil(what: string, condition: () => boolean, ms = 5000): void {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    sleepMs(2);
  }
}

/** Blocks the thread for `ms` (plugins never yield to their event loop). */
export function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
