/**
 * The `plugvisor` command line. `plugvisor run` starts a VM driven by a
 * plugin; everything it does is `runPlugin` from the library. `plugvisor
 * exec` runs a compiled program (exec.ts).
 *
 * The host (and with it the native addon) is imported only when a VM runs,
 * so --version, --help and the C library's commands work, and a missing or
 * broken addon is a one-line error, not a stack trace from an import.
 */
import { Command, Option } from 'commander';
import type { RunOptions } from '../host/run.js';
import { MAX_CPUS } from '../host/limits.js';
import { stderrSink, type LogSink } from '../host/log.js';
import { NativePartsError } from '../native/locate.js';
import { parseHostIp, parseMac, parseNetmask } from '../protocol/addresses.js';
import { PACKAGE_VERSION } from '../package-root.js';
import { cLibraryFlags, pkgConfigDir } from './c-library.js';
import { addExecCommand } from './exec.js';
import {
  UsageError,
  addSandboxOptions,
  collect,
  integerIn,
  sandboxFrom,
  stopOnSignals,
  validated,
  type SandboxFlags,
} from './options.js';

interface RunFlags extends SandboxFlags {
  plugin: string;
  cpus: number;
  params?: string[];
  hostIp?: string;
  host_ip?: string;
  netmask?: string;
  mac?: string;
  tapName?: string[];
  tapFd?: number[];
  startTimeout: number;
  verbose?: boolean;
}

const program = new Command('plugvisor')
  .description('A KVM virtual machine monitor driven by a plugin process (crosvm plugin protocol).')
  .version(PACKAGE_VERSION)
  .showHelpAfterError('(run with --help for usage)');

const run = program
  .command('run')
  .description('Create a VM and hand its control to a plugin executable.')
  .usage('--plugin PATH [options] [-- PLUGIN_ARGS...]')
  .requiredOption('--plugin <path>', 'the plugin executable (any language; it finds the host through CROSVM_SOCKET)')
  .addOption(new Option('-c, --cpus <n>', 'number of VCPUs').default(1).argParser(integerIn(1, MAX_CPUS, '--cpus')))
  .option(
    '-p, --params <arg>',
    "an argument for the plugin, before those after -- (repeatable, as crosvm's -p)",
    collect(String),
  );
addSandboxOptions(run)
  .option('--host-ip <ip>', 'create a tap device with this IPv4 address for the plugin (needs --netmask)', validated(parseHostIp))
  .addOption(new Option('--host_ip <ip>', "crosvm's spelling of --host-ip").hideHelp().argParser(validated(parseHostIp)))
  .option('--netmask <mask>', 'the netmask of the tap --host-ip creates, e.g. 255.255.255.0', validated(parseNetmask))
  .option('--mac <mac>', "the MAC address of the plugin's tap device, e.g. de:21:e8:47:6b:6a", validated(parseMac))
  .option(
    '--tap-name <name>',
    'attach to this existing persistent tap device (repeatable; the plugin is offered the first tap)',
    collect(String),
  )
  .option(
    '--tap-fd <fd>',
    'use this inherited descriptor of a tap device (repeatable)',
    collect(integerIn(0, 0x7fffffff, '--tap-fd')),
  )
  .addOption(
    new Option('--start-timeout <seconds>', 'fail if the plugin has not started the VM by then')
      .default(10)
      .argParser(integerIn(1, 86_400, '--start-timeout')),
  )
  .option('-v, --verbose', 'log what the host does, not only warnings and errors')
  .argument('[plugin-args...]', 'arguments for the plugin (after --)')
  .addHelpText(
    'after',
    `
crosvm's plugin options work unchanged (also --host_ip), so a crosvm plugin
command line runs with crosvm replaced by plugvisor. Jail options do nothing
with --disable-sandbox: plugvisor warns about them.

Exit status: 0 when the plugin exited 0 and nothing failed; the plugin's own
exit code when it exited non-zero; 128+N when it was killed by signal N; 1 for
any other failure (the reason is printed).

Examples:
  plugvisor run --plugin ./my-plugin --cpus 2 -- --verbose
  plugvisor run --plugin ./net-plugin --host-ip 100.115.92.5 --netmask 255.255.255.252 --mac de:21:e8:47:6b:6a`,
  )
  .action(async (pluginArgs: string[], flags: RunFlags, command: Command) => {
    const sink = stderrSink(flags.verbose ?? false);
    let options: RunOptions;
    let host: typeof import('../host/run.js');
    try {
      options = runOptions(pluginArgs, flags, command, sink);
      host = await import('../host/run.js');
    } catch (e) {
      failOn(e);
      return;
    }
    const abort = new AbortController();
    const removeSignalHandlers = stopOnSignals(abort);
    options.signal = abort.signal;
    try {
      const outcome = await host.runPlugin(options);
      if (!outcome.ok) process.stderr.write(`plugvisor: ${outcome.message}\n`);
      else if (flags.verbose) process.stderr.write(`plugvisor: ${outcome.message}\n`);
      process.exitCode = outcome.exitCode;
    } catch (e) {
      failOn(e, host.RunSetupError);
    } finally {
      removeSignalHandlers();
    }
  });

