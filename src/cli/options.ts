/**
 * What the `plugvisor` commands share: option parsers, the sandbox options
 * (the same for `run` and `exec`, crosvm's spellings included), and how a run
 * is stopped by SIGINT, SIGTERM or a closed output. Nothing here loads the
 * host or the native addon.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import { createLog, type LogSink } from '../host/log.js';
import { parseBindMount, parseGidMap, type BindMount, type GidMap, type SandboxConfig } from '../sandbox/options.js';
import { parseListFile } from './list-file.js';

/** A command line that cannot run as given; the message says what to change. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function integerIn(min: number, max: number, what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max)
      throw new InvalidArgumentError(`${what} must be a whole number from ${min} to ${max}.`);
    return n;
  };
}

/** A parser as commander wants one: errors become InvalidArgumentError. */
export function checked<T>(parse: (value: string) => T) {
  return (value: string): T => {
    try {
      return parse(value);
    } catch (e) {
      throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
    }
  };
}

/** A parser that only checks: the value stays the text (the library parses it again). */
export function validated(check: (value: string) => unknown) {
  return checked((value: string): string => {
    check(value);
    return value;
  });
}

/** A repeatable option: each value is parsed and collected. */
export function collect<T>(parse: (spec: string) => T) {
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

/** A repeatable jail option with a twin that reads its values from a file. */
interface ListOption<T> {
  /** `plugin-mount` for --plugin-mount and --plugin-mount-file. */
  name: string;
  /** The value's syntax in --help. */
  syntax: string;
  help: string;
  /** What the -file twin does, before "one … value a line". */
  fileHelp: string;
  parse: (value: string) => T;
}

const LIST_OPTIONS: readonly ListOption<unknown>[] = [
  {
    name: 'plugin-mount',
    syntax: 'src[:dst[:writable]]',
    help: 'bind a host path into the jail (repeatable; dst defaults to src, writable is true or false)',
    fileHelp: 'bind every path the file lists',
    parse: parseBindMount,
  },
  {
    name: 'plugin-gid-map',
    syntax: 'inner[:outer[:count]]',
    help: 'map host groups into the jail (repeatable; outer defaults to inner, count to 1)',
    fileHelp: 'map every group range the file lists',
    parse: parseGidMap,
  },
];

/**
 * Adds `--name <syntax>` (repeatable) and `--name-file <file>` (the same
 * values, one a line), both collected into one list in command-line order.
 */
function addListOption<T>(command: Command, option: ListOption<T>): void {
  const list: T[] = [];
  const fileOption = `--${option.name}-file`;
  command
    .option(
      `--${option.name} <${option.syntax}>`,
      option.help,
      collectInOrder(list, (value) => [option.parse(value)]),
    )
    .option(
      `${fileOption} <file>`,
      `${option.fileHelp}, one --${option.name} value a line (# comments; repeatable)`,
      collectInOrder(list, (file) => parseListFile(file, fileOption, option.parse)),
    );
}

/** The file --seccomp-policy-dir names in its directory: the one crosvm read for plugins. */
export const PLUGIN_POLICY_FILE = 'plugin.policy';

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

export interface SandboxFlags {
  disableSandbox?: boolean;
  pluginRoot?: string;
  /** --plugin-mount and --plugin-mount-file fill the same list, in command-line order. */
  pluginMount?: BindMount[];
  pluginMountFile?: BindMount[];
  /** --plugin-gid-map and --plugin-gid-map-file, likewise. */
  pluginGidMap?: GidMap[];
  pluginGidMapFile?: GidMap[];
  seccompPolicy?: string;
  seccompPolicyDir?: string;
  seccompLogFailures?: boolean;
}

/** Adds the jail's options: --disable-sandbox, --plugin-root, the binds, the gid maps and the seccomp policy. */
export function addSandboxOptions(command: Command): Command {
  command
    .option('--disable-sandbox', 'run the plugin as a plain child process instead of in the jail')
    .option(
      '--plugin-root <dir>',
      "the plugin's / in the jail (default: an empty read-only root with the plugin and what it needs)",
    );
  for (const option of LIST_OPTIONS) addListOption(command, option);
  return command
    .option('--seccomp-policy <file>', "the plugin's seccomp policy (default: the one shipped in src/sandbox)")
    .option('--seccomp-policy-dir <dir>', `take the plugin's seccomp policy from DIR/${PLUGIN_POLICY_FILE}, as crosvm did`)
    .option(
      '--seccomp-log-failures',
      'log the calls the seccomp policy would kill the plugin for, and allow them, instead of killing it',
    );
}

/**
 * The run's sandbox from the flags (false with --disable-sandbox, warning
 * about each jail option given that then does nothing); `extraMounts` are
 * bound after the user's. Throws a UsageError for options that contradict.
 */
export function sandboxFrom(
  flags: SandboxFlags,
  command: Command,
  log: LogSink,
  extraMounts: BindMount[] = [],
): SandboxConfig | false {
  if (flags.disableSandbox) {
    for (const [key, option] of Object.entries(SANDBOX_OPTIONS)) {
      if (command.getOptionValueSource(key) === 'cli') {
        createLog(log).warn(`${option} has no effect with --disable-sandbox: the plugin runs outside the jail`);
      }
    }
    return false;
  }
  if (flags.seccompPolicy !== undefined && flags.seccompPolicyDir !== undefined) {
    throw new UsageError('--seccomp-policy and --seccomp-policy-dir both name the policy: give one');
  }
  let seccompPolicyFile = flags.seccompPolicy;
  if (flags.seccompPolicyDir !== undefined) {
    seccompPolicyFile = join(flags.seccompPolicyDir, PLUGIN_POLICY_FILE);
    if (!existsSync(seccompPolicyFile)) {
      throw new UsageError(
        `--seccomp-policy-dir ${flags.seccompPolicyDir} has no ${PLUGIN_POLICY_FILE} ` +
          "(plugvisor reads the plugin's policy from that file, as crosvm did in plugin mode)",
      );
    }
  }
  return {
    mounts: [...(flags.pluginMount ?? flags.pluginMountFile ?? []), ...extraMounts],
    gidMaps: flags.pluginGidMap ?? flags.pluginGidMapFile ?? [],
    ...(flags.pluginRoot !== undefined ? { pluginRoot: flags.pluginRoot } : {}),
    ...(seccompPolicyFile !== undefined ? { seccompPolicyFile } : {}),
    ...(flags.seccompLogFailures ? { seccompLogFailures: true } : {}),
  };
}

/**
 * Makes SIGINT, SIGTERM and a closed stdout or stderr abort `abort`; returns
 * the function that removes the signal handlers again. A closed output (the
 * reader of a pipe went away, as with `| head`) ends the run the way SIGPIPE
 * ends other tools, through the usual shutdown; unhandled, the write error
 * would kill node at once.
 */
export function stopOnSignals(abort: AbortController): () => void {
  const stop = (): void => abort.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  onceMade('stdout', (stream) => stream.on('error', stop));
  onceMade('stderr', (stream) => stream.on('error', stop));
  return () => {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  };
}

/**
 * Calls `use` with process.stdout or process.stderr once something makes it.
 * node makes each at its first use, through a getter on `process`; making
 * one loads node's net and stream modules (~2 ms of start-up), which a run
 * that writes nothing to it need not pay. Node's getter is put back at the
 * first use, so that it is wrapped only until then.
 */
function onceMade(name: 'stdout' | 'stderr', use: (stream: NodeJS.WriteStream) => void): void {
  const made = Object.getOwnPropertyDescriptor(process, name);
  if (made?.get === undefined || made.configurable !== true) {
    use(process[name]);
    return;
  }
  Object.defineProperty(process, name, {
    configurable: true,
    enumerable: made.enumerable ?? true,
    get() {
      Object.defineProperty(process, name, made);
      const stream = process[name];
      use(stream);
      return stream;
    },
  });
}
