/**
 * What the `plugvisor` commands share: option parsers, the sandbox options
 * (the same for `run` and `exec`), and how a run is stopped by SIGINT,
 * SIGTERM or a closed output.
 */
import { Command, InvalidArgumentError } from 'commander';
import { parseBindMount, parseGidMap, type BindMount, type GidMap, type SandboxConfig } from '../sandbox/index.js';

export function integerIn(min: number, max: number, what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) throw new InvalidArgumentError(`${what} must be a whole number from ${min} to ${max}.`);
    return n;
  };
}

export function collect<T>(parse: (spec: string) => T) {
  return (value: string, previous: T[]): T[] => {
    try {
      return [...previous, parse(value)];
    } catch (e) {
      throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
    }
  };
}

export interface SandboxFlags {
  disableSandbox?: boolean;
  pluginRoot?: string;
  pluginMount: BindMount[];
  pluginGidMap: GidMap[];
  seccompPolicy?: string;
}

/** Adds --disable-sandbox, --plugin-root, --plugin-mount, --plugin-gid-map and --seccomp-policy. */
export function addSandboxOptions(command: Command): Command {
  return command
    .option('--disable-sandbox', 'run the plugin as a plain child process instead of in the jail')
    .option('--plugin-root <dir>', "the plugin's / in the jail (default: an empty read-only root with the plugin and what it needs)")
    .option('--plugin-mount <src:dst[:writable]>', 'bind a host path into the jail (repeatable; writable is true or false)', collect(parseBindMount), [])
    .option('--plugin-gid-map <inner:outer:count>', 'map host groups into the jail (repeatable)', collect(parseGidMap), [])
    .option('--seccomp-policy <file>', "the plugin's seccomp policy (default: the one shipped in src/sandbox)");
}

/** The run's sandbox from the flags: false with --disable-sandbox; `mounts` are bound besides the user's. */
export function sandboxFrom(flags: SandboxFlags, mounts: BindMount[] = []): SandboxConfig | false {
  if (flags.disableSandbox) return false;
  return {
    mounts: [...flags.pluginMount, ...mounts],
    gidMaps: flags.pluginGidMap,
    ...(flags.pluginRoot !== undefined ? { pluginRoot: flags.pluginRoot } : {}),
    ...(flags.seccompPolicy !== undefined ? { seccompPolicyFile: flags.seccompPolicy } : {}),
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
  process.stdout.on('error', stop);
  process.stderr.on('error', stop);
  return () => {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  };
}
