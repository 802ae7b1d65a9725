/**
 * `plugvisor exec PROGRAM [-- ARGS...]`: runs a compiled program (a static
 * x86-64 ELF, see plugvisor/guest) in a VM whose plugin is the bundled
 * exec-plugin.js. The program's output is plugvisor's; its exit status is
 * plugvisor's. The ELF and its layout are checked here, before any VM
 * exists, so a program that cannot run is a one-line error.
 */
import { readFileSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
// Only the pure parts of plugvisor/guest: the CLI does not load the plugin SDK.
import { parseElf } from '../guest/elf.js';
import { checkImage, DEFAULT_STACK_SIZE, MAX_MEMORY_SIZE } from '../guest/image.js';
import type { RunOutcome } from '../host/run.js';
import { MAX_CPUS } from '../host/limits.js';
import { stderrSink } from '../host/log.js';
import { PACKAGE_ROOT } from '../package-root.js';
import { UsageError, addSandboxOptions, integerIn, sandboxFrom, stopOnSignals, type SandboxFlags } from './options.js';

/** The bundled plugin that runs the program. */
export const EXEC_PLUGIN = join(PACKAGE_ROOT, 'dist', 'bundle', 'exec-plugin.js');

/** timeout(1)'s status for a command that ran out of time. */
export const TIMEOUT_STATUS = 124;
const MIB = 1 << 20;

interface ExecFlags extends SandboxFlags {
  memory: number;
  cpus: number;
  timeout?: number;
  verbose?: boolean;
}

/** The program's bytes, checked; throws a UsageError that says what is wrong. */
function checkProgram(program: string, memorySize: number, args: string[]): void {
  let bytes: Uint8Array;
  try {
    if (!statSync(program).isFile()) throw new UsageError(`${program} is not a file`);
    bytes = readFileSync(program);
  } catch (e) {
    if (e instanceof UsageError) throw e;
    throw new UsageError(`cannot read the program ${program}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    checkImage(parseElf(bytes, program), { memorySize, stackSize: DEFAULT_STACK_SIZE, args });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

/** Adds `exec`; `failOn` prints a usage, setup or native-parts error as one line (and rethrows anything else). */
export function addExecCommand(
  program: Command,
  failOn: (e: unknown, ...expected: (abstract new (...args: never[]) => Error)[]) => void,
): void {
  const exec = program
    .command('exec')
    .description('Run a compiled program (a static x86-64 ELF) in a VM at native speed and exit with its status.')
    .usage('[options] PROGRAM [-- ARGS...]')
    .argument('<program>', 'the executable: static, freestanding x86-64 ELF (gcc -static -nostdlib -ffreestanding)')
    .argument('[args...]', "the program's arguments (after --; argv[0] is PROGRAM as given)")
    .addOption(
      new Option('--memory <MiB>', 'guest memory').default(64).argParser(integerIn(8, MAX_MEMORY_SIZE / MIB, '--memory')),
    )
    .addOption(
      new Option('--cpus <n>', 'number of VCPUs (the program runs on the first)')
        .default(1)
        .argParser(integerIn(1, MAX_CPUS, '--cpus')),
    )
    .addOption(
      new Option('--timeout <seconds>', `stop the program after this long (exit status ${TIMEOUT_STATUS})`).argParser(
        integerIn(1, 86_400, '--timeout'),
      ),
    );
  addSandboxOptions(exec)
    .option('-v, --verbose', "log what the host does; show the registers of a program's fault")
    .addHelpText(
      'after',
      `
The program runs at CPL 3 in 64-bit long mode with its memory identity-mapped;
what it writes to COM1 (port 0x3f8) or with the write host call goes to
stdout (stream 2: stderr). It ends by writing V to port 0xf4 (exit status
(V << 1) | 1, as QEMU's isa-debug-exit) or with the exit host call (exactly
its status). The ABI and a C header: docs/guest.md, examples/guest/plugvisor.h.

Exit status: the program's; 128+N after a CPU exception, N being the signal a
native process would have got (139 SIGSEGV for #PF/#GP, 132 SIGILL for #UD,
136 SIGFPE for #DE, 133 SIGTRAP for #BP), with the fault printed; ${TIMEOUT_STATUS} when
--timeout expired; 1 when it could not run (the reason is printed).

Example:
  gcc -static -nostdlib -ffreestanding -O2 -Iexamples/guest -o hello.elf hello.c
  plugvisor exec hello.elf -- --name world`,
    )
    .action(async (programPath: string, args: string[], flags: ExecFlags, command: Command) => {
      const memorySize = flags.memory * MIB;
      const hostLog = stderrSink(flags.verbose ?? false);
      const abort = new AbortController();
      const removeSignalHandlers = stopOnSignals(abort);
      let timedOut = false;
      let timer: NodeJS.Timeout | undefined;
      let host: typeof import('../host/run.js') | undefined;
      try {
        checkProgram(programPath, memorySize, [programPath, ...args]);
        host = await import('../host/run.js');
        timer =
          flags.timeout === undefined
            ? undefined
            : setTimeout(() => {
                timedOut = true;
                abort.abort();
              }, flags.timeout * 1000);
        // In the jail the program is bound read-only at its real path.
        const file = realpathSync(programPath);
        // Node reads the extra CA certificates at start-up (80 ms of a 120 ms start on the bench machine, which
        // sets it); the exec plugin makes no TLS connection. (The jail drops it for every plugin anyway.)
        delete process.env['NODE_EXTRA_CA_CERTS'];
        const outcome = await host.runPlugin({
          plugin: EXEC_PLUGIN,
          args: ['--memory', String(memorySize), ...(flags.verbose ? ['--verbose'] : []), '--', file, programPath, ...args],
          cpus: flags.cpus,
          sandbox: sandboxFrom(flags, command, hostLog, [{ source: file, target: file, writable: false }]),
          // Once the timeout struck, its own message says what happened (the host would add "interrupted").
          log: (level, message) => {
            if (!timedOut) hostLog(level, message);
          },
          // The plugin's lines are the program's stderr and plugvisor's own messages: no "[plugin] " prefix.
          pluginStderr: (line) => process.stderr.write(`${line}\n`),
          signal: abort.signal,
        });
        process.exitCode = timedOut ? timeoutStatus(flags.timeout!) : statusOf(outcome);
      } catch (e) {
        failOn(e, ...(host ? [host.RunSetupError] : []));
      } finally {
        clearTimeout(timer);
        removeSignalHandlers();
      }
    });
}

function timeoutStatus(seconds: number): number {
  process.stderr.write(`plugvisor: the program did not finish within ${seconds} s\n`);
  return TIMEOUT_STATUS;
}

/** The plugin's exit code is the program's status (it printed any fault itself); anything else is plugvisor's to explain. */
function statusOf(outcome: RunOutcome): number {
  if (outcome.plugin.state === 'exited' && outcome.failure === undefined) return outcome.plugin.code;
  process.stderr.write(`plugvisor: ${outcome.message}\n`);
  return outcome.exitCode;
}
