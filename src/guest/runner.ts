/**
 * `runProgram`: runs a compiled program in the plugin's VM, at CPL 3 in
 * long mode, and serves it until it ends: COM1 and the host-call output go
 * to the plugin's stdout/stderr (or the sinks given), host calls go to the
 * plugin's functions, and the outcome is the program's exit status or the
 * CPU exception that stopped it.
 *
 * One thread, synchronous, like the SDK. The program runs on VCPU 0; a VM
 * with more VCPUs leaves the others parked (with the in-kernel irqchip they
 * wait for an INIT/SIPI that nothing sends).
 */
import {
  AddressSpace,
  Connection,
  GuestMemory,
  REG_NAMES,
  RegsView,
  SregsView,
  VcpuStateSet,
  eventfdWrite,
  type CpuidEntry,
  type IoAccessEvent,
  type RegName,
  type Vcpu,
} from '../plugin/index.js';
import {
  BUILTIN_CALL_BASE,
  CALL_CLOCK,
  CALL_EXIT,
  CALL_WRITE,
  COM1_IRQ,
  COM1_PORT,
  COM1_PORT_COUNT,
  DEBUG_EXIT_PORT,
  DEBUG_EXIT_PORT_COUNT,
  FAULT_PORT,
  HOST_CALL_PORT,
  INTERRUPT_PORT,
  PAGE_SIZE,
  SYSCALL_PORT,
  SYSTEM,
  USER_BASE,
} from './abi.js';
import { cpuFeatures, entryRegs, syscallMsrs, userModeSregs, xcr0State, type CpuFeatures } from './cpu.js';
import { SELECTOR } from './descriptors.js';
import { parseElf, type ElfProgram } from './elf.js';
import { describeFault, type FaultRegion, type GuestFault } from './faults.js';
import { HostCallError, ProgramMemory, resultBits, type HostCall, type HostFunction } from './host-calls.js';
import { DEFAULT_MEMORY_SIZE, DEFAULT_STACK_SIZE, buildImage, type Image } from './image.js';
import { OutputBuffer, fdSink, type OutputSink } from './output.js';
import { Page } from './paging.js';
import { FAULT_FRAME, STUB_SYSCALL_OFFSET } from './stub.js';
import { PIC_VECTOR_BASE, setUpPics } from './pic.js';
import { Uart16550 } from './uart.js';

export interface RunProgramOptions {
  /** The executable (static, x86-64 ELF) as bytes, or already parsed with parseElf. */
  program: Uint8Array | ElfProgram;
  /** The program's argv, argv[0] included (default: ["program"]). */
  args?: readonly string[];
  /** Guest memory in bytes, a multiple of 4 KiB (default 64 MiB, at most 3 GiB). */
  memorySize?: number;
  /** The stack's size in bytes (default 1 MiB). */
  stackSize?: number;
  /** The plugin's functions, by number (0 .. 0x7fffffff). */
  hostFunctions?: Readonly<Record<number, HostFunction>> | ReadonlyMap<number, HostFunction>;
  /** Where COM1 output and host-call writes to stream 1 go (default: this process's stdout). */
  stdout?: OutputSink;
  /** Where host-call writes to stream 2 go (default: this process's stderr). */
  stderr?: OutputSink;
  /** Bytes the program can read from COM1. */
  serialInput?: Uint8Array;
  /** Called for each external interrupt the program took (e.g. vector 0x24: COM1's IRQ 4). */
  onInterrupt?: (vector: number) => void;
  /** The connection to the host (default: Connection.connect()). */
  connection?: Connection;
}

export type ProgramOutcome =
  /** The program ended itself: `status` is 0..255. */
  | { kind: 'exit'; status: number; via: 'exit call' | 'debug exit' }
  /** A CPU exception stopped it; `message` is describeFault(fault). */
  | { kind: 'fault'; fault: GuestFault; message: string };

