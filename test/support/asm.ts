/**
 * Assembles guest code with nasm (flat binary), so tests carry readable
 * source next to the bytes the guest runs. Results are cached per source text
 * for the life of the process.
 *
 * Test plugins call this at run time, also inside the plugin jail, which has
 * neither nasm nor a writable /tmp: a jailed run that assembles is given both
 * by the test harness (runPluginCli's `assemblesGuest` in ./run.ts), which
 * binds nasm and a private writable directory named by {@link ASM_SCRATCH_ENV}.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const cache = new Map<string, Uint8Array>();

/** Environment variable naming the writable directory for nasm's files (default: os.tmpdir()). */
export const ASM_SCRATCH_ENV = 'PLUGVISOR_TEST_ASM_SCRATCH';

/** Assembles `source` (nasm syntax; add `bits 16/32/64` and `org` yourself). */
export function assemble(source: string): Uint8Array {
  const cached = cache.get(source);
  if (cached) return cached;
  const dir = mkdtempSync(path.join(process.env[ASM_SCRATCH_ENV] || tmpdir(), 'plugvisor-asm-'));
  try {
    const input = path.join(dir, 'guest.asm');
    const output = path.join(dir, 'guest.bin');
    writeFileSync(input, source);
    try {
      execFileSync('nasm', ['-f', 'bin', '-o', output, input], { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      const err = e as { stderr?: Buffer; code?: string };
      if (err.code === 'ENOENT') throw new Error('nasm is not installed (apt-get install nasm; scripts/setup.sh does it)');
      throw new Error(`nasm failed:\n${err.stderr?.toString() ?? String(e)}`);
    }
    const bytes = new Uint8Array(readFileSync(output));
    cache.set(source, bytes);
    return bytes;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