/** The library's options from `run`'s command line; warns about options that do nothing here. */
function runOptions(pluginArgs: string[], flags: RunFlags, command: Command, log: LogSink): RunOptions {
  if (flags.hostIp !== undefined && flags.host_ip !== undefined && flags.hostIp !== flags.host_ip) {
    throw new UsageError(`--host-ip ${flags.hostIp} and --host_ip ${flags.host_ip} disagree: give one`);
  }
  const hostIp = flags.hostIp ?? flags.host_ip;
  return {
    plugin: flags.plugin,
    args: [...(flags.params ?? []), ...pluginArgs],
    cpus: flags.cpus,
    sandbox: sandboxFrom(flags, command, log),
    net: {
      ...(hostIp !== undefined ? { hostIp } : {}),
      ...(flags.netmask !== undefined ? { netmask: flags.netmask } : {}),
      ...(flags.mac !== undefined ? { mac: flags.mac } : {}),
      tapNames: flags.tapName ?? [],
      tapFds: flags.tapFd ?? [],
    },
    startTimeoutMs: flags.startTimeout * 1000,
    log,
  };
}

/**
 * Prints a usage or setup error (or a NativePartsError) as one line and sets
 * exit status 1; rethrows anything else.
 */
function failOn(e: unknown, ...expected: (abstract new (...args: never[]) => Error)[]): void {
  if (!(e instanceof NativePartsError) && !(e instanceof UsageError) && !expected.some((type) => e instanceof type)) throw e;
  process.stderr.write(`plugvisor: error: ${(e as Error).message}\n`);
  process.exitCode = 1;
}

/** A command that prints one line, or fails with a one-line error. */
function printer(line: () => string) {
  return (): void => {
    try {
      process.stdout.write(`${line()}\n`);
    } catch (e) {
      failOn(e);
    }
  };
}

addExecCommand(program, failOn);

program
  .command('c-flags')
  .description('Print the compiler and linker flags for a C plugin built against the installed libcrosvm_plugin.')
  .addHelpText('after', '\nExample:\n  cc -o my-plugin my-plugin.c $(npx plugvisor c-flags)')
  .action(printer(cLibraryFlags));

program
  .command('pkg-config-path')
  .description('Print the directory that holds crosvm_plugin.pc, for PKG_CONFIG_PATH.')
  .addHelpText('after', '\nExample:\n  PKG_CONFIG_PATH=$(npx plugvisor pkg-config-path) pkg-config --cflags --libs crosvm_plugin')
  .action(printer(pkgConfigDir));

// The CLI is bundled as CommonJS (scripts/bundle.js), which has no top-level
// await; an error no action expects still ends the process, as an unhandled
// rejection with its stack.
void program.parseAsync(process.argv);