/** Runs `options.program` to its end. Throws ElfError/ImageError for a program that cannot run, HostCallError for a host call that failed. */
export function runProgram(options: RunProgramOptions): ProgramOutcome {
  const program = options.program instanceof Uint8Array ? parseElf(options.program) : options.program;
  const functions = hostFunctionsOf(options.hostFunctions);
  const conn = options.connection ?? Connection.connect();
  const memorySize = options.memorySize ?? DEFAULT_MEMORY_SIZE;
  const cpuid = conn.getSupportedCpuid();
  const features = cpuFeatures(cpuid);
  const memory = GuestMemory.create(memorySize, 'plugvisor-program');
  try {
    const image = buildImage(memory.bytes, program, {
      memorySize,
      stackSize: options.stackSize ?? DEFAULT_STACK_SIZE,
      args: options.args ?? ['program'],
      noExecute: features.noExecute,
    });
    conn.createMemory(memory, { start: 0n });
    for (const [port, count] of [
      [COM1_PORT, COM1_PORT_COUNT],
      [DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_COUNT],
      [HOST_CALL_PORT, 1],
      [FAULT_PORT, 1],
      [INTERRUPT_PORT, 1],
      [SYSCALL_PORT, 1],
    ] as const) {
      conn.reserveRange(AddressSpace.IOPORT, BigInt(port), BigInt(count));
    }
    // Every host call brings the registers along: one exit, no get_state round trip.
    conn.setCallHint({ space: AddressSpace.IOPORT, address: BigInt(HOST_CALL_PORT), onWrite: true, details: [{}] });
    const irq = conn.createIrqEvent(COM1_IRQ);
    setUpPics(conn);

    const vcpus = conn.getVcpus();
    const vcpu = vcpus[0];
    if (vcpu === undefined) throw new Error('the VM has no VCPU');
    conn.start();
    for (const v of vcpus) {
      const event = v.wait();
      if (event.kind !== 'init') throw new Error(`vcpu ${v.id}: expected its init event, got '${event.kind}'`);
      if (v === vcpu) enterProgram(v, image, cpuid, features);
      v.resume();
    }

    const stdout = new OutputBuffer(options.stdout ?? fdSink(1));
    const stderr = new OutputBuffer(options.stderr ?? fdSink(2));
    const uart = new Uart16550((byte) => stdout.byte(byte), {
      set: (level) => {
        if (level) eventfdWrite(irq.fd); // lowered by KVM at the acknowledgement (irqfd resample)
      },
    });
    if (options.serialInput) uart.receive(options.serialInput);
    const session = new Session(vcpu, memory.bytes, image, functions, uart, stdout, stderr, options.onInterrupt);
    try {
      return session.serve();
    } finally {
      stdout.flush();
      stderr.flush();
    }
  } finally {
    memory.close();
  }
}

function hostFunctionsOf(functions: RunProgramOptions['hostFunctions']): Map<number, HostFunction> {
  const map = new Map<number, HostFunction>();
  // `instanceof Map` cannot narrow a ReadonlyMap away, so the record is named by its type.
  const entries: [number | string, HostFunction][] =
    functions instanceof Map
      ? [...(functions as ReadonlyMap<number, HostFunction>).entries()]
      : Object.entries((functions ?? {}) as Readonly<Record<number, HostFunction>>);
  for (const [key, fn] of entries) {
    const number = Number(key);
    if (!Number.isInteger(number) || number < 0 || number >= BUILTIN_CALL_BASE) {
      throw new RangeError(`host function number ${String(key)} is not 0..0x${(BUILTIN_CALL_BASE - 1).toString(16)}`);
    }
    if (typeof fn !== 'function') throw new TypeError(`host function ${number} is not a function`);
    map.set(number, fn);
  }
  return map;
}

/** VCPU state for the program's first instruction: CPUID, XCR0, then sregs and regs (sent with the resume). */
function enterProgram(vcpu: Vcpu, image: Image, cpuid: CpuidEntry[], features: CpuFeatures): void {
  vcpu.setCpuid(cpuid);
  vcpu.setMsrs(syscallMsrs(SYSTEM.stub + STUB_SYSCALL_OFFSET));
  if (features.xsave) vcpu.setState(VcpuStateSet.XCREGS, xcr0State(features.xcr0));
  const sregs = new SregsView(vcpu.getSregs());
  userModeSregs(sregs, { gdt: SYSTEM.gdt, idt: SYSTEM.idt, tss: SYSTEM.tss, cr3: image.cr3 }, features);
  vcpu.setSregs(sregs.bytes);
  vcpu.setRegs(
    entryRegs({ rip: image.entry, rsp: image.stackPointer, rdi: BigInt(image.argc), rsi: image.argv, rdx: image.info }).bytes,
  );
}

/** The serving loop of one program on one VCPU. */
class Session {
  private readonly programMemory: ProgramMemory;
  private readonly view: DataView;

