/**
 * The plugin jail: turns "run this plugin" into a bubblewrap command line.
 *
 * The host spawns `plan.file` with `plan.args`, the main socket at fd 3 and
 * `plan.extraFds` at fds 4, 5, ... The command is
 *
 *   plugvisor-jail-exec --nofile 32768 --keep-fds-below 5 -- bwrap <namespaces, identity, mounts> --seccomp 4 -- <plugin>
 *
 * plugvisor-jail-exec (native/seccomp, one of the native parts binding.gyp
 * builds and the package ships prebuilt) sets RLIMIT_NOFILE and closes every
 * fd the host inherited by accident, then execs bubblewrap.
 *
 * Everything that can be checked before the spawn is checked here, and every
 * missing piece throws an Error that names it: there is no silent fallback to
 * an unsandboxed plugin. See README.md beside this file for the threat model.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PACKAGE_ROOT } from '../package-root.js';
import { addonPath, nativeDir, NATIVE_FIX } from '../native/locate.js';

/** A host path bound into the jail (`--plugin-mount SRC:DST[:WRITABLE]`). */
export interface BindMount {
  /** The host path (absolute). */
  source: string;
  /** Where the plugin sees it (absolute, not `/`, not under /proc or /dev). */
  target: string;
  /** True for a read-write bind; binds are read-only otherwise. */
  writable: boolean;
}
/** A range of host groups mapped into the jail's user namespace (`--plugin-gid-map`; plugvisor must run as root). */
export interface GidMap {
  /** The first gid inside the jail. */
  inner: number;
  /** The host gid it maps to. */
  outer: number;
  /** How many consecutive gids the range covers. */
  count: number;
}
/** How to jail the plugin (`RunOptions.sandbox`); see the README's "Sandbox" section. */
export interface SandboxConfig {
  /** A directory bound read-only as the plugin's `/` instead of the default empty root. */
  pluginRoot?: string;
  /** Host paths to bind in, after the automatic binds. */
  mounts: BindMount[];
  /** Extra gid ranges (root only). */
  gidMaps: GidMap[];
  /** A seccomp policy file replacing src/sandbox/plugin-seccomp.policy. */
  seccompPolicyFile?: string;
  /** crosvm's --seccomp-log-failures: calls the policy would kill the plugin for are logged and allowed instead. */
  seccompLogFailures?: boolean;
}
export interface LaunchPlan {
  file: string;
  args: string[];
  /** fds the child must inherit at stdio indexes 4, 5, ... (3 is the main socket) */
  extraFds: number[];
  /** Closes the plan's fds in this process (idempotent). Safe to call right after the spawn. */
  dispose(): void;
}

/** RLIMIT_NOFILE (soft and hard) inside the jail, as crosvm gave its plugins (see pluginNofileLimit). */
export const PLUGIN_NOFILE_LIMIT = 32768;
/** The plugin's uid/gid inside the jail when the host runs as root (never root inside). */
export const UNPRIVILEGED_ID = 65534;
/** The only device nodes in the jail's /dev. */
export const JAIL_DEVICES: readonly string[] = ['full', 'null', 'urandom', 'zero'];
/** Host name inside the jail's UTS namespace. */
export const JAIL_HOSTNAME = 'plugvisor-plugin';

/** The fd number (in the child) of the first extra fd. */
const FIRST_EXTRA_FD = 4;
const MAX_ID = 0xffffffff; // (uid_t)-1 is never a valid id

export const DEFAULT_SECCOMP_POLICY_PATH: string = path.join(PACKAGE_ROOT, 'src', 'sandbox', 'plugin-seccomp.policy');

// ---------------------------------------------------------------------------
// Option parsing

/**
 * Parses `SRC[:DST[:WRITABLE]]` (WRITABLE = true/false, default false; DST
 * defaults to SRC), the form crosvm's --plugin-mount took.
 */
