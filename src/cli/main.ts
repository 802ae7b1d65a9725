#!/usr/bin/env node
/**
 * The `plugvisor` command line. `plugvisor run` starts a VM driven by a
 * plugin; everything it does is `runPlugin` from the library. `plugvisor
 * exec` runs a compiled program (exec.ts).
 */
import { Command, Option } from 'commander';
import { runPlugin, RunSetupError, MAX_CPUS, type RunOptions } from '../host/run.js';
import { stderrSink } from '../host/log.js';
import { PACKAGE_VERSION } from '../package-root.js';
import { addExecCommand } from './exec.js';
import { addSandboxOptions, integerIn, sandboxFrom, stopOnSignals, type SandboxFlags } from './options.js';

interface RunFlags extends SandboxFlags {
  plugin: string;
  cpus: number;
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
  .addOption(new Option('--cpus <n>', 'number of VCPUs').default(1).argParser(integerIn(1, MAX_CPUS, '--cpus')));
addSandboxOptions(run)
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
    const removeSignalHandlers = stopOnSignals(abort);
    const options: RunOptions = {
      plugin: flags.plugin,
      args: pluginArgs,
      cpus: flags.cpus,
      sandbox: sandboxFrom(flags),
      startTimeoutMs: flags.startTimeout * 1000,
      log: stderrSink(flags.verbose ?? false),
      signal: abort.signal,
    };
    try {
      const outcome = await runPlugin(options);
      if (!outcome.ok) process.stderr.write(`plugvisor: ${outcome.message}\n`);
      else if (flags.verbose) process.stderr.write(`plugvisor: ${outcome.message}\n`);
      process.exitCode = outcome.exitCode;
    } catch (e) {
      if (!(e instanceof RunSetupError)) throw e;
      process.stderr.write(`plugvisor: error: ${e.message}\n`);
      process.exitCode = 1;
    } finally {
      removeSignalHandlers();
    }
  });

addExecCommand(program);

await program.parseAsync(process.argv);
