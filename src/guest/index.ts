/**
 * `plugvisor/guest`: run compiled programs in a plugvisor VM at native speed.
 * A static x86-64 ELF runs at CPL 3 in long mode above a tiny ring-0 stub
 * that reports CPU exceptions; COM1, an isa-debug-exit port and host calls
 * (the program calls the plugin's TypeScript functions) are its world. The
 * ABI is in abi.ts and docs/guest.md; a C header is examples/guest/plugvisor.h.
 *
 *   import { runProgram } from 'plugvisor/guest';
 *   const outcome = runProgram({
 *     program: readFileSync('hello.elf'),
 *     hostFunctions: { 1: ({ args }) => args[0] * 2n },
 *   });
 *   process.exit(outcome.kind === 'exit' ? outcome.status : 1);
 *
 * The pieces are exported too, for plugins that build their own machine.
 */
export { runProgram, type ProgramOutcome, type RunProgramOptions } from './runner.js';
export { PIC_VECTOR_BASE } from './pic.js';
export { HostCallError, ProgramMemory, type HostCall, type HostFunction } from './host-calls.js';
export { describeFault, dumpRegisters, exceptionMnemonic, type GuestFault } from './faults.js';
export { ElfError, parseElf, type ElfProgram, type ElfSegment } from './elf.js';
export {
  DEFAULT_MEMORY_SIZE,
  DEFAULT_STACK_SIZE,
  MAX_MEMORY_SIZE,
  ImageError,
  buildImage,
  checkImage,
  type Image,
  type ImageOptions,
} from './image.js';
export { Uart16550, type InterruptLine } from './uart.js';
export { fdSink, type OutputSink } from './output.js';
export { cpuFeatures, entryRegs, userModeSregs, xcr0State, type CpuFeatures, type SystemTables } from './cpu.js';
export { Page, PageMap, buildPageTables, type PageTableOptions } from './paging.js';
export { stubCode, stubEntry, FAULT_FRAME, STUB_SIZE } from './stub.js';
export * as abi from './abi.js';
