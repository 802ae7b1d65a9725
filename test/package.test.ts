/**
 * plugvisor as a user gets it: `npm pack` with the prebuilt native parts,
 * then `npm install` of the tarball (through the npm registry, for its
 * dependencies) into a fresh project of its own. There, JavaScript plugins
 * (ESM and CommonJS), a compiled TypeScript plugin and a C plugin built
 * against the installed C library run in the jail and without it, and a
 * TypeScript plugin and a program using the library type-check under every
 * moduleResolution; the library itself runs a plugin there too.
 *
 * Two installs of one tarball: the prebuilt one runs npm with a PATH that
 * has no compiler, make or python, so nothing can have been built; the
 * other gets the tarball without prebuilds/, shows the one-line errors of a
 * package whose native parts are missing, and builds them from source.
 *
 * The suite's build has just run (scripts/test.js), so the tarball is made
 * from it: `npm run prepack` (the prebuilds), then `npm pack --ignore-scripts`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PACKAGE_ROOT } from '../src/package-root.js';
import { findOnPath } from '../src/sandbox/tools.js';
import { needsKvm } from './support/kvm.js';
import { SANDBOX_MODES, describeRun, modeName, runCommand } from './support/run.js';

const FIXTURES = path.join(PACKAGE_ROOT, 'test/fixtures/package');
const C_PLUGIN_SOURCE = path.join(PACKAGE_ROOT, 'examples/c/adder.c');
/** What the project gets from the registry beside the tarball: the versions this checkout uses. */
const TYPESCRIPT = `typescript@${devVersion('typescript')}`;
const NODE_TYPES = `@types/node@${devVersion('@types/node')}`;
/** The TypeScript fixtures: a plugin, and a program that uses the library. */
const TYPESCRIPT_FILES = ['plugin.mts', 'run.mts'];
const MODULE_RESOLUTIONS: Record<string, { module: string; moduleResolution: string }> = {
  node16: { module: 'node16', moduleResolution: 'node16' },
  nodenext: { module: 'nodenext', moduleResolution: 'nodenext' },
  bundler: { module: 'esnext', moduleResolution: 'bundler' },
  node: { module: 'esnext', moduleResolution: 'node' },
};

function devVersion(name: string): string {
  return (
    JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }
  ).version;
}

let work: string;
let tarball: string;
/** A PATH with node, npm, a shell and bubblewrap, and no compiler. */
let bareBin: string;

function run(file: string, args: string[], options: { cwd: string; env?: NodeJS.ProcessEnv; check?: boolean }) {
  const r = spawnSync(file, args, { cwd: options.cwd, env: options.env ?? process.env, encoding: 'utf8', timeout: 300_000 });
  if (options.check !== false && r.status !== 0) {
    throw new Error(
      `${file} ${args.join(' ')} (in ${options.cwd}) failed: ${r.error?.message ?? `exit ${r.status}`}\n${r.stdout}\n${r.stderr}`,
    );
  }
  return r;
}

/** A fresh project holding the fixture plugins, with `specs` installed by npm. */
function makeProject(name: string, specs: string[], env: NodeJS.ProcessEnv, extraFlags: string[] = []): string {
  const dir = path.join(work, name);
  fs.mkdirSync(dir);
  run('npm', ['init', '-y'], { cwd: dir, env });
  for (const file of fs.readdirSync(FIXTURES)) fs.copyFileSync(path.join(FIXTURES, file), path.join(dir, file));
  for (const file of ['plugin.mjs', 'plugin.cjs', 'tools.sh']) fs.chmodSync(path.join(dir, file), 0o755);
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', ...extraFlags, ...specs], { cwd: dir, env });
  return dir;
}

before(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'plugvisor-package-test-'));
  bareBin = path.join(work, 'bin');
  fs.mkdirSync(bareBin);
  for (const tool of ['node', 'npm', 'sh', 'env', 'bwrap']) {
    const found = findOnPath(tool);
    if (found !== undefined) fs.symlinkSync(found, path.join(bareBin, tool));
  }
  run('npm', ['run', '--silent', 'prepack'], { cwd: PACKAGE_ROOT });
  const packed = run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', work], { cwd: PACKAGE_ROOT });
  tarball = path.join(work, packed.stdout.trim().split('\n').pop()!);
});

after(() => {
  if (work !== undefined) fs.rmSync(work, { recursive: true, force: true });
});

