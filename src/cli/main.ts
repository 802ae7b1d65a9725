#!/usr/bin/env node
/**
 * The `plugvisor` command line. `plugvisor run` starts a VM driven by a
 * plugin; everything it does is `runPlugin` from the library.
 *
 * The host (and with it the native addon) is imported only when `run` runs,
 * so --version, --help and the C library's commands work, and a missing or
 * broken addon is a one-line error, not a stack trace from an import.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { RunOptions } from '../host/run.js';
import { MAX_CPUS } from '../host/limits.js';
import { createLog, stderrSink, type LogSink } from '../host/log.js';
import { NativePartsError } from '../native/locate.js';
import { parseHostIp, parseMac, parseNetmask } from '../protocol/addresses.js';
import { parseBindMount, parseGidMap, type BindMount, type GidMap } from '../sandbox/index.js';
import { PACKAGE_VERSION } from '../package-root.js';
import { cLibraryFlags, pkgConfigDir } from './c-library.js';
import { parseListFile } from './list-file.js';

type Host = typeof import('../host/run.js');

interface RunFlags {
  plugin: string;
  cpus: number;
  params?: string[];
  disableSandbox?: boolean;
  pluginRoot?: string;
  seccompPolicy?: string;
  seccompPolicyDir?: string;
  seccompLogFailures?: boolean;
  hostIp?: string;
  host_ip?: string;
  netmask?: string;
  mac?: string;
  tapName?: string[];
  tapFd?: number[];
  startTimeout: number;
  verbose?: boolean;
}

/** The file --seccomp-policy-dir names in its directory: the one crosvm read for plugins. */
const PLUGIN_POLICY_FILE = 'plugin.policy';

/** Options of the jail, by attribute name, for the warning that they do nothing without it. */
const SANDBOX_OPTIONS: Readonly<Record<string, string>> = {
  pluginRoot: '--plugin-root',
  pluginMount: '--plugin-mount',
  pluginMountFile: '--plugin-mount-file',
  pluginGidMap: '--plugin-gid-map',
  pluginGidMapFile: '--plugin-gid-map-file',
  seccompPolicy: '--seccomp-policy',
  seccompPolicyDir: '--seccomp-policy-dir',
  seccompLogFailures: '--seccomp-log-failures',
};

function integerIn(min: number, max: number, what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) throw new InvalidArgumentError(`${what} must be a whole number from ${min} to ${max}.`);
    return n;
  };
}

/** A parser as commander wants one: errors become InvalidArgumentError. */
function checked<T>(parse: (value: string) => T) {
  return (value: string): T => {
    try {
      return parse(value);
    } catch (e) {
      throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
    }
  };
}

/** A parser that only checks: the value stays the text (the library parses it again). */
function validated(check: (value: string) => unknown) {
  return checked((value: string): string => {
    check(value);
    return value;
  });
}

/** A repeatable option: each value is parsed and collected. */
function collect<T>(parse: (spec: string) => T) {
  const parseOne = checked(parse);
  return (value: string, previous: T[] | undefined): T[] => [...(previous ?? []), parseOne(value)];
}

/**
 * Collects into `list` in command-line order, from several options: an entry
 * of --plugin-mount and those of a --plugin-mount-file keep their order, as
 * in crosvm (a later bind covers an earlier one).
 */
function collectInOrder<T>(list: T[], parse: (value: string) => T[]) {
  const parseChecked = checked(parse);
  return (value: string): T[] => {
    list.push(...parseChecked(value));
    return list;
  };
}

const mounts: BindMount[] = [];
const gidMaps: GidMap[] = [];

const program = new Command('plugvisor')
  .description('A KVM virtual machine monitor driven by a plugin process (crosvm plugin protocol).')
  .version(PACKAGE_VERSION)
  .showHelpAfterError('(run with --help for usage)');