export function parseBindMount(spec: string): BindMount {
  const parts = spec.split(':');
  if (parts.length > 3 || parts[0] === '') {
    throw new Error(`bad --plugin-mount '${spec}': expected SRC[:DST[:WRITABLE]] (paths cannot contain ':')`);
  }
  const [source, targetText, writableText] = parts as [string, string | undefined, string | undefined];
  const target = targetText === undefined || targetText === '' ? source : targetText;
  if (!path.isAbsolute(source)) throw new Error(`bad --plugin-mount '${spec}': the source '${source}' must be an absolute path`);
  if (!path.isAbsolute(target)) throw new Error(`bad --plugin-mount '${spec}': the target '${target}' must be an absolute path`);
  if (target.split('/').includes('..')) throw new Error(`bad --plugin-mount '${spec}': the target must not contain '..'`);
  const normalTarget = path.posix.normalize(target).replace(/\/+$/, '');
  if (normalTarget === '') throw new Error(`bad --plugin-mount '${spec}': the target cannot be '/' (use --plugin-root)`);
  let writable = false;
  if (writableText !== undefined) {
    if (writableText === 'true') writable = true;
    else if (writableText !== 'false') {
      throw new Error(`bad --plugin-mount '${spec}': WRITABLE must be 'true' or 'false', not '${writableText}'`);
    }
  }
  return { source: path.normalize(source), target: normalTarget, writable };
}

function parseId(text: string, what: string, spec: string): number {
  if (!/^[0-9]+$/.test(text)) throw new Error(`bad --plugin-gid-map '${spec}': ${what} '${text}' is not a non-negative integer`);
  const n = Number(text);
  if (n >= MAX_ID) throw new Error(`bad --plugin-gid-map '${spec}': ${what} ${text} is too large`);
  return n;
}

/** Parses `INNER[:OUTER[:COUNT]]` (OUTER defaults to INNER, COUNT to 1), as crosvm's --plugin-gid-map. */
export function parseGidMap(spec: string): GidMap {
  const parts = spec.split(':');
  if (parts.length > 3 || parts[0] === '') {
    throw new Error(`bad --plugin-gid-map '${spec}': expected INNER[:OUTER[:COUNT]], e.g. 1000:1000:1`);
  }
  const inner = parseId(parts[0]!, 'INNER', spec);
  const outer = parts[1] === undefined || parts[1] === '' ? inner : parseId(parts[1], 'OUTER', spec);
  const count = parts[2] === undefined ? 1 : parseId(parts[2], 'COUNT', spec);
  if (count === 0) throw new Error(`bad --plugin-gid-map '${spec}': COUNT must be at least 1`);
  if (inner + count > MAX_ID || outer + count > MAX_ID) {
    throw new Error(`bad --plugin-gid-map '${spec}': the range runs past the largest gid`);
  }
  return { inner, outer, count };
}

// ---------------------------------------------------------------------------
// Identity

export interface JailIdentity {
  /** uid/gid of the plugin inside its user namespace (never 0). */
  uid: number;
  gid: number;
  /** the host ids they map to */
  hostUid: number;
  hostGid: number;
}

/** The plugin keeps the host's uid/gid (as crosvm did), except that root becomes 65534 inside. */
export function jailIdentity(hostUid: number = process.getuid!(), hostGid: number = process.getgid!()): JailIdentity {
  return {
    uid: hostUid === 0 ? UNPRIVILEGED_ID : hostUid,
    gid: hostGid === 0 ? UNPRIVILEGED_ID : hostGid,
    hostUid,
    hostGid,
  };
}

/**
 * The full gid_map for the jail: the plugin's own gid plus the user's maps.
 * Throws if ranges overlap (the kernel would refuse the map with EINVAL).
 */
export function jailGidMap(identity: JailIdentity, extra: GidMap[]): GidMap[] {
  const all: GidMap[] = [{ inner: identity.gid, outer: identity.hostGid, count: 1 }, ...extra];
  const show = (m: GidMap, i: number) => (i === 0 ? `the plugin's own gid (${m.inner}:${m.outer}:1)` : `${m.inner}:${m.outer}:${m.count}`);
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const a = all[i]!;
      const b = all[j]!;
      const overlaps = (x: number, y: number) => x < y + b.count && y < x + a.count;
      if (overlaps(a.inner, b.inner) || overlaps(a.outer, b.outer)) {
        throw new Error(`--plugin-gid-map ${show(b, j)} overlaps ${show(a, i)}: inner and outer ranges must be disjoint`);
      }
    }
  }
  if (all.length > 340) throw new Error('too many --plugin-gid-map entries (the kernel allows 340 lines)');
  return all;
}

export function formatIdMap(maps: GidMap[]): string {
  return maps.map((m) => `${m.inner} ${m.outer} ${m.count}\n`).join('');
}

// ---------------------------------------------------------------------------
// Host tools and kernel support

