/**
 * What an executable is and what it needs to run: its ELF header and
 * PT_INTERP, or its `#!` line (and what a `#!/usr/bin/env` line runs), and
 * the shared libraries the system loader lists for it.
 */
import { closeSync, openSync, readSync, realpathSync } from 'node:fs';
import { describeEnd, runToEnd, type Finished } from '../child.js';

/** An ELF executable (and its PT_INTERP, if any), or a `#!` script (its interpreter and the line's one argument). */
export type ExecutableKind =
  { kind: 'elf'; interpreter: string | undefined } | { kind: 'script'; interpreter: string; argument: string | undefined };

/** Reads the start of a file: ELF header and program headers, or a #! line; throws for anything else. */
export function inspectExecutable(file: string): ExecutableKind {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(4096);
    const n = readSync(fd, head, 0, head.length, 0);
    if (n >= 2 && head[0] === 0x23 && head[1] === 0x21) {
      // "#!"
      const end = head.indexOf(0x0a, 2);
      const line = head
        .subarray(2, end < 0 ? n : end)
        .toString('utf8')
        .trim();
      const m = /^(\S+)(?:\s+(.*))?$/.exec(line);
      if (m === null) throw new Error(`plugin ${file}: empty #! line`);
      return { kind: 'script', interpreter: m[1], argument: m[2]?.trim() || undefined };
    }
    if (n < 64 || head.readUInt32BE(0) !== 0x7f454c46) {
      throw new Error(
        `plugin ${file} is neither an ELF executable nor a #! script; use --plugin-root to give it a whole root file system`,
      );
    }
    if (head[4] !== 2 || head[5] !== 1) throw new Error(`plugin ${file} is not a 64-bit little-endian ELF file`);
    const machine = head.readUInt16LE(18);
    if (machine !== 62) throw new Error(`plugin ${file} is not an x86_64 executable (e_machine ${machine})`);
    const phoff = Number(head.readBigUInt64LE(32));
    const phentsize = head.readUInt16LE(54);
    const phnum = head.readUInt16LE(56);
    const table = Buffer.alloc(phentsize * phnum);
    readSync(fd, table, 0, table.length, phoff);
    for (let i = 0; i < phnum; i++) {
      const ph = table.subarray(i * phentsize, (i + 1) * phentsize);
      if (ph.readUInt32LE(0) !== 3) continue; // PT_INTERP
      const offset = Number(ph.readBigUInt64LE(8));
      const size = Number(ph.readBigUInt64LE(32));
      const buf = Buffer.alloc(Math.min(size, 4096));
      readSync(fd, buf, 0, buf.length, offset);
      const nul = buf.indexOf(0);
      return { kind: 'elf', interpreter: buf.subarray(0, nul < 0 ? buf.length : nul).toString('utf8') };
    }
    return { kind: 'elf', interpreter: undefined };
  } finally {
    closeSync(fd);
  }
}

let trustedLoaderCache: string | undefined;
/** The system's dynamic loader: the one this Node binary uses. */
function trustedLoader(): string {
  if (trustedLoaderCache === undefined) {
    const kind = inspectExecutable(realpathSync(process.execPath));
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
  let run: Finished;
  try {
    run = runToEnd(loader, ['--list', elf], 10_000);
  } catch (e) {
    throw new Error(`listing the libraries of ${elf} with ${loader} failed: ${(e as Error).message}`);
  }
  const stdout = run.stdout.toString();
  const stderr = run.stderr.toString();
  const libs: string[] = [];
  const missing: string[] = [];
  for (const raw of stdout.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    let m = /^(\S+) => not found$/.exec(line);
    if (m !== null) {
      missing.push(m[1]);
      continue;
    }
    m = /^\S+ => (\/\S+) \(0x[0-9a-f]+\)$/.exec(line) ?? /^(\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (m !== null) libs.push(m[1]);
  }
  if (libs.length === 0 && /statically linked|not a dynamic executable/.test(stdout + stderr)) return [];
  if (missing.length > 0) throw new Error(`${elf} needs shared libraries that cannot be found: ${missing.join(', ')}`);
  const succeeded = run.status.state === 'exited' && run.status.code === 0;
  if (!succeeded && libs.length === 0) {
    throw new Error(`listing the libraries of ${elf} failed: ${stderr.trim() || describeEnd(run)}`);
  }
  if (kind.interpreter !== undefined) libs.push(kind.interpreter);
  return [...new Set(libs)];
}

function isSharedObject(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(18);
    readSync(fd, head, 0, 18, 0);
    return head.readUInt16LE(16) === 3; // ET_DYN
  } finally {
    closeSync(fd);
  }
}

/**
 * The program and arguments a `#!/usr/bin/env ...` line runs, for a jail
 * that has no env: `env PROGRAM` and `env -S PROGRAM ARGS...` (the kernel
 * hands env everything after its name as one argument; -S splits it at
 * white space). Whatever else env would do — assignments, options, quotes,
 * escapes, ${VAR} — is refused with the reason, rather than half done.
 */
export function envCommand(pluginPath: string, env: string, argument: string | undefined): string[] {
  const refuse = (why: string): never => {
    throw new Error(
      `plugin ${pluginPath}: cannot run '#!${env}${argument === undefined ? '' : ` ${argument}`}' in the sandbox: ${why}. ` +
        "The jail has no env: plugvisor runs the interpreter itself and understands '#!/usr/bin/env PROGRAM' and " +
        "'#!/usr/bin/env -S PROGRAM ARGS...'; use one of those or an absolute interpreter path " +
        "(set environment variables in plugvisor's own environment: the plugin inherits it)",
    );
  };
  if (argument === undefined) return refuse('it names no program');
  const split = /^(?:-S|--split-string(?:=|\s))\s*(.*)$/s.exec(argument);
  if (split === null) {
    if (argument.startsWith('-')) return refuse(`env's option ${argument.split(/\s/)[0]} is not supported`);
    if (/\s/.test(argument)) return refuse('without -S, env looks for a program whose name contains the spaces');
    return [argument];
  }
  const rest = split[1];
  if (/["'\\$#]/.test(rest)) return refuse("-S with quotes, escapes, '$' or '#' is not supported (plain words only)");
  const words = rest.split(/\s+/).filter((w) => w !== '');
  if (words.length === 0) return refuse('-S is followed by no program');
  if (words[0].startsWith('-')) return refuse(`env's option ${words[0]} is not supported`);
  if (words[0].includes('=')) return refuse(`variable assignments (${words[0]}) are not supported`);
  return words;
}