describe('the packed tarball', () => {
  test('holds the prebuilt native set, the library, the SDK, the docs and the sources for a build, and no tests', () => {
    const files = new Set(
      execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' })
        .trim()
        .split('\n')
        .map((f) => f.replace(/^package\//, '')),
    );
    for (const file of [
      'LICENSE',
      'README.md',
      'docs/protocol.md',
      'docs/c-api.md',
      'prebuilds/linux-x64/plugvisor.node',
      'prebuilds/linux-x64/plugvisor-jail-exec',
      'prebuilds/linux-x64/plugvisor-seccomp-compile',
      'prebuilds/linux-x64/include/crosvm.h',
      'prebuilds/linux-x64/lib/libcrosvm_plugin.so',
      'prebuilds/linux-x64/lib/pkgconfig/crosvm_plugin.pc',
      'dist/bundle/plugvisor.cjs',
      'dist/bundle/host.cjs',
      'dist/bundle/host.cjs.map',
      'dist/bundle/plugin.js',
      'dist/bundle/plugin.js.map',
      'dist/bundle/plugin.cjs',
      'dist/src/index.js',
      'dist/src/index.d.ts',
      'dist/src/plugin/index.d.ts',
      'binding.gyp',
      'native/plugvisor.c',
      'clients/c/Makefile',
      'src/protocol/plugin.proto',
      'src/sandbox/plugin-seccomp.policy',
    ])
      assert.ok(files.has(file), `${file} is not in the tarball`);
    // No code cache either: the CLI writes its own beside the bundle (src/cli/launch.ts).
    const stray = [...files].filter((f) =>
      /^(test|bench|\.ci|dist\/test|dist\/bench)\/|\.test\.|clients\/c\/(tests|build)\/|\.cache$/.test(f),
    );
    assert.deepEqual(stray, []);
  });

  test('its prebuilt binaries need nothing but libc at run time', () => {
    const dir = path.join(work, 'unpacked');
    fs.mkdirSync(dir);
    execFileSync('tar', ['xzf', tarball, '-C', dir]);
    const prebuilt = path.join(dir, 'package/prebuilds/linux-x64');
    for (const file of ['plugvisor.node', 'plugvisor-jail-exec', 'plugvisor-seccomp-compile', 'lib/libcrosvm_plugin.so']) {
      const needed = [
        ...execFileSync('readelf', ['-d', path.join(prebuilt, file)], { encoding: 'utf8' }).matchAll(/\(NEEDED\).*\[(.+)\]/g),
      ].map((m) => m[1]);
      assert.deepEqual(needed, ['libc.so.6'], file);
    }
    assert.doesNotMatch(fs.readFileSync(path.join(prebuilt, 'lib/pkgconfig/crosvm_plugin.pc'), 'utf8'), /Requires/);
  });
});

describe('the API reference', () => {
  test('`npm run docs` (TypeDoc) builds it, with a doc comment on every exported name', () => {
    const out = path.join(work, 'api');
    const r = run(process.execPath, ['node_modules/typedoc/bin/typedoc', '--out', out], { cwd: PACKAGE_ROOT, check: false });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
    assert.doesNotMatch(r.stdout + r.stderr, /warning/i);
    for (const page of ['index.html', 'functions/index.runPlugin.html', 'classes/plugin.Vcpu.html']) {
      assert.ok(fs.existsSync(path.join(out, page)), `${page} is missing`);
    }
  });
});

/** The checks both installs pass: the four plugins, each in and out of the jail. */
function pluginCases(project: () => { dir: string; env: NodeJS.ProcessEnv }): void {
  describe('its plugins', () => pluginTests(project));
}

function pluginTests(project: () => { dir: string; env: NodeJS.ProcessEnv }): void {
  const cli = (dir: string) => path.join(dir, 'node_modules/.bin/plugvisor');
  let cPlugin: string;
  let tsPlugin: string;
  let libraryUser: string;

  before(() => {
    const { dir, env } = project();
    // A C compiler is needed to build a C plugin, of course (not to install).
    const flags = run(cli(dir), ['c-flags'], { cwd: dir, env }).stdout.trim().split(/\s+/);
    cPlugin = path.join(dir, 'adder');
    run('cc', ['-O2', '-Wall', '-Werror', '-o', cPlugin, C_PLUGIN_SOURCE, ...flags], { cwd: dir });
    const out = compileTypeScript(dir, env);
    tsPlugin = path.join(out, 'plugin.mjs');
    libraryUser = path.join(out, 'run.mjs');
  });

  const plugins: { name: string; file: () => string; stdout: string }[] = [
    { name: 'a JavaScript plugin (ESM)', file: () => path.join(project().dir, 'plugin.mjs'), stdout: 'esm: guest computed 9\n' },
    {
      name: 'a JavaScript plugin (CommonJS)',
      file: () => path.join(project().dir, 'plugin.cjs'),
      stdout: 'cjs: guest computed 9\n',
    },
    { name: 'a compiled TypeScript plugin', file: () => tsPlugin, stdout: 'ts: guest made a write of 42 at 0x2000\n' },
    { name: 'a C plugin built with `plugvisor c-flags`', file: () => cPlugin, stdout: '9\nguest computed 2 + 7 = 9\n' },
  ];
  for (const plugin of plugins) {
    for (const sandboxed of SANDBOX_MODES) {
      test(`${plugin.name} runs ${modeName(sandboxed)}`, needsKvm, async () => {
        const { dir, env } = project();
        const r = await runCommand(cli(dir), ['run', '--plugin', plugin.file(), ...(sandboxed ? [] : ['--disable-sandbox'])], {
          env,
        });
        assert.equal(r.code, 0, describeRun(r));
        assert.equal(r.stdout, plugin.stdout, describeRun(r));
      });
    }
  }

  for (const sandboxed of SANDBOX_MODES) {
    test(`the library (runPlugin, from compiled TypeScript) runs a plugin ${modeName(sandboxed)}`, needsKvm, async () => {
      const { dir, env } = project();
      const r = await runCommand(libraryUser, [path.join(dir, 'plugin.mjs'), sandboxed ? 'sandboxed' : 'unsandboxed'], {
        env,
        cwd: dir,
      });
      assert.equal(r.code, 0, describeRun(r));
      assert.equal(r.stdout, 'esm: guest computed 9\nlibrary: ok=true exitCode=0 plugin=exited\n', describeRun(r));
    });
  }

  test(
    "a jailed shell plugin runs sleep, ls and cat, then becomes the C plugin, with the README's --plugin-mount",
    needsKvm,
    async () => {
      // The shell searches the PATH it inherits (through the jail): the user's, not the bare one of the install.
      const { dir } = project();
      const r = await runCommand(cli(dir), [
        'run',
        '--plugin',
        path.join(dir, 'tools.sh'),
        '--plugin-mount',
        '/usr:/usr',
        '--plugin-mount',
        `${dir}:${dir}`,
      ]);
      assert.equal(r.code, 0, describeRun(r));
      assert.equal(r.stdout, '/usr/bin\nfrom-cat\n9\nguest computed 2 + 7 = 9\n', describeRun(r));
    },
  );

  test(
    'pkg-config finds the C library through `plugvisor pkg-config-path`',
    { skip: findOnPath('pkg-config') === undefined && 'no pkg-config' },
    () => {
      const { dir, env } = project();
      const pcDir = run(cli(dir), ['pkg-config-path'], { cwd: dir, env }).stdout.trim();
      const flags = run('pkg-config', ['--cflags', '--libs', 'crosvm_plugin'], {
        cwd: dir,
        env: { ...process.env, PKG_CONFIG_PATH: pcDir },
      }).stdout;
      const prefix = path.dirname(path.dirname(pcDir));
      assert.ok(fs.existsSync(path.join(prefix, 'include/crosvm.h')));
      assert.match(flags, /-lcrosvm_plugin/);
      assert.ok(flags.includes(`-L${pcDir}/../../lib`) || flags.includes(`-L${prefix}/lib`), flags);
    },
  );
}

/**
 * The TypeScript fixture compiled as the README says (nodenext, then the
 * executable bit tsc does not set), once: the JavaScript it makes is the same
 * for every install, so later projects get a copy.
 */
let compiledTypeScript: string | undefined;
function compileTypeScript(dir: string, env: NodeJS.ProcessEnv): string {
  const out = path.join(dir, 'out');
  if (compiledTypeScript === undefined) {
    fs.writeFileSync(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { ...typeCheckOptions('nodenext'), outDir: 'out' },
        files: TYPESCRIPT_FILES,
      }),
    );
    run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { cwd: dir, env });
    compiledTypeScript = out;
  } else {
    fs.cpSync(compiledTypeScript, out, { recursive: true });
  }
  for (const file of fs.readdirSync(out)) fs.chmodSync(path.join(out, file), 0o755);
  return out;
}