/** The first executable file called `name` on PATH (or on `searchPath`, a list in PATH's form). */
export function findOnPath(name: string, searchPath: string = process.env.PATH ?? ''): string | undefined {
  for (const dir of searchPath.split(':')) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch { /* not here */ }
  }
  return undefined;
}

function requireTool(name: string, what: string, install = ''): string {
  const found = findOnPath(name);
  if (found === undefined) {
    throw new Error(`cannot sandbox the plugin: ${what} ('${name}') is not installed or not on PATH${install}` +
      ' (or run the plugin unsandboxed with --disable-sandbox)');
  }
  return found;
}

function readSysctl(file: string): string | undefined {
  try { return fs.readFileSync(file, 'utf8').trim(); } catch { return undefined; }
}

/** Reasons the kernel configuration forbids the namespaces the jail needs, if any can be seen. */
function userNamespaceHints(): string[] {
  const hints: string[] = [];
  if (readSysctl('/proc/sys/user/max_user_namespaces') === '0') hints.push('user namespaces are disabled (user.max_user_namespaces = 0)');
  if (process.geteuid!() !== 0) {
    if (readSysctl('/proc/sys/kernel/unprivileged_userns_clone') === '0') {
      hints.push('unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0)');
    }
    if (readSysctl('/proc/sys/kernel/apparmor_restrict_unprivileged_userns') === '1') {
      hints.push('AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1); bwrap needs a profile that allows them');
    }
  }
  if (!fs.existsSync('/proc/self/ns/user')) hints.push('this kernel has no user namespace support (CONFIG_USER_NS)');
  return hints;
}

/**
 * Why bubblewrap cannot build the jail on this machine, as a message for a
 * person, or null if it can. For after a jailed plugin failed before `start`:
 * bwrap reports a jail it cannot build only by exiting early, and checking
 * before every launch would cost every run one more bwrap start (~7 ms here).
 */
export function diagnoseSandbox(): string | null {
  const bwrap = findOnPath('bwrap');
  if (bwrap === undefined) return null; // planSandboxedLaunch already said so
  const problem = probeBubblewrap(bwrap, jailIdentity());
  return problem === null ? null : `cannot sandbox the plugin: ${problem}`;
}

/** Runs bwrap with the namespaces the jail uses; returns an error text or null. */
function probeBubblewrap(bwrap: string, identity: JailIdentity): string | null {
  const run = spawnSync(bwrap, [
    '--unshare-user', '--uid', String(identity.uid), '--gid', String(identity.gid), '--disable-userns',
    '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-net', '--cap-drop', 'ALL',
    '--die-with-parent', '--new-session', '--ro-bind', '/', '/', '--proc', '/proc',
    '--', bwrap, '--version',
  ], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  if (run.error !== undefined) return `running ${bwrap} failed: ${run.error.message}`;
  if (run.status === 0) return null;
  const hints = userNamespaceHints();
  return `bubblewrap cannot create the plugin's namespaces: ${(run.stderr || `exit status ${run.status}`).trim()}` +
    (hints.length > 0 ? ` (${hints.join('; ')})` : '');
}

/** This process's RLIMIT_NOFILE, the soft (in force) or the hard one, or Infinity. */
export function openFileLimit(which: 'soft' | 'hard'): number {
  const limits = readSysctl('/proc/self/limits') ?? '';
  const line = limits.split('\n').find((l) => l.startsWith('Max open files'));
  const value = line?.trim().split(/\s+/)[which === 'soft' ? 3 : 4];
  if (value === undefined || value === 'unlimited') return Infinity;
  return Number(value);
}

/**
 * The RLIMIT_NOFILE (soft = hard) the plugin gets: 32768, or this process's
 * hard limit when that is lower (raising a hard limit needs CAP_SYS_RESOURCE,
 * which even root may lack in a container). It is a ceiling on the plugin.
 */
export function pluginNofileLimit(): number {
  return Math.min(PLUGIN_NOFILE_LIMIT, openFileLimit('hard'));
}

// ---------------------------------------------------------------------------
// Seccomp

/** The sandbox's C helpers, built from native/seccomp with the addon. */
export type HelperName = 'plugvisor-seccomp-compile' | 'plugvisor-jail-exec';

/** Where a helper may be, most specific first: $PLUGVISOR_HELPER_DIR, then beside the addon. */
export function helperCandidates(name: HelperName): string[] {
  const list: string[] = [];
  if (process.env.PLUGVISOR_HELPER_DIR) list.push(path.join(process.env.PLUGVISOR_HELPER_DIR, name));
  list.push(path.join(nativeDir(), name));
  return list;
}

function findHelper(name: HelperName): string {
  for (const candidate of helperCandidates(name)) {
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch { /* next */ }
  }
  throw new Error(`cannot sandbox the plugin: ${name} is missing (looked for ${helperCandidates(name).join(', ')}); ${NATIVE_FIX}`);
}

/**
 * Compiles a policy file to a raw BPF program (bwrap's --seccomp format).
 * With `logFailures`, kill and trap actions become log. Throws with the compiler's message.
 */
export function compileSeccompPolicy(policyFile: string, logFailures = false): Buffer {
  try {
    fs.accessSync(policyFile, fs.constants.R_OK);
  } catch (e) {
    throw new Error(`cannot sandbox the plugin: the seccomp policy ${policyFile} is not readable (${(e as Error).message})`);
  }
  const compiler = findHelper('plugvisor-seccomp-compile');
  const run = spawnSync(compiler, [...(logFailures ? ['--log-failures'] : []), policyFile], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 4 << 20, timeout: 10_000 });
  if (run.error !== undefined) throw new Error(`cannot sandbox the plugin: running ${compiler} failed: ${run.error.message}`);
  if (run.status !== 0) {
    const message = run.stderr.toString().trim() || `exit status ${run.status ?? run.signal}`;
    if (run.status === 2) throw new Error(`cannot sandbox the plugin: bad seccomp policy: ${message}`);
    throw new Error(`cannot sandbox the plugin: ${compiler} failed: ${message}`);
  }
  const bpf = run.stdout;
  if (bpf.length === 0 || bpf.length % 8 !== 0) throw new Error(`${compiler} produced ${bpf.length} bytes, not a BPF program`);
  return bpf;
}

