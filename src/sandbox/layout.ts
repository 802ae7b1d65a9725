/**
 * What the jail's file system holds: the plugin and what it needs to run
 * (its interpreter, shared libraries, plugvisor's runtime for a Node plugin)
 * on an empty root, or the user's --plugin-root; and the checks on both, and
 * on --plugin-mount, that can be made before anything is spawned.
 */
import { accessSync, constants as fsConstants, existsSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, posix, relative } from 'node:path';
import { PACKAGE_ROOT } from '../package-root.js';
import { addonPath } from '../native/locate.js';
import { envCommand, inspectExecutable, sharedLibraries } from './executable.js';
import type { BindMount, SandboxConfig } from './options.js';
import { findOnPath } from './tools.js';

/** The jail's command and file system. */
export interface JailLayout {
  /** The host directory bound read-only as the jail's `/`; undefined for the empty root. */
  root: string | undefined;
  /** argv inside the jail */
  command: string[];
  /** environment variables to drop (they would point Node at host files it cannot see) */
  unsetEnv: string[];
  /** read-only binds the plugin needs (before the user's --plugin-mount binds), parents first */
  binds: BindMount[];
}

/**
 * Works out the jail's command and contents, and checks the paths involved
 * (the root, the plugin, every --plugin-mount); throws an Error that names
 * the one that is wrong. Makes no descriptor, so a bad path leaks nothing.
 */
export function layoutJail(config: SandboxConfig, pluginPath: string, pluginArgs: string[]): JailLayout {
  const mounts = config.mounts ?? [];
  let layout: JailLayout;
  if (config.pluginRoot !== undefined) {
    layout = layoutInRoot(config.pluginRoot, mounts, pluginPath, pluginArgs);
  } else {
    layout = layoutPlugin(pluginPath, pluginArgs);
    if (existsSync('/etc/ld.so.cache')) addReadOnly(layout.binds, '/etc/ld.so.cache');
  }
  for (const m of mounts) {
    try {
      realpathSync(m.source);
    } catch (e) {
      throw new Error(`--plugin-mount source ${m.source} does not exist (${(e as NodeJS.ErrnoException).code})`);
    }
    if (m.target === '/proc' || m.target === '/dev' || isWithin(m.target, '/proc') || isWithin(m.target, '/dev')) {
      throw new Error(`--plugin-mount target ${m.target} is inside the jail's /proc or /dev, which the sandbox manages`);
    }
  }
  return { ...layout, binds: simplifyBinds(layout.binds) };
}

/** The user's root: the plugin is found in it or in a --plugin-mount, and every mount point must exist in it. */
function layoutInRoot(pluginRoot: string, mounts: readonly BindMount[], pluginPath: string, pluginArgs: string[]): JailLayout {
  let root: string;
  try {
    root = realpathSync(pluginRoot);
  } catch (e) {
    throw new Error(`--plugin-root ${pluginRoot} does not exist (${(e as NodeJS.ErrnoException).code})`);
  }
  if (!statSync(root).isDirectory()) throw new Error(`--plugin-root ${pluginRoot} is not a directory`);
  if (!isAbsolute(pluginPath)) {
    throw new Error(`with --plugin-root the plugin path must be absolute, as seen inside the root (got ${pluginPath})`);
  }
  // The plugin may come from the root itself or from a --plugin-mount covering its path.
  const jailPlugin = posix.normalize(pluginPath);
  const inRoot = join(root, jailPlugin);
  const viaMount = [...mounts].reverse().find((m) => isWithin(jailPlugin, m.target));
  const inMount = viaMount !== undefined ? join(viaMount.source, relative(viaMount.target, jailPlugin)) : undefined;
  if (!existsSync(inRoot) && (inMount === undefined || !existsSync(inMount))) {
    throw new Error(`plugin ${pluginPath} does not exist inside --plugin-root ${root} (${inRoot}); bind it with --plugin-mount`);
  }
  for (const dir of ['/proc', '/dev', ...mounts.map((m) => m.target)]) {
    if (!existsSync(join(root, dir))) {
      throw new Error(
        `--plugin-root ${root} has no ${dir}: the root is read-only, so every mount point must already exist in it`,
      );
    }
  }
  // NODE_EXTRA_CA_CERTS names a host file, which a root of the user's rarely has.
  return { root, command: [pluginPath, ...pluginArgs], binds: [], unsetEnv: ['NODE_EXTRA_CA_CERTS'] };
}

