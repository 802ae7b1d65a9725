/**
 * Compiles the C guests of test/guests/ with the system gcc, as a user
 * would (static, freestanding, no libc: examples/guest/plugvisor.h), into a
 * scratch directory; nothing compiled is committed.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../src/package-root.js';

export const GUEST_SOURCES = path.join(PACKAGE_ROOT, 'test', 'guests');
export const GUEST_HEADER_DIR = path.join(PACKAGE_ROOT, 'examples', 'guest');
/** The flags every guest is built with (the README's). */
export const GUEST_CFLAGS = [
  '-static',
  '-nostdlib',
  '-ffreestanding',
  '-O2',
  '-Wall',
  '-Wextra',
  '-Werror',
  `-I${GUEST_HEADER_DIR}`,
];

/** A scratch directory for compiled guests, removed when the process exits. */
export function guestBuildDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'plugvisor-guests-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Compiles test/guests/NAME.c to DIR/NAME.elf; returns its path. */
export function compileGuest(dir: string, name: string): string {
  return compileC(path.join(GUEST_SOURCES, `${name}.c`), path.join(dir, `${name}.elf`), GUEST_CFLAGS);
}

/** gcc `flags` -o `out` `source`; returns `out`. */
export function compileC(source: string, out: string, flags: readonly string[]): string {
  try {
    execFileSync('gcc', [...flags, '-o', out, source], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: Buffer; code?: string };
    if (err.code === 'ENOENT')
      throw new Error('gcc is not installed (apt-get install build-essential; scripts/setup.sh does it)');
    throw new Error(`gcc failed on ${source}:\n${err.stderr?.toString() ?? String(e)}`);
  }
  return out;
}

/** The addresses of an executable's symbols (`nm`). */
export function symbols(elf: string): Map<string, bigint> {
  const map = new Map<string, bigint>();
  for (const line of execFileSync('nm', [elf], { encoding: 'utf8' }).split('\n')) {
    const [address, , name] = line.trim().split(/\s+/);
    if (address && name && /^[0-9a-f]+$/.test(address)) map.set(name, BigInt(`0x${address}`));
  }
  return map;
}