/**
 * Compiler options of a user's project with this moduleResolution. Library
 * files are not checked (as in most projects; it is 90% of tsc's time): the
 * fixture's @ts-expect-error lines fail the check if plugvisor's types
 * degrade to `any`.
 */
function typeCheckOptions(resolution: keyof typeof MODULE_RESOLUTIONS) {
  return { ...MODULE_RESOLUTIONS[resolution], target: 'es2022', strict: true, types: ['node'], skipLibCheck: true };
}

describe('installed with its prebuilt binaries, with no compiler on PATH', () => {
  let dir: string;
  const env = (): NodeJS.ProcessEnv => ({ ...process.env, PATH: bareBin });

  before(() => {
    for (const tool of ['cc', 'gcc', 'make', 'python3', 'python']) {
      assert.equal(findOnPath(tool, bareBin), undefined, `${tool} is on the bare PATH`);
    }
    dir = makeProject('prebuilt', [tarball, TYPESCRIPT, NODE_TYPES], env());
  });

  test('nothing was built at install', () => {
    assert.ok(!fs.existsSync(path.join(dir, 'node_modules/plugvisor/build')));
  });

  test('`plugvisor --version` prints the version', () => {
    const r = run(path.join(dir, 'node_modules/.bin/plugvisor'), ['--version'], { cwd: dir, env: env() });
    const { version } = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(r.stdout, `${version}\n`);
  });

  pluginCases(() => ({ dir, env: env() }));

  test(`a TypeScript plugin and a library user type-check with moduleResolution ${Object.keys(MODULE_RESOLUTIONS).join(', ')}`, async () => {
    const checks = Object.keys(MODULE_RESOLUTIONS).map(async (resolution) => {
      const config = `tsconfig.${resolution}.json`;
      fs.writeFileSync(
        path.join(dir, config),
        JSON.stringify({
          compilerOptions: { ...typeCheckOptions(resolution), noEmit: true },
          files: TYPESCRIPT_FILES,
        }),
      );
      const r = await runCommand(process.execPath, ['node_modules/typescript/bin/tsc', '-p', config], {
        cwd: dir,
        env: env(),
        timeoutMs: 120_000,
      });
      return `${resolution}: exit ${r.code}\n${r.stdout}${r.stderr}`;
    });
    const results = await Promise.all(checks);
    assert.deepEqual(
      results.filter((r) => !/^\w+: exit 0\n$/.test(r)),
      [],
    );
  });
});