  constructor(
    private readonly vcpu: Vcpu,
    private readonly memory: Uint8Array,
    private readonly image: Image,
    private readonly functions: Map<number, HostFunction>,
    private readonly uart: Uart16550,
    private readonly stdout: OutputBuffer,
    private readonly stderr: OutputBuffer,
    private readonly onInterrupt: ((vector: number) => void) | undefined,
  ) {
    this.programMemory = new ProgramMemory(memory, image.pages);
    this.view = new DataView(memory.buffer, memory.byteOffset, memory.byteLength);
  }

  serve(): ProgramOutcome {
    for (;;) {
      const event = this.vcpu.wait();
      if (event.kind !== 'io' || event.space !== AddressSpace.IOPORT) {
        throw new Error(`vcpu 0: unexpected '${event.kind}' event while running the program`);
      }
      const port = Number(event.address);
      if (port === HOST_CALL_PORT && event.isWrite) {
        const outcome = this.hostCall(event);
        if (outcome) return outcome;
      } else if (port >= COM1_PORT && port < COM1_PORT + COM1_PORT_COUNT) {
        this.serial(event, port - COM1_PORT);
      } else if (port === DEBUG_EXIT_PORT && event.isWrite) {
        let value = 0;
        event.data.forEach((b, i) => (value += b * 2 ** (8 * i)));
        return { kind: 'exit', status: (value * 2 + 1) % 256, via: 'debug exit' };
      } else if (port === FAULT_PORT || port === SYSCALL_PORT) {
        const fault = port === FAULT_PORT ? this.fault() : this.syscall(new RegsView(this.vcpu.getRegs()), undefined);
        return { kind: 'fault', fault, message: describeFault(fault) };
      } else if (port === INTERRUPT_PORT) {
        const vector = event.data[0];
        // With auto-EOI the PIC was acknowledged as it delivered, which lowered the irqfd's line: raise it again if still due.
        if (vector === PIC_VECTOR_BASE + COM1_IRQ) this.uart.resample();
        this.onInterrupt?.(vector);
      } else if (!event.isWrite) {
        event.data.fill(0); // the rest of the debug-exit ports read as zero
      }
      this.vcpu.resume();
    }
  }

  private serial(event: IoAccessEvent, offset: number): void {
    for (let i = 0; i < event.data.length; i++) {
      const register = (offset + i) % COM1_PORT_COUNT;
      if (event.isWrite) this.uart.write(register, event.data[i]);
      else event.data[i] = this.uart.read(register);
    }
  }

