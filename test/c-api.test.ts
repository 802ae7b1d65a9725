/**
 * The C client library (clients/c: crosvm.h + libcrosvm_plugin.so) end to
 * end: C plugins built the way an out-of-tree plugin is built, driving real
 * VMs through the `plugvisor` CLI; the library's unit tests against a fake
 * host; the header's ABI from C and C++; and memcheck runs.
 *
 * Sandbox: every plugin runs both in the jail and with --disable-sandbox
 * (memcheck runs only unsandboxed); PLUGVISOR_TEST_SANDBOX=off (or `on`)
 * keeps only the unsandboxed (or only the sandboxed) runs.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../src/package-root.js';
import { needsKvm } from './support/kvm.js';
import { IN_NEW_NETNS, SANDBOX_MODES, describeRun, examplePlugin, modeName, runPluginCli } from './support/run.js';
import { TAP_FLAGS, needsTaps } from './support/net.js';
import { MANY_VCPU_COUNTS, checkFileLimitFor } from './support/vcpus.js';

const root = PACKAGE_ROOT;
const clientDir = path.join(root, 'clients/c');
const prefix = path.join(clientDir, 'build');
const includeDir = path.join(prefix, 'include');
const libDir = path.join(prefix, 'lib');
const binDir = path.join(prefix, 'tests');
const testsDir = path.join(clientDir, 'tests');
const examplesDir = path.join(root, 'examples/c');

const VALGRIND = [
  '/usr/bin/valgrind',
  '--quiet',
  '--error-exitcode=99',
  '--leak-check=full',
  '--errors-for-leak-kinds=definite,indirect',
];

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  try {
    return execFileSync(cmd, args, {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      env: env ?? process.env,
      timeout: 300_000,
    });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
  }
}

/** How a program links the built library (found again at run time through its rpath). */
const LINK_LIBRARY = [`-L${libDir}`, `-Wl,-rpath,${libDir}`, '-lcrosvm_plugin'];

/**
 * Compiles `source` with `compiler` and `flags`, warnings as errors, against
 * the built header, into binDir/NAME (linked to the library unless `link` is
 * false); returns the program's path.
 */
function compile(compiler: 'cc' | 'c++', flags: string[], source: string, name: string, { link = true } = {}): string {
  const out = path.join(binDir, name);
  run(compiler, [...flags, '-Wall', '-Wextra', '-Werror', `-I${includeDir}`, source, ...(link ? LINK_LIBRARY : []), '-o', out]);
  return out;
}

/** Builds a plugin exactly as crosvm's test harness built one. */
function buildPlugin(source: string, name: string): string {
  return compile('cc', ['-O2', '-g', '-pthread'], source, name);
}

/** The C test plugins: file under clients/c/tests, VCPUs, the line printed on success. */
const PLUGINS: { name: string; cpus?: number; stdout: RegExp }[] = [
  { name: 't_dirty_log', stdout: /^dirty_log: ok\n$/ },
  { name: 't_mmio', stdout: /^mmio: ok\n$/ },
  { name: 't_ioevent', stdout: /^ioevent: ok\n$/ },
  { name: 't_irq', stdout: /^irq: ok\n$/ },
  { name: 't_vm_state', stdout: /^vm_state: ok\n$/ },
  { name: 't_vcpu_state', stdout: /^vcpu_state: ok\n$/ },
  { name: 't_hint', stdout: /^hint: ok\n$/ },
  { name: 't_async', stdout: /^async: ok\n$/ },
  { name: 't_pause', cpus: 2, stdout: /^pause: ok\n$/ },
  { name: 't_queries', stdout: /^queries: ok \(hyperv cpuid (yes|no), synic (yes|no)\)\n$/ },
  { name: 't_connections', stdout: /^connections: ok\n$/ },
];

const EXAMPLES: { name: string; cpus?: number; stdout: string }[] = [
  { name: 'adder', stdout: '9\nguest computed 2 + 7 = 9\n' },
  { name: 'multi_vcpu', cpus: 2, stdout: 'vcpu0: interrupt handled\nvcpu1: 6 * 7 = 42\n' },
];

/**
 * Plugins that need a tap (run in a network namespace of their own, with the
 * tap of the crosvm example) or many VCPUs; not under memcheck.
 */
const TAP_PLUGIN = { name: 't_net_config', stdout: 'net_config: ok\n' };
const MANY_VCPUS_PLUGIN = 't_many_vcpus';