describe('installed without prebuilt binaries: built from source', () => {
  let dir: string;
  const env = (): NodeJS.ProcessEnv => process.env;

  before(() => {
    const stripped = path.join(work, 'stripped');
    fs.mkdirSync(stripped);
    execFileSync('tar', ['xzf', tarball, '-C', stripped]);
    fs.rmSync(path.join(stripped, 'package/prebuilds'), { recursive: true });
    const noPrebuilds = path.join(work, 'plugvisor-no-prebuilds.tgz');
    execFileSync('tar', ['czf', noPrebuilds, '-C', stripped, 'package']);
    dir = makeProject('from-source', [noPrebuilds, TYPESCRIPT, NODE_TYPES], env(), ['--ignore-scripts']);
  });

  test('before the build: --version works and a run is a one-line error that names the fix', () => {
    const bin = path.join(dir, 'node_modules/.bin/plugvisor');
    assert.match(run(bin, ['--version'], { cwd: dir }).stdout, /^\d+\.\d+\.\d+\n$/);
    for (const args of [['run', '--plugin', path.join(dir, 'plugin.mjs')], ['c-flags']]) {
      const r = run(bin, args, { cwd: dir, check: false });
      assert.equal(r.status, 1);
      assert.match(
        r.stderr,
        /^plugvisor: error: plugvisor's native addon is not built for linux-x64 .*`npm rebuild plugvisor`.*build-essential.*libseccomp-dev\)\n$/,
      );
    }
  });

  test('without a compiler the build fails with one line saying which packages to install', () => {
    const r = run('npm', ['rebuild', 'plugvisor'], { cwd: dir, env: { ...process.env, PATH: bareBin }, check: false });
    assert.notEqual(r.status, 0);
    assert.match(
      r.stderr,
      /^(npm error )?plugvisor: no prebuilt native parts work on this machine \(linux-x64\) and building them from source failed \(missing: build-essential python3 protobuf-c-compiler\); on Debian\/Ubuntu install build-essential python3 protobuf-c-compiler libprotobuf-c-dev libseccomp-dev .*`npm rebuild plugvisor`$/m,
    );
  });

  test('`npm rebuild plugvisor` builds every native part from source', () => {
    run('npm', ['rebuild', 'plugvisor'], { cwd: dir });
    const built = path.join(dir, 'node_modules/plugvisor/build/Release');
    for (const file of [
      'plugvisor.node',
      'plugvisor-jail-exec',
      'plugvisor-seccomp-compile',
      'include/crosvm.h',
      'lib/libcrosvm_plugin.so',
    ]) {
      assert.ok(fs.existsSync(path.join(built, file)), `${file} was not built`);
    }
  });

  pluginCases(() => ({ dir, env: env() }));
});