program
  .command('run')
  .description('Create a VM and hand its control to a plugin executable.')
  .usage('--plugin PATH [options] [-- PLUGIN_ARGS...]')
  .requiredOption('--plugin <path>', 'the plugin executable (any language; it finds the host through CROSVM_SOCKET)')
  .addOption(new Option('-c, --cpus <n>', 'number of VCPUs').default(1).argParser(integerIn(1, MAX_CPUS, '--cpus')))
  .option('-p, --params <arg>', 'an argument for the plugin, before those after -- (repeatable, as crosvm\'s -p)', collect(String))
  .option('--disable-sandbox', 'run the plugin as a plain child process instead of in the jail')
  .option('--plugin-root <dir>', "the plugin's / in the jail (default: an empty read-only root with the plugin and what it needs)")
  .option('--plugin-mount <src[:dst[:writable]]>', 'bind a host path into the jail (repeatable; dst defaults to src, writable is true or false)',
    collectInOrder(mounts, (spec) => [parseBindMount(spec)]))
  .option('--plugin-mount-file <file>', 'bind every path the file lists, one --plugin-mount value a line (# comments; repeatable)',
    collectInOrder(mounts, (file) => parseListFile(file, '--plugin-mount-file', parseBindMount)))
  .option('--plugin-gid-map <inner[:outer[:count]]>', 'map host groups into the jail (repeatable; outer defaults to inner, count to 1)',
    collectInOrder(gidMaps, (spec) => [parseGidMap(spec)]))
  .option('--plugin-gid-map-file <file>', 'map every group range the file lists, one --plugin-gid-map value a line (# comments; repeatable)',
    collectInOrder(gidMaps, (file) => parseListFile(file, '--plugin-gid-map-file', parseGidMap)))
  .option('--seccomp-policy <file>', "the plugin's seccomp policy (default: the one shipped in src/sandbox)")
  .option('--seccomp-policy-dir <dir>', `take the plugin's seccomp policy from DIR/${PLUGIN_POLICY_FILE}, as crosvm did`)
  .option('--seccomp-log-failures', 'log the calls the seccomp policy would kill the plugin for, and allow them, instead of killing it')
  .option('--host-ip <ip>', 'create a tap device with this IPv4 address for the plugin (needs --netmask)', validated(parseHostIp))
  .addOption(new Option('--host_ip <ip>', 'crosvm\'s spelling of --host-ip').hideHelp().argParser(validated(parseHostIp)))
  .option('--netmask <mask>', 'the netmask of the tap --host-ip creates, e.g. 255.255.255.0', validated(parseNetmask))
  .option('--mac <mac>', "the MAC address of the plugin's tap device, e.g. de:21:e8:47:6b:6a", validated(parseMac))
  .option('--tap-name <name>', 'attach to this existing persistent tap device (repeatable; the plugin is offered the first tap)', collect(String))
  .option('--tap-fd <fd>', 'use this inherited descriptor of a tap device (repeatable)', collect(integerIn(0, 0x7fffffff, '--tap-fd')))
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
    let host: Host;
    try {
      host = await import('../host/run.js');
    } catch (e) {
      failOn(e);
      return;
    }
    const sink = stderrSink(flags.verbose ?? false);
    let options: RunOptions;
    try {
      options = runOptions(host, pluginArgs, flags, command, sink);
    } catch (e) {
      failOn(e, host.RunSetupError);
      return;
    }
    const abort = new AbortController();
    const stop = (): void => abort.abort();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    // A closed stdout or stderr (the reader of a pipe went away, as with
    // `| head`) ends the run the way SIGPIPE ends other tools, through the
    // usual shutdown; unhandled, the write error would kill node at once.
    process.stdout.on('error', stop);
    process.stderr.on('error', stop);
    options.signal = abort.signal;
    try {
      const outcome = await host.runPlugin(options);
      if (!outcome.ok) process.stderr.write(`plugvisor: ${outcome.message}\n`);
      else if (flags.verbose) process.stderr.write(`plugvisor: ${outcome.message}\n`);
      process.exitCode = outcome.exitCode;
    } catch (e) {
      failOn(e, host.RunSetupError);
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
  });

/** The library's options from the command line; warns about options that do nothing here. */
function runOptions({ RunSetupError }: Host, pluginArgs: string[], flags: RunFlags, command: Command, log: LogSink): RunOptions {
  const given = (key: string): boolean => command.getOptionValueSource(key) === 'cli';
  if (flags.disableSandbox) {
    for (const [key, option] of Object.entries(SANDBOX_OPTIONS)) {
      if (given(key)) createLog(log).warn(`${option} has no effect with --disable-sandbox: the plugin runs outside the jail`);
    }
  }
  if (flags.hostIp !== undefined && flags.host_ip !== undefined && flags.hostIp !== flags.host_ip) {
    throw new RunSetupError(`--host-ip ${flags.hostIp} and --host_ip ${flags.host_ip} disagree: give one`);
  }
  if (flags.seccompPolicy !== undefined && flags.seccompPolicyDir !== undefined) {
    throw new RunSetupError('--seccomp-policy and --seccomp-policy-dir both name the policy: give one');
  }
  let seccompPolicyFile = flags.seccompPolicy;
  if (flags.seccompPolicyDir !== undefined && !flags.disableSandbox) {
    seccompPolicyFile = path.join(flags.seccompPolicyDir, PLUGIN_POLICY_FILE);
    if (!existsSync(seccompPolicyFile)) {
      throw new RunSetupError(`--seccomp-policy-dir ${flags.seccompPolicyDir} has no ${PLUGIN_POLICY_FILE} ` +
        "(plugvisor reads the plugin's policy from that file, as crosvm did in plugin mode)");
    }
  }
  const hostIp = flags.hostIp ?? flags.host_ip;
  return {
    plugin: flags.plugin,
    args: [...(flags.params ?? []), ...pluginArgs],
    cpus: flags.cpus,
    sandbox: flags.disableSandbox
      ? false
      : {
          mounts,
          gidMaps,
          ...(flags.pluginRoot !== undefined ? { pluginRoot: flags.pluginRoot } : {}),
          ...(seccompPolicyFile !== undefined ? { seccompPolicyFile } : {}),
          ...(flags.seccompLogFailures ? { seccompLogFailures: true } : {}),
        },
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
