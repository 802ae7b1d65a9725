#!/usr/bin/env node
/**
 * The `plugvisor` command (dist/bundle/plugvisor.cjs): runs the CLI's bundle,
 * host.cjs beside it, through a V8 code cache.
 *
 * Why: without one, V8 parses the 200 KB bundle at every start and compiles
 * each function the first time it runs, and on the benchmark machine that was
 * ~30 ms of a run's start-up to the first guest exit (bench/README.md,
 * "Profile: where start-up goes"). Node 20 caches no user code, so this does
 * what its later `module.enableCompileCache()` does, for this one file.
 *
 * The cache is V8's own serialization of the compiled functions. It is
 * written after the first `run` or `exec` that succeeded (then it holds the
 * functions a VM's start needs), beside the bundle, one file per V8 version,
 * and only there: whoever can write that directory can already replace the
 * bundle, so the cache is as trusted as the code it came from. Where the
 * directory is read-only the CLI simply runs uncached. V8 rejects a cache of
 * another V8 version or other flags by itself; it checks a source's length,
 * not its text, so each cache also records the size and mtime of the bundle
 * it was made from and is ignored for any other.
 *
 * With source maps on (`--enable-source-maps`) the bundle is loaded by
 * `require()` instead, because node maps stack traces only for the modules it
 * loaded itself.
 */
import { readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Module, createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';

const here = dirname(fileURLToPath(import.meta.url));
const bundle = join(here, 'host.cjs');
const cacheFile = join(here, `host.cjs.${process.versions.v8}.cache`);

/** The commands whose successful run leaves the compiled functions worth caching. */
const CACHED_COMMANDS = new Set(['run', 'exec']);

/** What a cache records of its bundle: size and mtime (ms), two doubles before V8's data. */
const HEADER_BYTES = 16;

function header(size: number, mtimeMs: number): Buffer {
  const bytes = Buffer.alloc(HEADER_BYTES);
  bytes.writeDoubleLE(size, 0);
  bytes.writeDoubleLE(mtimeMs, 8);
  return bytes;
}

/** V8's data of the cache made from this very bundle, if there is one. */
function readCache(expected: Buffer): Buffer | undefined {
  let bytes: Buffer;
  try {
    bytes = readFileSync(cacheFile);
  } catch {
    return undefined;
  }
  return bytes.length > HEADER_BYTES && bytes.subarray(0, HEADER_BYTES).equals(expected)
    ? bytes.subarray(HEADER_BYTES)
    : undefined;
}

/** Writes the cache whole or not at all (a concurrent start reads either the old file or the new one). */
function writeCache(expected: Buffer, script: Script): void {
  const partial = `${cacheFile}.${process.pid}`;
  try {
    writeFileSync(partial, Buffer.concat([expected, script.createCachedData()]), { mode: 0o644 });
    renameSync(partial, cacheFile);
  } catch {
    // A read-only install, a full disk: the next start compiles, as without a cache.
    rmSync(partial, { force: true });
  }
}

function runHost(): void {
  const require = createRequire(bundle);
  if (process.sourceMapsEnabled) {
    require(bundle);
    return;
  }
  const stat = statSync(bundle);
  const expected = header(stat.size, stat.mtimeMs);
  const cachedData = readCache(expected);
  // esbuild writes ASCII only, so latin1 reads it without decoding UTF-8.
  // The function around it is the one node puts around every CommonJS module.
  const script = new Script(
    `(function (exports, require, module, __filename, __dirname) {${readFileSync(bundle, 'latin1')}\n})`,
    { filename: bundle, ...(cachedData !== undefined ? { cachedData } : {}) },
  );
  if (cachedData === undefined || script.cachedDataRejected === true) {
    process.on('exit', (code) => {
      if (code === 0 && CACHED_COMMANDS.has(process.argv[2] ?? '')) writeCache(expected, script);
    });
  }
  const module = new Module(bundle);
  module.filename = bundle;
  const wrapper = script.runInThisContext() as (
    exports: unknown,
    require: NodeJS.Require,
    module: Module,
    filename: string,
    dirname: string,
  ) => void;
  wrapper.call(module.exports, module.exports, require, module, bundle, here);
}

runHost();
