/**
 * Helpers for the protocol-coverage test plugins (test/plugins/proto-*.ts)
 * that run small real-mode guests: set up VCPU 0 at its init stop, expect the
 * guest's reports on reserved ports, and read eventfds without blocking.
 */
import { C, native } from '../../src/native/index.js';
import { AddressSpace, RegsView, SregsView, type IoAccessEvent, type Vcpu, type VcpuEvent } from '../../src/plugin/index.js';

/** Prints `message` on stderr (the host logs it as "[plugin] ...") and exits 1. */
export function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

/** Throws (→ exit 1 through {@link runPlugin}) unless `condition` holds. */
export function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

/** Runs a plugin's body; any exception becomes a message on stderr and exit 1. */
export function runPlugin(body: () => void): void {
  try {
    body();
  } catch (e) {
    fail(e instanceof Error ? (e.stack ?? e.message) : String(e));
  }
}

/** Prints the plugin's findings as one JSON line (bigints as hex strings) and exits 0. */
export function finish(result: unknown): never {
  process.stdout.write(`${JSON.stringify(result, (_key, value: unknown) => (typeof value === 'bigint' ? `0x${value.toString(16)}` : value))}\n`);
  process.exit(0);
}

export interface RealModeSetup {
  /** First instruction (cs = 0, so a physical address below 64 KiB). */
  rip: bigint;
  /** Stack pointer (ss = 0). Default 0x8000. */
  rsp?: bigint;
  /**
   * Hidden bases given to ES / FS. Real mode only computes base + offset, so
   * a guest that never reloads the register reaches any 32-bit physical
   * address through it (e.g. the LAPIC page at 0xfee00000).
   */
  esBase?: bigint;
  fsBase?: bigint;
}

/** Waits for VCPU 0's init stop and points it at real-mode code; the caller resumes. */
export function initRealMode(vcpu: Vcpu, setup: RealModeSetup): void {
  const event = vcpu.wait();
  check(event.kind === 'init', `expected the init stop, got ${describe(event)}`);
  const sregs = new SregsView(vcpu.getSregs());
  for (const segment of [sregs.cs, sregs.ds, sregs.ss]) {
    segment.base = 0n;
    segment.selector = 0;
  }
  if (setup.esBase !== undefined) {
    sregs.es.base = setup.esBase;
    sregs.es.selector = 0;
  }
  if (setup.fsBase !== undefined) {
    sregs.fs.base = setup.fsBase;
    sregs.fs.selector = 0;
  }
  vcpu.setSregs(sregs.bytes);
  const regs = new RegsView(vcpu.getRegs());
  regs.rip = setup.rip;
  regs.rsp = setup.rsp ?? 0x8000n;
  regs.rflags = 2n;
  vcpu.setRegs(regs.bytes);
}

export function describe(event: VcpuEvent): string {
  if (event.kind !== 'io') return event.kind;
  const space = event.space === AddressSpace.IOPORT ? 'port' : 'mmio';
  return `io ${event.isWrite ? 'write' : 'read'} of ${event.data.length} byte(s) at ${space} 0x${event.address.toString(16)}` +
    (event.isWrite ? ` = [${[...event.data].map((b) => b.toString(16)).join(' ')}]` : '');
}

/** The next event, which must be an io access; returns it (the VCPU stays stopped). */
export function nextIo(vcpu: Vcpu): IoAccessEvent {
  const event = vcpu.wait();
  check(event.kind === 'io', `expected an io access, got ${describe(event)}`);
  return event;
}

/** The next event must be a port write at `port`; returns the written value (little-endian). */
export function expectPortWrite(vcpu: Vcpu, port: number): bigint {
  const event = nextIo(vcpu);
  check(event.space === AddressSpace.IOPORT && event.isWrite && event.address === BigInt(port),
    `expected a write to port 0x${port.toString(16)}, got ${describe(event)}`);
  return littleEndian(event.data);
}

export function littleEndian(bytes: Uint8Array): bigint {
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]!);
  return value;
}

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