  /** Serves one host call; an outcome when it ended the program. */
  private hostCall(event: IoAccessEvent): ProgramOutcome | undefined {
    const regs = new RegsView(event.regs ?? this.vcpu.getRegs());
    const rax = regs.rax;
    const args = [regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8, regs.r9] as const;
    let result: bigint;
    if (rax >= BigInt(BUILTIN_CALL_BASE)) {
      const builtin = this.builtin(rax, args);
      if (typeof builtin === 'object') return builtin;
      result = builtin;
    } else {
      const number = Number(rax);
      const fn = this.functions.get(number);
      if (fn === undefined) {
        throw new HostCallError(
          `the program called host function ${number} (rip 0x${regs.rip.toString(16)}), which the plugin does not serve`,
        );
      }
      const call: HostCall = { number, args, memory: this.programMemory };
      try {
        result = resultBits(fn(call), `host function ${number}`);
      } catch (e) {
        if (e instanceof HostCallError) throw new HostCallError(`host function ${number}: ${e.message}`, { cause: e });
        throw new HostCallError(`host function ${number} failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
    }
    regs.rax = result;
    this.vcpu.setRegs(regs.bytes);
    return undefined;
  }

  private builtin(number: bigint, args: readonly bigint[]): bigint | ProgramOutcome {
    const [a0 = 0n, a1 = 0n, a2 = 0n] = args;
    switch (Number(number)) {
      case CALL_EXIT:
        return { kind: 'exit', status: Number(a0 & 0xffn), via: 'exit call' };
      case CALL_WRITE: {
        const stream = a0 === 1n ? this.stdout : a0 === 2n ? this.stderr : undefined;
        if (stream === undefined) throw new HostCallError(`write: stream ${a0} is neither 1 (stdout) nor 2 (stderr)`);
        try {
          stream.bytes(this.programMemory.read(a1, a2));
        } catch (e) {
          if (e instanceof HostCallError) throw new HostCallError(`write: ${e.message}`, { cause: e });
          throw e;
        }
        return a2;
      }
      case CALL_CLOCK:
        if (a0 === 0n) return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
        if (a0 === 1n) return process.hrtime.bigint();
        throw new HostCallError(`clock: clock ${a0} is neither 0 (wall) nor 1 (monotonic)`);
      default:
        throw new HostCallError(`the program called host function 0x${number.toString(16)}, which is no built-in call`);
    }
  }

  /** Reads what the stub reported: the exception frame on the ring-0 stack, the registers, CR2. */
  private fault(): GuestFault {
    const regs = new RegsView(this.vcpu.getRegs());
    const sregs = new SregsView(this.vcpu.getSregs());
    const frame = Number(regs.rsp);
    if (frame < SYSTEM.ring0StackTop - 2 * PAGE_SIZE || frame + FAULT_FRAME.size > SYSTEM.ring0StackTop) {
      throw new Error(`the fault report's stack pointer 0x${frame.toString(16)} is not on the ring-0 stack`);
    }
    const word = (offset: number): bigint => this.view.getBigUint64(frame + offset, true);
    const rip = word(FAULT_FRAME.rip);
    const rsp = word(FAULT_FRAME.rsp);
    // This machine's KVM runs `syscall` without leaving CPL 3: it jumps to LSTAR and faults fetching the ring-0 page.
    if (rip === BigInt(SYSTEM.stub + STUB_SYSCALL_OFFSET) && Number(word(FAULT_FRAME.vector)) === 14)
      return this.syscall(regs, rsp);
    const registers = Object.fromEntries(REG_NAMES.map((name) => [name, regs.get(name)])) as Record<RegName, bigint>;
    registers.rip = rip;
    registers.rsp = rsp;
    registers.rflags = word(FAULT_FRAME.rflags);
    const fault: GuestFault = {
      vector: Number(word(FAULT_FRAME.vector)),
      errorCode: word(FAULT_FRAME.errorCode),
      rip,
      cr2: sregs.cr2,
      rsp,
      rflags: registers.rflags,
      cs: Number(word(FAULT_FRAME.cs)),
      registers,
    };
    if (fault.vector === 14) {
      fault.pageFlags = this.image.pages.flagsAt(Number(BigInt.asUintN(52, fault.cr2)));
      const region = this.region(fault.cr2);
      if (region) fault.region = region;
    }
    const code = this.programCode(rip);
    if (code) fault.code = code;
    return fault;
  }

  /**
   * A `syscall`, from the registers it left: RCX is the return address,
   * R11 the program's RFLAGS, RAX the number; RSP is the program's (given
   * when it comes from an exception frame).
   */
  private syscall(regs: RegsView, rsp: bigint | undefined): GuestFault {
    const sregs = new SregsView(this.vcpu.getSregs());
    const rip = regs.rcx - 2n; // syscall is 0f 05
    const registers = Object.fromEntries(REG_NAMES.map((name) => [name, regs.get(name)])) as Record<RegName, bigint>;
    registers.rip = rip;
    registers.rsp = rsp ?? regs.rsp;
    registers.rflags = regs.r11;
    const fault: GuestFault = {
      vector: 6, // #UD: what a CPU without system calls raises
      errorCode: 0n,
      rip,
      cr2: sregs.cr2,
      rsp: registers.rsp,
      rflags: regs.r11,
      cs: SELECTOR.userCode,
      registers,
      syscall: regs.rax,
    };
    const code = this.programCode(rip);
    if (code) fault.code = code;
    return fault;
  }

  private region(address: bigint): FaultRegion | undefined {
    if (address < BigInt(PAGE_SIZE)) return 'null page';
    if (address < BigInt(USER_BASE)) return 'system area';
    if (address >= BigInt(this.image.heapEnd) && address < BigInt(this.image.heapEnd + PAGE_SIZE)) return 'stack guard page';
    if (address >= BigInt(this.memory.length)) return 'beyond memory';
    return undefined;
  }

  /** Up to 16 bytes at `rip` if the program may execute them. */
  private programCode(rip: bigint): Uint8Array | undefined {
    if (rip >= BigInt(this.memory.length)) return undefined;
    const at = Number(rip);
    const flags = this.image.pages.flagsAt(at);
    if ((flags & (Page.PRESENT | Page.USER)) !== (Page.PRESENT | Page.USER)) return undefined;
    const end = Math.min(at + 16, Math.ceil((at + 1) / PAGE_SIZE) * PAGE_SIZE);
    return this.memory.slice(at, end);
  }
}
