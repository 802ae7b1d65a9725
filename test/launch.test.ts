/**
 * The `plugvisor` command's V8 code cache (src/cli/launch.ts). The CLI runs
 * from a copy in a package directory of the test's own, so no other test's
 * run writes the cache these tests look at.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PACKAGE_ROOT } from '../src/package-root.js';
import { needsKvm } from './support/kvm.js';
import { describeRun, examplePlugin, runCommand, type CliResult } from './support/run.js';

const CACHE_NAME = `host.cjs.${process.versions.v8}.cache`;

describe('the CLI code cache', needsKvm, () => {
  let pkg: string;
  let bundleDir: string;
  let cacheFile: string;

  before(() => {
    pkg = mkdtempSync(path.join(tmpdir(), 'plugvisor-launch-'));
    bundleDir = path.join(pkg, 'dist', 'bundle');
    mkdirSync(bundleDir, { recursive: true });
    copyFileSync(path.join(PACKAGE_ROOT, 'package.json'), path.join(pkg, 'package.json'));
    for (const name of ['plugvisor.cjs', 'host.cjs']) {
      copyFileSync(path.join(PACKAGE_ROOT, 'dist', 'bundle', name), path.join(bundleDir, name));
    }
    // The native parts the copy's host loads: the checkout's own.
    for (const dir of ['build', 'prebuilds']) {
      if (existsSync(path.join(PACKAGE_ROOT, dir))) symlinkSync(path.join(PACKAGE_ROOT, dir), path.join(pkg, dir));
    }
    cacheFile = path.join(bundleDir, CACHE_NAME);
  });
  after(() => rmSync(pkg, { recursive: true, force: true }));

  function cli(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<CliResult> {
    return runCommand(process.execPath, [path.join(bundleDir, 'plugvisor.cjs'), ...args], { timeoutMs: 30_000, env });
  }

  async function runDemo(env?: NodeJS.ProcessEnv): Promise<void> {
    const r = await cli(['run', '--disable-sandbox', '--plugin', examplePlugin('adder')], env);
    assert.equal(r.code, 0, describeRun(r));
    assert.match(r.stdout, /guest computed 2 \+ 7 = 9/);
  }

  /** The bundle's size and mtime as the cache's header records them. */
  function expectedHeader(): Buffer {
    const stat = statSync(path.join(bundleDir, 'host.cjs'));
    const header = Buffer.alloc(16);
    header.writeDoubleLE(stat.size, 0);
    header.writeDoubleLE(stat.mtimeMs, 8);
    return header;
  }

  test('only a successful run writes it; the next run uses it as it is', async () => {
    rmSync(cacheFile, { force: true });
    const version = await cli(['--version']);
    assert.equal(version.code, 0, describeRun(version));
    assert.equal(existsSync(cacheFile), false, '--version wrote a cache');

    await runDemo();
    const written = readFileSync(cacheFile);
    assert.deepEqual(written.subarray(0, 16), expectedHeader());
    assert.ok(written.length > 100_000, `a cache of ${written.length} bytes holds hardly anything`);

    // V8 accepted it: a rejected cache would have been written again.
    const { mtimeMs } = statSync(cacheFile);
    await runDemo();
    assert.equal(statSync(cacheFile).mtimeMs, mtimeMs, 'the cache was rewritten: V8 rejected it');
  });

  test('a cache made from another bundle is not used, and is replaced', async () => {
    if (!existsSync(cacheFile)) await runDemo();
    // V8's own data of this very bundle, under a header naming another one:
    // V8 would accept the data, so only the header keeps it from being used.
    const stale = readFileSync(cacheFile);
    stale.writeDoubleLE(stale.readDoubleLE(0) + 1, 0);
    writeFileSync(cacheFile, stale);
    await runDemo();
    assert.deepEqual(readFileSync(cacheFile).subarray(0, 16), expectedHeader());
  });

  test('with source maps on, the bundle is loaded by require() and no cache is written', async () => {
    rmSync(cacheFile, { force: true });
    await runDemo({ ...process.env, NODE_OPTIONS: '--enable-source-maps' });
    assert.equal(existsSync(cacheFile), false);
  });
});