/** An fd (close-on-exec in this process) reading `data`, backed by an already-unlinked temporary file. */
function anonymousFileFd(data: Buffer, name: string): number {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plugvisor-sandbox-'));
  const file = path.join(dir, name);
  try {
    fs.writeFileSync(file, data, { mode: 0o600 });
    return fs.openSync(file, 'r');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// What the plugin needs in the jail

interface Bind { source: string; target: string; writable: boolean }

/** Reads the start of a file: ELF header and program headers, or a #! line. */
type ExecutableKind =
  | { kind: 'elf'; interpreter: string | undefined }
  | { kind: 'script'; interpreter: string; argument: string | undefined };

function inspectExecutable(file: string): ExecutableKind {
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(4096);
    const n = fs.readSync(fd, head, 0, head.length, 0);
    if (n >= 2 && head[0] === 0x23 && head[1] === 0x21) { // "#!"
      const end = head.indexOf(0x0a, 2);
      const line = head.subarray(2, end < 0 ? n : end).toString('utf8').trim();
      const m = /^(\S+)(?:\s+(.*))?$/.exec(line);
      if (m === null) throw new Error(`plugin ${file}: empty #! line`);
      return { kind: 'script', interpreter: m[1]!, argument: m[2]?.trim() || undefined };
    }
    if (n < 64 || head.readUInt32BE(0) !== 0x7f454c46) {
      throw new Error(`plugin ${file} is neither an ELF executable nor a #! script; use --plugin-root to give it a whole root file system`);
    }
    if (head[4] !== 2 || head[5] !== 1) throw new Error(`plugin ${file} is not a 64-bit little-endian ELF file`);
    const machine = head.readUInt16LE(18);
    if (machine !== 62) throw new Error(`plugin ${file} is not an x86_64 executable (e_machine ${machine})`);
    const phoff = Number(head.readBigUInt64LE(32));
    const phentsize = head.readUInt16LE(54);
    const phnum = head.readUInt16LE(56);
    const table = Buffer.alloc(phentsize * phnum);
    fs.readSync(fd, table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) {
      const ph = table.subarray(i * phentsize, (i + 1) * phentsize);
      if (ph.readUInt32LE(0) !== 3) continue; // PT_INTERP
      const offset = Number(ph.readBigUInt64LE(8));
      const size = Number(ph.readBigUInt64LE(32));
      const buf = Buffer.alloc(Math.min(size, 4096));
      fs.readSync(fd, buf, 0, buf.length, offset);
      const nul = buf.indexOf(0);
      return { kind: 'elf', interpreter: buf.subarray(0, nul < 0 ? buf.length : nul).toString('utf8') };
    }
    return { kind: 'elf', interpreter: undefined };
  } finally {
    fs.closeSync(fd);
  }
}

let trustedLoaderCache: string | undefined;
/** The system's dynamic loader: the one this Node binary uses. */
function trustedLoader(): string {
  if (trustedLoaderCache === undefined) {
    const kind = inspectExecutable(fs.realpathSync(process.execPath));
    trustedLoaderCache = kind.kind === 'elf' && kind.interpreter !== undefined ? kind.interpreter : '/lib64/ld-linux-x86-64.so.2';
  }
  return trustedLoaderCache;
}

/**
 * The shared libraries an ELF file needs, as paths the dynamic loader inside
 * the jail will open. Lists them with the system loader's --list mode (what
 * ldd does, but never through the file's own PT_INTERP, so listing cannot run
 * code of the file's choosing).
 */
export function sharedLibraries(elf: string): string[] {
  const kind = inspectExecutable(elf);
  if (kind.kind !== 'elf') throw new Error(`${elf} is not an ELF file`);
  // No PT_INTERP and not ET_DYN: a static executable, which needs nothing.
  if (kind.interpreter === undefined && !isSharedObject(elf)) return [];
  const loader = trustedLoader();
  const run = spawnSync(loader, ['--list', elf], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  if (run.error !== undefined) throw new Error(`listing the libraries of ${elf} with ${loader} failed: ${run.error.message}`);
  const libs: string[] = [];
  const missing: string[] = [];
  for (const raw of run.stdout.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    let m = /^(\S+) => not found$/.exec(line);
    if (m !== null) { missing.push(m[1]!); continue; }
    m = /^\S+ => (\/\S+) \(0x[0-9a-f]+\)$/.exec(line) ?? /^(\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (m !== null) libs.push(m[1]!);
  }
  if (libs.length === 0 && /statically linked|not a dynamic executable/.test(run.stdout + run.stderr)) return [];
  if (missing.length > 0) throw new Error(`${elf} needs shared libraries that cannot be found: ${missing.join(', ')}`);
  if (run.status !== 0 && libs.length === 0) {
    throw new Error(`listing the libraries of ${elf} failed: ${run.stderr.trim() || `exit status ${run.status}`}`);
  }
  if (kind.interpreter !== undefined) libs.push(kind.interpreter);
  return [...new Set(libs)];
}

function isSharedObject(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(18);
    fs.readSync(fd, head, 0, 18, 0);
    return head.readUInt16LE(16) === 3; // ET_DYN
  } finally {
    fs.closeSync(fd);
  }
}

function realFile(file: string, what: string): string {
  let real: string;
  try {
    real = fs.realpathSync(file);
  } catch (e) {
    throw new Error(`${what} ${file} not found (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!fs.statSync(real).isFile()) throw new Error(`${what} ${file} is not a regular file`);
  return real;
}

function nearestPackageRoot(dir: string): string | undefined {
  for (let d = dir; ; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json'))) return d;
    if (path.dirname(d) === d) return undefined;
  }
}

function isNodeBinary(real: string): boolean {
  if (/^node(js)?$/.test(path.basename(real))) return true;
  try { return fs.realpathSync(process.execPath) === real; } catch { return false; }
}

function isWithin(child: string, parent: string): boolean {
  return child === parent || child.startsWith(parent.endsWith('/') ? parent : parent + '/');
}

interface PluginLayout {
  /** argv inside the jail */
  command: string[];
  /** environment variables to drop (they would point Node at host files it cannot see) */
  unsetEnv: string[];
  /** read-only binds the plugin needs, host path -> same jail path unless noted */
  binds: Bind[];
}

function addReadOnly(binds: Bind[], hostPath: string, jailPath: string = hostPath): void {
  binds.push({ source: hostPath, target: jailPath, writable: false });
}

function addElfWithLibraries(binds: Bind[], elfReal: string): void {
  addReadOnly(binds, elfReal);
  for (const lib of sharedLibraries(elfReal)) addReadOnly(binds, fs.realpathSync(lib), lib);
}

/** The plugvisor runtime a Node plugin loads: the SDK (dist/), its dependencies and the native addon. */
function addPlugvisorRuntime(binds: Bind[]): void {
  const root = fs.realpathSync(PACKAGE_ROOT);
  for (const name of ['package.json', 'dist', 'node_modules']) {
    const p = path.join(root, name);
    if (fs.existsSync(p)) addReadOnly(binds, p);
  }
  // Where node-gyp-build finds it in the jail too: the same path as here.
  addElfWithLibraries(binds, fs.realpathSync(addonPath()));
}

/**
 * The program and arguments a `#!/usr/bin/env ...` line runs, for a jail
 * that has no env: `env PROGRAM` and `env -S PROGRAM ARGS...` (the kernel
 * hands env everything after its name as one argument; -S splits it at
 * white space). Whatever else env would do — assignments, options, quotes,
 * escapes, ${VAR} — is refused with the reason, rather than half done.
 */
function envCommand(pluginPath: string, env: string, argument: string | undefined): string[] {
  const refuse = (why: string): never => {
    throw new Error(`plugin ${pluginPath}: cannot run '#!${env}${argument === undefined ? '' : ` ${argument}`}' in the sandbox: ${why}. ` +
      "The jail has no env: plugvisor runs the interpreter itself and understands '#!/usr/bin/env PROGRAM' and " +
      "'#!/usr/bin/env -S PROGRAM ARGS...'; use one of those or an absolute interpreter path " +
      '(set environment variables in plugvisor\'s own environment: the plugin inherits it)');
  };
  if (argument === undefined) return refuse('it names no program');
  const split = /^(?:-S|--split-string(?:=|\s))\s*(.*)$/s.exec(argument);
  if (split === null) {
    if (argument.startsWith('-')) return refuse(`env's option ${argument.split(/\s/)[0]} is not supported`);
    if (/\s/.test(argument)) return refuse('without -S, env looks for a program whose name contains the spaces');
    return [argument];
  }
  const rest = split[1]!;
  if (/["'\\$#]/.test(rest)) return refuse("-S with quotes, escapes, '$' or '#' is not supported (plain words only)");
  const words = rest.split(/\s+/).filter((w) => w !== '');
  if (words.length === 0) return refuse('-S is followed by no program');
  if (words[0]!.startsWith('-')) return refuse(`env's option ${words[0]} is not supported`);
  if (words[0]!.includes('=')) return refuse(`variable assignments (${words[0]}) are not supported`);
  return words;
}

/** Works out the jail's command and contents for a plugin on the empty root. */
function layoutPlugin(pluginPath: string, pluginArgs: string[]): PluginLayout {
  const real = realFile(pluginPath, 'plugin');
  try {
    fs.accessSync(real, fs.constants.X_OK);
  } catch {
    throw new Error(`plugin ${pluginPath} is not executable`);
  }
  const binds: Bind[] = [];
  const kind = inspectExecutable(real);
  if (kind.kind === 'elf') {
    addElfWithLibraries(binds, real);
    return { command: [real, ...pluginArgs], binds, unsetEnv: [] };
  }

  // A #! script: run its interpreter directly, so the jail needs no /usr/bin/env and no PATH.
  let interpreter = kind.interpreter;
  const interpArgs: string[] = [];
  if (path.basename(interpreter) === 'env') {
    const [name, ...args] = envCommand(pluginPath, kind.interpreter, kind.argument);
    const found = findOnPath(name!);
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
    const pkgRoot = nearestPackageRoot(path.dirname(real));
    const ownRoot = fs.realpathSync(PACKAGE_ROOT);
    if (pkgRoot !== undefined && pkgRoot !== '/' && !isWithin(pkgRoot, ownRoot)) {
      addReadOnly(binds, pkgRoot); // the plugin's own package: its modules and node_modules
    } else if (pkgRoot === undefined) {
      addReadOnly(binds, path.dirname(real)); // modules beside the script
    }
  }
  return { command: [interpReal, ...interpArgs, real, ...pluginArgs], binds, unsetEnv };
}

/** Drops binds already covered by a read-only bind of an ancestor directory; sorts parents first. */
function simplifyBinds(binds: Bind[]): Bind[] {
  const sorted = [...binds].sort((a, b) => (a.target < b.target ? -1 : a.target > b.target ? 1 : 0));
  const kept: Bind[] = [];
  for (const b of sorted) {
    const covered = kept.some((k) => !k.writable && !b.writable && isWithin(b.target, k.target) &&
      path.join(k.source, path.relative(k.target, b.target)) === b.source);
    if (!covered) kept.push(b);
  }
  return kept;
}

// ---------------------------------------------------------------------------
// User namespace with several gid maps (root only)

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Makes a user namespace with the given maps and returns an fd to it (for
 * bwrap --userns). bwrap can only map one gid itself; writing a gid_map with
 * several lines needs CAP_SETGID in the parent namespace, i.e. root.
 */
function prepareUserNamespace(uidMap: string, gidMap: string): number {
  const unshare = requireTool('unshare', 'util-linux unshare (needed for --plugin-gid-map)');
  const sleep = requireTool('sleep', 'coreutils sleep (needed for --plugin-gid-map)');
  const holder = spawn(unshare, ['--user', '--', sleep, 'infinity'], { stdio: 'ignore' });
  holder.on('error', () => { /* reported below through /proc */ });
  holder.unref();
  try {
    if (holder.pid === undefined) throw new Error(`cannot start ${unshare}`);
    const ours = fs.readlinkSync('/proc/self/ns/user');
    const nsLink = `/proc/${holder.pid}/ns/user`;
    const deadline = Date.now() + 5000;
    for (;;) {
      let theirs: string;
      try {
        theirs = fs.readlinkSync(nsLink);
      } catch {
        throw new Error('`unshare --user` failed: cannot create a user namespace for --plugin-gid-map' +
          (userNamespaceHints().length > 0 ? ` (${userNamespaceHints().join('; ')})` : ''));
      }
      if (theirs !== ours) break;
      if (Date.now() > deadline) throw new Error('timed out waiting for `unshare --user` (for --plugin-gid-map)');
      sleepMs(2);
    }
    try {
      fs.writeFileSync(`/proc/${holder.pid}/uid_map`, uidMap);
    } catch (e) {
      throw new Error(`writing the plugin's uid_map failed: ${(e as Error).message}`);
    }
    try {
      fs.writeFileSync(`/proc/${holder.pid}/gid_map`, gidMap);
    } catch (e) {
      throw new Error(`writing the plugin's gid_map (--plugin-gid-map) failed: ${(e as Error).message}; map: ${JSON.stringify(gidMap)}`);
    }
    return fs.openSync(nsLink, 'r');
  } finally {
    try { holder.kill('SIGKILL'); } catch { /* gone */ }
  }
}

// ---------------------------------------------------------------------------
// The plan

/** Throws a clear Error naming the missing piece (bubblewrap not installed, user namespaces disabled, ...) — never falls back to unsandboxed. */
export function planSandboxedLaunch(config: SandboxConfig, pluginPath: string, pluginArgs: string[]): LaunchPlan {
  // Everything else the jail uses ships with plugvisor (the helpers link only libc).
  const bwrap = requireTool('bwrap', 'bubblewrap', '; install it, the one system package the sandbox needs (Debian/Ubuntu: apt-get install bubblewrap)');
  const jailExec = findHelper('plugvisor-jail-exec');
  const identity = jailIdentity();
  const isRoot = process.geteuid!() === 0;

  const gidMaps = config.gidMaps ?? [];
  const mounts = config.mounts ?? [];
  if (gidMaps.length > 0 && !isRoot) {
    throw new Error('--plugin-gid-map needs plugvisor to run as root: without CAP_SETGID a user namespace can map only the ' +
      "caller's own gid (bubblewrap does that by default), so extra gids cannot be mapped");
  }
  const fullGidMap = gidMaps.length > 0 ? jailGidMap(identity, gidMaps) : undefined;

  // Work out the file system before making any fd, so a bad path leaks nothing.
  let layout: PluginLayout;
  let rootArgs: string[] = [];
  let root: string | undefined;
  if (config.pluginRoot !== undefined) {
    try {
      root = fs.realpathSync(config.pluginRoot);
    } catch (e) {
      throw new Error(`--plugin-root ${config.pluginRoot} does not exist (${(e as NodeJS.ErrnoException).code})`);
    }
    if (!fs.statSync(root).isDirectory()) throw new Error(`--plugin-root ${config.pluginRoot} is not a directory`);
    if (!path.isAbsolute(pluginPath)) {
      throw new Error(`with --plugin-root the plugin path must be absolute, as seen inside the root (got ${pluginPath})`);
    }
    // The plugin may come from the root itself or from a --plugin-mount covering its path.
    const jailPlugin = path.posix.normalize(pluginPath);
    const inRoot = path.join(root, jailPlugin);
    const viaMount = [...mounts].reverse().find((m) => isWithin(jailPlugin, m.target));
    const inMount = viaMount !== undefined ? path.join(viaMount.source, path.relative(viaMount.target, jailPlugin)) : undefined;
    if (!fs.existsSync(inRoot) && (inMount === undefined || !fs.existsSync(inMount))) {
      throw new Error(`plugin ${pluginPath} does not exist inside --plugin-root ${root} (${inRoot}); bind it with --plugin-mount`);
    }
    for (const dir of ['/proc', '/dev', ...mounts.map((m) => m.target)]) {
      if (!fs.existsSync(path.join(root, dir))) {
        throw new Error(`--plugin-root ${root} has no ${dir}: the root is read-only, so every mount point must already exist in it`);
      }
    }
    rootArgs = ['--ro-bind', root, '/'];
    // NODE_EXTRA_CA_CERTS names a host file, which a root of the user's rarely has.
    layout = { command: [pluginPath, ...pluginArgs], binds: [], unsetEnv: ['NODE_EXTRA_CA_CERTS'] };
  } else {
    layout = layoutPlugin(pluginPath, pluginArgs);
    if (fs.existsSync('/etc/ld.so.cache')) addReadOnly(layout.binds, '/etc/ld.so.cache');
  }
  for (const m of mounts) {
    try {
      fs.realpathSync(m.source);
    } catch (e) {
      throw new Error(`--plugin-mount source ${m.source} does not exist (${(e as NodeJS.ErrnoException).code})`);
    }
    if (m.target === '/proc' || m.target === '/dev' || isWithin(m.target, '/proc') || isWithin(m.target, '/dev')) {
      throw new Error(`--plugin-mount target ${m.target} is inside the jail's /proc or /dev, which the sandbox manages`);
    }
  }

  const fds: number[] = [];
  let disposed = false;
  const dispose = () => {
    if (disposed) return;
    disposed = true;
    for (const fd of fds) {
      try { fs.closeSync(fd); } catch { /* already closed */ }
    }
  };
  try {
    const bpf = compileSeccompPolicy(config.seccompPolicyFile ?? DEFAULT_SECCOMP_POLICY_PATH, config.seccompLogFailures ?? false);
    const seccompFd = anonymousFileFd(bpf, 'seccomp.bpf');
    fds.push(seccompFd);
    const seccompIndex = FIRST_EXTRA_FD;

    const args: string[] = [];
    if (fullGidMap !== undefined) {
      const nsFd = prepareUserNamespace(formatIdMap([{ inner: identity.uid, outer: identity.hostUid, count: 1 }]), formatIdMap(fullGidMap));
      fds.push(nsFd);
      // Nested user namespaces are refused by the seccomp policy here (bwrap's --disable-userns needs --unshare-user).
      args.push('--userns', String(FIRST_EXTRA_FD + 1), '--uid', String(identity.uid), '--gid', String(identity.gid));
    } else {
      args.push('--unshare-user', '--uid', String(identity.uid), '--gid', String(identity.gid), '--disable-userns');
    }
    args.push(
      '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-net', '--unshare-cgroup-try',
      '--hostname', JAIL_HOSTNAME,
      '--die-with-parent', '--new-session', '--cap-drop', 'ALL',
      ...rootArgs,
      '--proc', '/proc',
      '--tmpfs', '/dev',
    );
    for (const dev of JAIL_DEVICES) args.push('--dev-bind', `/dev/${dev}`, `/dev/${dev}`);
    args.push('--symlink', '/proc/self/fd', '/dev/fd');
    ['stdin', 'stdout', 'stderr'].forEach((name, i) => args.push('--symlink', `/proc/self/fd/${i}`, `/dev/${name}`));
    args.push('--remount-ro', '/dev');
    for (const b of simplifyBinds(layout.binds)) args.push('--ro-bind', b.source, b.target);
    for (const m of mounts) args.push(m.writable ? '--bind' : '--ro-bind', m.source, m.target);
    if (root === undefined) args.push('--remount-ro', '/');
    for (const name of layout.unsetEnv) args.push('--unsetenv', name);
    args.push('--chdir', '/', '--seccomp', String(seccompIndex), '--', ...layout.command);
    const launcher = ['--nofile', String(pluginNofileLimit()), '--keep-fds-below', String(FIRST_EXTRA_FD + fds.length), '--', bwrap];
    return { file: jailExec, args: [...launcher, ...args], extraFds: [...fds], dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}