/** Works out the jail's command and contents for a plugin on the empty root. */
function layoutPlugin(pluginPath: string, pluginArgs: string[]): JailLayout {
  const real = realFile(pluginPath, 'plugin');
  try {
    accessSync(real, fsConstants.X_OK);
  } catch {
    throw new Error(`plugin ${pluginPath} is not executable`);
  }
  const binds: BindMount[] = [];
  const kind = inspectExecutable(real);
  if (kind.kind === 'elf') {
    addElfWithLibraries(binds, real);
    return { root: undefined, command: [real, ...pluginArgs], binds, unsetEnv: [] };
  }

  // A #! script: run its interpreter directly, so the jail needs no /usr/bin/env and no PATH.
  let interpreter = kind.interpreter;
  const interpArgs: string[] = [];
  if (basename(interpreter) === 'env') {
    const [name, ...args] = envCommand(pluginPath, kind.interpreter, kind.argument);
    const found = findOnPath(name);
    if (found === undefined) throw new Error(`plugin ${pluginPath} wants '${name}', which is not on PATH`);
    interpreter = found;
    interpArgs.push(...args);
  } else if (kind.argument !== undefined) {
    interpArgs.push(kind.argument);
  }
  const interpReal = realFile(interpreter, `interpreter of plugin ${pluginPath}:`);
  if (inspectExecutable(interpReal).kind !== 'elf') {
    throw new Error(`plugin ${pluginPath}: its interpreter ${interpReal} is itself a script, which the sandbox does not follow`);
  }
  addElfWithLibraries(binds, interpReal);
  addReadOnly(binds, real);
  const unsetEnv: string[] = [];
  if (isNodeBinary(interpReal)) {
    // Extra CA certificates are a host file, and the jail has no network to use them on.
    unsetEnv.push('NODE_EXTRA_CA_CERTS');
    addPlugvisorRuntime(binds);
    const pkgRoot = nearestPackageRoot(dirname(real));
    const ownRoot = realpathSync(PACKAGE_ROOT);
    if (pkgRoot !== undefined && pkgRoot !== '/' && !isWithin(pkgRoot, ownRoot)) {
      addReadOnly(binds, pkgRoot); // the plugin's own package: its modules and node_modules
    } else if (pkgRoot === undefined) {
      addReadOnly(binds, dirname(real)); // modules beside the script
    }
  }
  return { root: undefined, command: [interpReal, ...interpArgs, real, ...pluginArgs], binds, unsetEnv };
}

/** The real path of `file`, which must be a regular file (`what` names it in the error). */
function realFile(file: string, what: string): string {
  let real: string;
  try {
    real = realpathSync(file);
  } catch (e) {
    throw new Error(`${what} ${file} not found (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!statSync(real).isFile()) throw new Error(`${what} ${file} is not a regular file`);
  return real;
}

/** The nearest directory at or above `dir` that holds a package.json. */
function nearestPackageRoot(dir: string): string | undefined {
  for (let d = dir; ; d = dirname(d)) {
    if (existsSync(join(d, 'package.json'))) return d;
    if (dirname(d) === d) return undefined;
  }
}

function isNodeBinary(real: string): boolean {
  if (/^node(js)?$/.test(basename(real))) return true;
  try {
    return realpathSync(process.execPath) === real;
  } catch {
    return false;
  }
}

/** Whether path `child` is `parent` or below it. */
function isWithin(child: string, parent: string): boolean {
  return child === parent || child.startsWith(parent.endsWith('/') ? parent : parent + '/');
}

function addReadOnly(binds: BindMount[], hostPath: string, jailPath: string = hostPath): void {
  binds.push({ source: hostPath, target: jailPath, writable: false });
}

function addElfWithLibraries(binds: BindMount[], elfReal: string): void {
  addReadOnly(binds, elfReal);
  for (const lib of sharedLibraries(elfReal)) addReadOnly(binds, realpathSync(lib), lib);
}

/** The plugvisor runtime a Node plugin loads: the SDK (dist/), its dependencies and the native addon. */
function addPlugvisorRuntime(binds: BindMount[]): void {
  const root = realpathSync(PACKAGE_ROOT);
  for (const name of ['package.json', 'dist', 'node_modules']) {
    const p = join(root, name);
    if (existsSync(p)) addReadOnly(binds, p);
  }
  // Where node-gyp-build finds it in the jail too: the same path as here.
  addElfWithLibraries(binds, realpathSync(addonPath()));
}

/** Drops binds already covered by a read-only bind of an ancestor directory; sorts parents first. */
function simplifyBinds(binds: BindMount[]): BindMount[] {
  const sorted = [...binds].sort((a, b) => (a.target < b.target ? -1 : a.target > b.target ? 1 : 0));
  const kept: BindMount[] = [];
  for (const b of sorted) {
    const covered = kept.some(
      (k) =>
        !k.writable && !b.writable && isWithin(b.target, k.target) && join(k.source, relative(k.target, b.target)) === b.source,
    );
    if (!covered) kept.push(b);
  }
  return kept;
}