/** Plugins that also run under memcheck: all of them (a few seconds each). */
const UNDER_VALGRIND = [...EXAMPLES.map((e) => e.name), ...PLUGINS.map((p) => p.name)];

const binaries = new Map<string, string>();

before(() => {
  run('make', ['-C', clientDir, '--no-print-directory']);
  mkdirSync(binDir, { recursive: true });
  for (const p of PLUGINS) binaries.set(p.name, buildPlugin(path.join(testsDir, `${p.name}.c`), p.name));
  for (const e of EXAMPLES) binaries.set(e.name, buildPlugin(path.join(examplesDir, `${e.name}.c`), e.name));
  binaries.set('mock_host', buildPlugin(path.join(testsDir, 'mock_host.c'), 'mock_host'));
  for (const name of [TAP_PLUGIN.name, MANY_VCPUS_PLUGIN])
    binaries.set(name, buildPlugin(path.join(testsDir, `${name}.c`), name));
});

describe('the C library and header', () => {
  test('`make -C clients/c` is idempotent: a second run does nothing', () => {
    const out = run('make', ['-C', clientDir, '--no-print-directory']);
    assert.match(out, /Nothing to be done|^$/m);
    assert.doesNotMatch(out, /\bcc\b|protoc-c/);
  });

  test('the library exports exactly the API of crosvm.h, with soname libcrosvm_plugin.so', () => {
    const header = readFileSync(path.join(clientDir, 'include/crosvm.h'), 'utf8');
    const declared = new Set([...header.matchAll(/^int\s+(crosvm_\w+)\(/gm)].map((m) => m[1]));
    assert.equal(declared.size, 60);
    const lib = path.join(libDir, 'libcrosvm_plugin.so');
    const exported = new Set(
      run('nm', ['-D', '--defined-only', lib])
        .split('\n')
        .map((l) => l.trim().split(/\s+/)[2])
        .filter((s): s is string => s !== undefined && s !== ''),
    );
    assert.deepEqual([...exported].sort(), [...declared].sort());
    assert.match(run('readelf', ['-d', lib]), /SONAME.*\[libcrosvm_plugin\.so\]/);
  });

  test('every API function is used by a test or an example plugin', () => {
    const header = readFileSync(path.join(clientDir, 'include/crosvm.h'), 'utf8');
    const names = [...header.matchAll(/^int\s+(crosvm_\w+)\(/gm)].map((m) => m[1]);
    const sources = [
      ...readdirSync(testsDir)
        .filter((f) => f.endsWith('.c') && f.startsWith('t_'))
        .map((f) => path.join(testsDir, f)),
      ...readdirSync(examplesDir)
        .filter((f) => f.endsWith('.c'))
        .map((f) => path.join(examplesDir, f)),
      path.join(testsDir, 'testlib.h'),
    ]
      .map((f) => readFileSync(f, 'utf8'))
      .join('\n');
    const unused = names.filter((n) => !new RegExp(`\\b${n}\\(`).test(sources));
    assert.deepEqual(unused, []);
  });

  test('struct layouts, offsets, enum values and constants (C11, -pedantic)', () => {
    const out = compile('cc', ['-std=c11', '-pedantic'], path.join(testsDir, 'offsets.c'), 'offsets', { link: false });
    assert.equal(run(out, []), 'offsets: ok\n');
  });

  test('the header works from C++ (extern "C", static_assert)', () => {
    const out = compile('c++', ['-std=c++11', '-pedantic'], path.join(testsDir, 'header_cxx.cc'), 'header_cxx');
    assert.match(run(out, []), /^header_cxx: ok/);
  });

  test('pkg-config: `cc plugin.c $(pkg-config --cflags --libs crosvm_plugin)` builds a plugin', () => {
    const env = { ...process.env, PKG_CONFIG_PATH: path.join(libDir, 'pkgconfig') };
    const flags = run('pkg-config', ['--cflags', '--libs', 'crosvm_plugin'], env).trim().split(/\s+/);
    const out = path.join(binDir, 'adder_pkgconfig');
    run('cc', ['-Wall', '-Werror', path.join(examplesDir, 'adder.c'), ...flags, '-o', out], env);
    assert.match(run('ldd', [out]), /libcrosvm_plugin\.so => \S*clients\/c\/build\/lib/);
  });

  test('unit tests against a fake host (encodings, errors, buffering, caching)', () => {
    assert.match(run(binaries.get('mock_host')!, []), /mock_host: \d+ checks, 0 failed/);
  });

  test('the unit tests are memcheck-clean', () => {
    run(VALGRIND[0], [...VALGRIND.slice(1), binaries.get('mock_host')!]);
  });

  test('the unit tests pass with the library built with ASan and UBSan', () => {
    const out = path.join(binDir, 'mock_host_asan');
    run('cc', [
      '-g',
      '-O1',
      '-fsanitize=address,undefined',
      '-fno-sanitize-recover=all',
      '-fno-omit-frame-pointer',
      '-std=gnu11',
      '-pthread',
      `-I${path.join(clientDir, 'include')}`,
      `-I${path.join(clientDir, 'src')}`,
      `-I${path.join(prefix, 'gen')}`,
      path.join(clientDir, 'src/crosvm.c'),
      path.join(prefix, 'gen/plugin.pb-c.c'),
      path.join(testsDir, 'mock_host.c'),
      '-lprotobuf-c',
      '-o',
      out,
    ]);
    assert.match(run(out, []), /mock_host: \d+ checks, 0 failed/);
  });
});

for (const sandboxed of SANDBOX_MODES) {
  const mode = modeName(sandboxed);

  describe(`C plugins on a real VM (${mode})`, needsKvm, () => {
    for (const p of PLUGINS) {
      test(p.name, async () => {
        const r = await runPluginCli(binaries.get(p.name)!, { cpus: p.cpus ?? 1, sandboxed, timeoutMs: 60_000 });
        assert.equal(r.code, 0, describeRun(r));
        assert.match(r.stdout, p.stdout, describeRun(r));
      });
    }
  });

  describe(`a C plugin with a tap (${mode})`, needsTaps, () => {
    test(`${TAP_PLUGIN.name}: crosvm_net_get_config under plugvisor run ${TAP_FLAGS.join(' ')}`, async () => {
      const r = await runPluginCli(binaries.get(TAP_PLUGIN.name)!, {
        sandboxed,
        flags: [...TAP_FLAGS],
        wrap: IN_NEW_NETNS,
        timeoutMs: 60_000,
      });
      assert.equal(r.code, 0, describeRun(r));
      assert.equal(r.stdout, TAP_PLUGIN.stdout, describeRun(r));
    });
  });

  describe(`a C plugin with many VCPUs, a thread each (${mode})`, needsKvm, () => {
    for (const cpus of MANY_VCPU_COUNTS) {
      test(`${cpus} VCPUs`, { timeout: 300_000 }, async () => {
        checkFileLimitFor(cpus);
        const r = await runPluginCli(binaries.get(MANY_VCPUS_PLUGIN)!, { cpus, sandboxed, timeoutMs: 240_000 });
        assert.equal(r.code, 0, describeRun(r));
        assert.equal(r.stdout, `many_vcpus: ${cpus} ok\n`, describeRun(r));
      });
    }
  });

  describe(`C examples (${mode})`, needsKvm, () => {
    for (const e of EXAMPLES) {
      test(e.name, async () => {
        const r = await runPluginCli(binaries.get(e.name)!, { cpus: e.cpus ?? 1, sandboxed, timeoutMs: 60_000 });
        assert.equal(r.code, 0, describeRun(r));
        assert.equal(r.stdout, e.stdout, describeRun(r));
      });
    }
  });
}

describe('the C and TypeScript SDKs', needsKvm, () => {
  test('run the same guest scenario (the adder) with identical results', async () => {
    const [c, ts] = await Promise.all([
      runPluginCli(binaries.get('adder')!, { timeoutMs: 60_000 }),
      runPluginCli(examplePlugin('adder'), { timeoutMs: 60_000 }),
    ]);
    assert.equal(c.code, 0, describeRun(c));
    assert.equal(ts.code, 0, describeRun(ts));
    assert.equal(c.stdout, ts.stdout);
    assert.equal(c.stdout, '9\nguest computed 2 + 7 = 9\n');
  });
});

describe('C plugins under memcheck (valgrind, unsandboxed)', needsKvm, () => {
  for (const name of UNDER_VALGRIND) {
    const cpus = [...PLUGINS, ...EXAMPLES].find((p) => p.name === name)?.cpus ?? 1;
    test(name, async () => {
      const r = await runPluginCli(VALGRIND[0], {
        cpus,
        args: [...VALGRIND.slice(1), binaries.get(name)!],
        timeoutMs: 120_000,
      });
      assert.equal(r.code, 0, describeRun(r));
    });
  }
});
