#!/usr/bin/env node
/**
 * The `plugvisor` command line. `plugvisor run` starts a VM driven by a
 * plugin; everything it does is `runPlugin` from the library.
 *
 * The host (and with it the native addon) is imported only when `run` runs,
 * so --version, --help and the C library's commands work, and a missing or
 * broken addon is a one-line error, not a stack trace from an import.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import type { RunOptions } from '../host/run.js';
import { MAX_CPUS } from '../host/limits.js';
import { stderrSink } from '../host/log.js';
import { NativePartsError } from '../native/locate.js';
import { parseBindMount, parseGidMap, type BindMount, type GidMap } from '../sandbox/index.js';
import { PACKAGE_VERSION } from '../package-root.js';
import { cLibraryFlags, pkgConfigDir } from './c-library.js';

interface RunFlags {
  plugin: string;
  cpus: number;
  disableSandbox?: boolean;
  pluginRoot?: string;
  pluginMount: BindMount[];
  pluginGidMap: GidMap[];
  seccompPolicy?: string;
  startTimeout: number;
  verbose?: boolean;
}

function integerIn(min: number, max: number, what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) throw new InvalidArgumentError(`${what} must be a whole number from ${min} to ${max}.`);
    return n;
  };
}

function collect<T>(parse: (spec: string) => T) {
  return (value: string, previous: T[]): T[] => {
    try {
      return [...previous, parse(value)];
    } catch (e) {
      throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
    }
  };
}

const program = new Command('plugvisor')
  .description('A KVM virtual machine monitor driven by a plugin process (crosvm plugin protocol).')
  .version(PACKAGE_VERSION)
  .showHelpAfterError('(run with --help for usage)');

program
  .command('run')
  .description('Create a VM and hand its control to a plugin executable.')
  .usage('--plugin PATH [options] [-- PLUGIN_ARGS...]')
  .requiredOption('--plugin <path>', 'the plugin executable (any language; it finds the host through CROSVM_SOCKET)')
  .addOption(new Option('--cpus <n>', 'number of VCPUs').default(1).argParser(integerIn(1, MAX_CPUS, '--cpus')))
  .option('--disable-sandbox', 'run the plugin as a plain child process instead of in the jail')
  .option('--plugin-root <dir>', "the plugin's / in the jail (default: an empty read-only root with the plugin and what it needs)")
  .option('--plugin-mount <src:dst[:writable]>', 'bind a host path into the jail (repeatable; writable is true or false)', collect(parseBindMount), [])
  .option('--plugin-gid-map <inner:outer:count>', 'map host groups into the jail (repeatable)', collect(parseGidMap), [])
  .option('--seccomp-policy <file>', "the plugin's seccomp policy (default: the one shipped in src/sandbox)")
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
Exit status: 0 when the plugin exited 0 and nothing failed; the plugin's own
exit code when it exited non-zero; 128+N when it was killed by signal N; 1 for
any other failure (the reason is printed).

Example:
  plugvisor run --plugin ./my-plugin --cpus 2 -- --verbose`,
  )
  .action(async (pluginArgs: string[], flags: RunFlags) => {
    const abort = new AbortController();
    const stop = (): void => abort.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    // A closed stdout or stderr (the reader of a pipe went away, as with
    // `| head`) ends the run the way SIGPIPE ends other tools, through the
    // usual shutdown; unhandled, the write error would kill node at once.
    process.stdout.on('error', stop);
    process.stderr.on('error', stop);
    const options: RunOptions = {
      plugin: flags.plugin,
      args: pluginArgs,
      cpus: flags.cpus,
      sandbox: flags.disableSandbox
        ? false
        : {
            mounts: flags.pluginMount,
            gidMaps: flags.pluginGidMap,
            ...(flags.pluginRoot !== undefined ? { pluginRoot: flags.pluginRoot } : {}),
            ...(flags.seccompPolicy !== undefined ? { seccompPolicyFile: flags.seccompPolicy } : {}),
          },
      startTimeoutMs: flags.startTimeout * 1000,
      log: stderrSink(flags.verbose ?? false),
      signal: abort.signal,
    };
    let host: typeof import('../host/run.js') | undefined;
    try {
      host = await import('../host/run.js');
      const outcome = await host.runPlugin(options);
      if (!outcome.ok) process.stderr.write(`plugvisor: ${outcome.message}\n`);
      else if (flags.verbose) process.stderr.write(`plugvisor: ${outcome.message}\n`);
      process.exitCode = outcome.exitCode;
    } catch (e) {
      failOn(e, ...(host !== undefined ? [host.RunSetupError] : []));
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
  });

/** Prints a setup error (or a NativePartsError) as one line and sets exit status 1; rethrows anything else. */
function failOn(e: unknown, ...expected: (abstract new (...args: never[]) => Error)[]): void {
  if (!(e instanceof NativePartsError) && !expected.some((type) => e instanceof type)) throw e;
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

await program.parseAsync(process.argv);
