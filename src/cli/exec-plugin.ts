#!/usr/bin/env node
/**
 * The plugin behind `plugvisor exec`: runs one program with plugvisor/guest
 * and exits with its status. The CLI starts it (bundled, dist/bundle/) as
 *
 *   exec-plugin.js [--memory BYTES] [--verbose] -- FILE ARGV0 [ARGS...]
 *
 * FILE is where the program is (inside the jail: bound read-only at its own
 * real path), ARGV0 what the program sees as argv[0]. Exit status: the
 * program's own (0..255); after a CPU exception, 128 + the signal a native
 * process would have died of (SIGSEGV, SIGILL, SIGFPE, SIGTRAP, SIGBUS),
 * with the fault on stderr; 1 when the program could not run or a host call
 * failed, with the reason on stderr.
 */
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { parseArgs } from 'node:util';
import { describeFault, dumpRegisters, parseElf, runProgram, type GuestFault } from '../guest/index.js';

/** The signal a native process gets for the same exception. */
export function faultSignal(fault: GuestFault): number {
  const s = constants.signals;
  switch (fault.vector) {
    case 0: // #DE
    case 16: // #MF
    case 19: // #XM
      return s.SIGFPE;
    case 6: // #UD
      return s.SIGILL;
    case 1: // #DB
    case 3: // #BP
      return s.SIGTRAP;
    case 17: // #AC
      return s.SIGBUS;
    default:
      return s.SIGSEGV;
  }
}

function main(): number {
  const { values, positionals } = parseArgs({
    options: { memory: { type: 'string' }, verbose: { type: 'boolean', default: false } },
    allowPositionals: true,
  });
  const [file, ...args] = positionals;
  if (file === undefined || args.length === 0)
    throw new Error('usage: exec-plugin.js [--memory BYTES] [--verbose] -- FILE ARGV0 [ARGS...]');
  const outcome = runProgram({
    program: parseElf(readFileSync(file), args[0]),
    args,
    ...(values.memory !== undefined ? { memorySize: Number(values.memory) } : {}),
  });
  if (outcome.kind === 'exit') return outcome.status;
  process.stderr.write(`plugvisor: ${describeFault(outcome.fault)}\n`);
  if (values.verbose) process.stderr.write(`${dumpRegisters(outcome.fault)}\n`);
  return 128 + faultSignal(outcome.fault);
}

let status: number;
try {
  status = main();
} catch (e) {
  process.stderr.write(`plugvisor: error: ${e instanceof Error ? e.message : String(e)}\n`);
  status = 1;
}
process.exit(status);
