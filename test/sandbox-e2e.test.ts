/**
 * The plugin sandbox end to end, through the real `plugvisor run` CLI with
 * its default (sandboxed) mode: the demo works jailed, a jailed plugin's
 * attempts to escape fail the right way while it still runs its VM, the
 * jail's options (--plugin-mount, --seccomp-policy, --plugin-root) do what
 * they say, and a sandbox that cannot be set up is a clear error.
 *
 * The probe plugin is test/plugins/jail-probe.ts. Node has no binding for
 * raw syscalls such as mount or kexec_load, so the test builds a tiny
 * Node-API module (`syscall(nr, ...args)`) with the system C compiler and
 * binds it into the jail with --plugin-mount.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { JailKillReport, JailPolicyReport, JailProbeReport, Reported } from './support/reports.js';
import { CLI, describeRun, examplePlugin, runCli, runCommand, runPluginCli, testPlugin, type CliResult } from './support/run.js';
import { planSandboxedLaunch } from '../src/sandbox/bubblewrap.js';
import { PACKAGE_ROOT } from '../src/package-root.js';

const PROBE = testPlugin('jail-probe');
const ADDER = examplePlugin('adder');
const HOST_README = path.join(PACKAGE_ROOT, 'README.md');
/** The jail's view of the test's read-only mount (the addon and a data file) and writable one. */
const RO = '/probe-ro';
const RW = '/probe-rw';
const ADDON_IN_JAIL = `${RO}/jail-syscall.node`;
const SIGSYS = os.constants.signals.SIGSYS;

// A minimal Node-API module: exports.syscall(nr, a0..a5) returns the result or -errno.
// The few Node-API declarations it needs are written out so no headers are required.
const ADDON_SOURCE = String.raw`
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

typedef struct napi_env__ *napi_env;
typedef struct napi_value__ *napi_value;
typedef struct napi_callback_info__ *napi_callback_info;
typedef int napi_status;
typedef napi_value (*napi_callback)(napi_env, napi_callback_info);
extern napi_status napi_get_cb_info(napi_env, napi_callback_info, size_t *, napi_value *, napi_value *, void **);
extern napi_status napi_get_value_int64(napi_env, napi_value, int64_t *);
extern napi_status napi_create_int64(napi_env, int64_t, napi_value *);
extern napi_status napi_create_function(napi_env, const char *, size_t, napi_callback, void *, napi_value *);
extern napi_status napi_set_named_property(napi_env, napi_value, const char *, napi_value);

static napi_value do_syscall(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  int64_t a[7] = {0};
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  for (size_t i = 0; i < argc && i < 7; i++) napi_get_value_int64(env, argv[i], &a[i]);
  long rc = syscall(a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
  napi_value result;
  napi_create_int64(env, rc < 0 ? -(int64_t)errno : (int64_t)rc, &result);
  return result;
}

napi_value napi_register_module_v1(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "syscall", (size_t)-1, do_syscall, NULL, &fn);
  napi_set_named_property(env, exports, "syscall", fn);
  return exports;
}
`;

let tmp = '';
let roDir = '';
let rwDir = '';
const mounts = (): string[] => ['--plugin-mount', `${roDir}:${RO}`, '--plugin-mount', `${rwDir}:${RW}:true`];

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plugvisor-sandbox-e2e-'));
  roDir = path.join(tmp, 'ro');
  rwDir = path.join(tmp, 'rw');
  fs.mkdirSync(roDir);
  fs.mkdirSync(rwDir);
  fs.writeFileSync(path.join(tmp, 'jail-syscall.c'), ADDON_SOURCE);
  const cc = spawnSync(
    'cc',
    ['-shared', '-fPIC', '-O1', '-o', path.join(roDir, 'jail-syscall.node'), path.join(tmp, 'jail-syscall.c')],
    { encoding: 'utf8' },
  );
  assert.equal(cc.status, 0, `building the syscall addon failed: ${cc.error?.message ?? cc.stderr}`);
  fs.writeFileSync(path.join(roDir, 'hello.txt'), 'hello from the host\n');
});

after(() => {
  if (tmp !== '') fs.rmSync(tmp, { recursive: true, force: true });
});

/**
 * `plugvisor run ARGS... HOSTPID`: a shell appends its own pid and execs
 * node on the CLI, so the last argument is the pid of plugvisor itself.
 */
function runCliWithOwnPid(args: readonly string[], timeoutMs = 30_000): Promise<CliResult & { pid: number }> {
  return runCommand('/bin/sh', ['-c', 'exec "$@" "$$"', 'sh', process.execPath, CLI, ...args], { timeoutMs });
}

/** The probe's JSON lines on stdout (its other lines are the guest's). */
function reports<T extends JailProbeReport | JailKillReport | JailPolicyReport>(stdout: string): Reported<T>[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Reported<T>);
}

/** What jail-probe's `policy` mode reports under the default policy: getpriority allowed, kcmp and sethostname refused. */
const DEFAULT_POLICY_ANSWERS: Reported<JailPolicyReport> = { getPriority: 'ok', kcmp: 'EPERM', sethostname: 'EPERM' };

/** The probe's `policy` run exited 0, and its one report is `expected`. */
function assertPolicyReport(run: CliResult, expected: Reported<JailPolicyReport>): void {
  assert.equal(run.code, 0, describeRun(run));
  assert.deepEqual(reports<JailPolicyReport>(run.stdout), [expected], describeRun(run));
}

/** Jailed Node must not complain about host state it cannot see (e.g. NODE_EXTRA_CA_CERTS). */
function assertNoNodeWarnings(r: CliResult): void {
  assert.doesNotMatch(r.stderr, /Warning|Ignoring extra certs/i, describeRun(r));
}

describe('the adder demo', () => {
  test('gives the same output sandboxed (the default) and with --disable-sandbox', async () => {
    const jailed = await runCli(['run', '--plugin', ADDER]);
    const plain = await runPluginCli(ADDER);
    assert.equal(jailed.code, 0, describeRun(jailed));
    assert.equal(plain.code, 0, describeRun(plain));
    assert.match(jailed.stdout, /guest computed 2 \+ 7 = 9/);
    assert.equal(jailed.stdout, plain.stdout);
    assertNoNodeWarnings(jailed);
  });
});

describe('scripts in the jail', () => {
  test('a #!/bin/sh plugin has its shell and nothing else; --plugin-mount /usr:/usr gives it sleep, ls and cat', async () => {
    const script = path.join(tmp, 'tools.sh');
    fs.writeFileSync(script, '#!/bin/sh\nsleep 0 && ls -d /usr/bin && echo from-cat | cat\nexit 7\n', { mode: 0o755 });
    const bare = await runCli(['run', '--plugin', script]);
    assert.equal(bare.code, 7, describeRun(bare));
    assert.match(bare.stderr, /sleep: not found/, describeRun(bare));
    const bound = await runCli(['run', '--plugin', script, '--plugin-mount', '/usr:/usr']);
    assert.equal(bound.code, 7, describeRun(bound));
    assert.equal(bound.stdout, '/usr/bin\nfrom-cat\n', describeRun(bound));
  });

  test('a #!/usr/bin/env -S node ARGS plugin runs jailed', async () => {
    const script = path.join(tmp, 'env-split.mjs');
    fs.writeFileSync(
      script,
      `#!/usr/bin/env -S node --no-warnings\nawait import(${JSON.stringify(pathToFileURL(ADDER).href)});\n`,
      { mode: 0o755 },
    );
    const r = await runCli(['run', '--plugin', script]);
    assert.equal(r.code, 0, describeRun(r));
    assert.match(r.stdout, /guest computed 2 \+ 7 = 9/);
  });
});

describe('a jailed plugin trying to get out', () => {
  let run: CliResult & { pid: number };
  let r: Reported<JailProbeReport>;

  before(async () => {
    run = await runCliWithOwnPid([
      'run',
      '--plugin',
      PROBE,
      ...mounts(),
      '--',
      'probe',
      HOST_README,
      ADDON_IN_JAIL,
      `${RO}/hello.txt`,
      `${RW}/out.txt`,
    ]);
    const lines = reports<JailProbeReport>(run.stdout);
    assert.equal(lines.length, 1, describeRun(run));
    r = lines[0]!;
  });

  test('still runs its guest, and plugvisor exits 0', () => {
    assert.equal(run.code, 0, describeRun(run));
    assert.match(run.stdout, /^guest done: ok$/m, describeRun(run));
    assertNoNodeWarnings(run);
  });

  test('cannot open /dev/kvm', () => {
    assert.equal(r.kvm, 'ENOENT');
  });

  test('cannot read a host file that is not bound in', () => {
    assert.ok(fs.existsSync(HOST_README));
    assert.equal(r.hostFile, 'ENOENT');
  });

  test("sees only the jail's processes and cannot signal the host's", () => {
    const pids = r.procPids;
    assert.ok(run.pid > 0);
    assert.equal(r.hostPidInProc, false, `plugvisor is pid ${run.pid}; the jail's /proc shows ${pids.join(' ')}`);
    assert.ok(!pids.includes(run.pid));
    assert.ok(pids.includes(r.pid));
    assert.ok(pids.length <= 4, `only bwrap's init and the plugin should be there, not ${pids.join(' ')}`);
    assert.equal(r.killHost, 'ESRCH');
  });

  test('has no capabilities and cannot do privileged things', () => {
    assert.equal(r.capEff, '0000000000000000');
    assert.equal(r.capPrm, '0000000000000000');
    assert.equal(r.noNewPrivs, '1');
    assert.equal(r.raisePriority, 'EACCES'); // CAP_SYS_NICE; not in the seccomp policy
    assert.equal(r.sethostname, 'EPERM');
    assert.equal(r.mount, 'EPERM');
  });

  test('gets EPERM from the seccomp policy for ptrace and kcmp', () => {
    assert.equal(r.ptraceTraceme, 'EPERM');
    assert.equal(r.kcmp, 'EPERM'); // allowed by --seccomp-policy below, where it succeeds
  });

  test('--plugin-mount binds read-only by default and writable with :true', () => {
    assert.equal(r.readMounted, 'ok');
    assert.equal(r.readMountedText, 'hello from the host\n');
    assert.equal(r.writeReadOnlyMount, 'EROFS');
    assert.equal(r.writeWritableMount, 'ok');
    assert.match(fs.readFileSync(path.join(rwDir, 'out.txt'), 'utf8'), /^written by pid \d+\n$/);
    assert.ok(!fs.existsSync(path.join(roDir, 'hello.txt.new')));
  });
});

describe('a syscall the policy kills for (kexec_load)', () => {
  let run: CliResult;
  before(async () => {
    run = await runCli(['run', '--plugin', PROBE, ...mounts(), '--', 'kill', ADDON_IN_JAIL]);
  });

  test('kills the plugin by SIGSYS, and plugvisor exits 128 + SIGSYS naming the signal', () => {
    assert.deepEqual(reports<JailKillReport>(run.stdout), [{ about: 'kexec_load' }], describeRun(run)); // it never got past the call
    assert.doesNotMatch(run.stdout, /guest done/);
    // bubblewrap (the host's direct child) reports a child killed by signal N as exit code 128 + N.
    assert.equal(run.code, 128 + SIGSYS, describeRun(run));
    assert.match(
      run.stderr,
      new RegExp(`^plugvisor: plugin was killed by signal SIGSYS \\(the sandbox reported exit code ${128 + SIGSYS}\\)`, 'm'),
      describeRun(run),
    );
  });
});

describe("--seccomp-log-failures (crosvm's option)", () => {
  test('the call the policy kills for is logged and allowed instead: the plugin lives on and runs its guest', async () => {
    const run = await runCli(['run', '--seccomp-log-failures', '--plugin', PROBE, ...mounts(), '--', 'kill', ADDON_IN_JAIL]);
    assert.equal(run.code, 0, describeRun(run));
    // kexec_load got through the filter, then the kernel refused it (EPERM: no
    // CAP_SYS_BOOT in the jail; ENOSYS: a kernel without kexec).
    const [about, survived] = reports<JailKillReport>(run.stdout);
    assert.deepEqual(about, { about: 'kexec_load' }, describeRun(run));
    assert.ok(survived && 'survived' in survived, describeRun(run));
    assert.match(survived.survived, /^(EPERM|ENOSYS)$/, describeRun(run));
    assert.match(run.stdout, /^guest done: ok$/m);
  });

  test('errno rules still hold', async () => {
    const run = await runCli(['run', '--seccomp-log-failures', '--plugin', PROBE, ...mounts(), '--', 'policy', ADDON_IN_JAIL]);
    assertPolicyReport(run, DEFAULT_POLICY_ANSWERS);
  });
});

test('--seccomp-policy replaces the default policy', async () => {
  const policy = path.join(tmp, 'custom.policy');
  fs.writeFileSync(policy, '# test policy: only getpriority is refused\ndefault allow\ngetpriority errno EACCES\n');
  const run = await runCli(['run', '--plugin', PROBE, '--seccomp-policy', policy, ...mounts(), '--', 'policy', ADDON_IN_JAIL]);
  // kcmp is allowed now; sethostname still fails, for want of CAP_SYS_ADMIN.
  assertPolicyReport(run, { getPriority: 'EACCES', kcmp: 'ok', sethostname: 'EPERM' });
  assert.match(run.stdout, /^guest done: ok$/m);

  // The same plugin under the default policy: getpriority works, kcmp is refused.
  const plain = await runCli(['run', '--plugin', PROBE, ...mounts(), '--', 'policy', ADDON_IN_JAIL]);
  assertPolicyReport(plain, DEFAULT_POLICY_ANSWERS);
});

test('a --seccomp-policy that does not compile is a clear error', async () => {
  const policy = path.join(tmp, 'broken.policy');
  fs.writeFileSync(policy, 'default allow\nno_such_syscall errno EPERM\n');
  const run = await runCli(['run', '--plugin', PROBE, '--seccomp-policy', policy, '--', 'policy', ADDON_IN_JAIL]);
  assert.notEqual(run.code, 0, describeRun(run));
  assert.match(run.stderr, /no_such_syscall/, describeRun(run));
  assert.doesNotMatch(run.stdout, /guest done/);
});

describe('--plugin-root', () => {
  let run: CliResult;

  before(async () => {
    // A root prepared by the test: empty mount points, the host's /usr (and
    // /lib, /lib64, /bin: copied symlinks on a merged-/usr system, else bound),
    // the loader cache, plugvisor itself and the probe's directories.
    const root = path.join(tmp, 'root');
    const binds = ['/usr', '/etc/ld.so.cache', PACKAGE_ROOT, RO, RW];
    for (const top of ['/lib', '/lib64', '/bin']) {
      let st: fs.Stats;
      try {
        st = fs.lstatSync(top);
      } catch {
        continue;
      }
      if (st.isSymbolicLink()) {
        fs.mkdirSync(root, { recursive: true });
        fs.symlinkSync(fs.readlinkSync(top), path.join(root, top));
      } else {
        binds.push(top);
      }
    }
    for (const dir of ['/proc', '/dev', ...binds]) {
      if (dir === '/etc/ld.so.cache') {
        fs.mkdirSync(path.join(root, '/etc'), { recursive: true });
        fs.writeFileSync(path.join(root, dir), '');
      } else {
        fs.mkdirSync(path.join(root, dir), { recursive: true });
      }
    }
    const flags = ['--plugin-root', root];
    for (const dir of binds) {
      const source = dir === RO ? roDir : dir === RW ? rwDir : dir;
      flags.push('--plugin-mount', `${source}:${dir}${dir === RW ? ':true' : ''}`);
    }
    run = await runCli(['run', '--plugin', PROBE, ...flags, '--', 'policy', ADDON_IN_JAIL]);
  });

  test('a root prepared by the test, with the host system bound in, runs the plugin', () => {
    assertPolicyReport(run, DEFAULT_POLICY_ANSWERS);
    assert.match(run.stdout, /^guest done: ok$/m);
  });

  test('jailed Node in such a root prints no warnings', () => {
    assertNoNodeWarnings(run);
  });

  test('a root without /proc is a clear error', async () => {
    const root = path.join(tmp, 'bare-root');
    fs.mkdirSync(root);
    // The plugin comes from a --plugin-mount, so the first thing missing is /proc.
    const run = await runCli([
      'run',
      '--plugin',
      PROBE,
      '--plugin-root',
      root,
      '--plugin-mount',
      `${PACKAGE_ROOT}:${PACKAGE_ROOT}`,
      '--',
      'policy',
      ADDON_IN_JAIL,
    ]);
    assert.notEqual(run.code, 0, describeRun(run));
    assert.match(run.stderr, new RegExp(`--plugin-root ${root} has no /proc`), describeRun(run));
    assert.doesNotMatch(run.stdout, /guest done/);
  });
});

describe('bad --plugin-mount specs are CLI errors', () => {
  for (const [spec, why] of [
    ['relative:/x', /source 'relative' must be an absolute path/],
    ['/tmp:/x:yes', /WRITABLE must be 'true' or 'false'/],
    ['/tmp:/x:true:more', /expected SRC\[:DST\[:WRITABLE\]\]/],
  ] as const) {
    test(spec, async () => {
      const run = await runCli(['run', '--plugin', PROBE, '--plugin-mount', spec]);
      assert.notEqual(run.code, 0, describeRun(run));
      assert.match(run.stderr, /--plugin-mount/, describeRun(run));
      assert.match(run.stderr, why, describeRun(run));
      assert.doesNotMatch(run.stderr, /^\s+at /m, 'no stack trace');
    });
  }

  test('a source that does not exist', async () => {
    const missing = path.join(tmp, 'no-such-dir');
    const run = await runCli(['run', '--plugin', PROBE, '--plugin-mount', `${missing}:/x`, '--', 'policy', ADDON_IN_JAIL]);
    assert.notEqual(run.code, 0, describeRun(run));
    assert.match(run.stderr, new RegExp(`--plugin-mount source ${missing} does not exist`), describeRun(run));
  });
});

describe('a jail bubblewrap cannot build: a clear error', () => {
  // A bwrap that fails the way a real one does where user namespaces are
  // forbidden: one line on stderr, exit status 1, nothing run.
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plugvisor-fake-bwrap-'));
    fs.writeFileSync(path.join(dir, 'bwrap'), '#!/bin/sh\necho "bwrap: setting up uid map: Permission denied" >&2\nexit 1\n', {
      mode: 0o755,
    });
    env = { ...process.env, PATH: `${dir}:${process.env.PATH ?? ''}` };
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('plugvisor run says bubblewrap cannot create the namespaces, with its reason, and exits 1', async () => {
    const run = await runCli(['run', '--plugin', ADDER], { env });
    assert.equal(run.code, 1, describeRun(run));
    assert.match(
      run.stderr,
      /^plugvisor: (error: )?cannot sandbox the plugin: bubblewrap cannot create the plugin's namespaces: bwrap: setting up uid map: Permission denied/m,
      describeRun(run),
    );
    assert.equal(run.stdout, '', 'the plugin never ran');
  });
});

describe('no bubblewrap: a clear error, never an unsandboxed plugin', () => {
  const env = { ...process.env, PATH: path.join(os.tmpdir(), 'plugvisor-no-such-dir') };

  test('plugvisor run fails, naming bubblewrap, and the plugin never runs', async () => {
    const run = await runCli(['run', '--plugin', ADDER], { env });
    assert.notEqual(run.code, 0, describeRun(run));
    assert.match(
      run.stderr,
      /cannot sandbox the plugin: bubblewrap \('bwrap'\) is not installed or not on PATH; install it, the one system package the sandbox needs \(Debian\/Ubuntu: apt-get install bubblewrap\)/,
      describeRun(run),
    );
    assert.match(run.stderr, /--disable-sandbox/);
    assert.equal(run.stdout, '');
  });

  test('the error is a one-line message, not a stack trace', async () => {
    const run = await runCli(['run', '--plugin', ADDER], { env });
    assert.match(run.stderr, /^plugvisor: error: cannot sandbox the plugin/m, describeRun(run));
    assert.doesNotMatch(run.stderr, /^\s+at /m, describeRun(run));
  });

  test('planSandboxedLaunch throws in-process too', () => {
    const saved = process.env.PATH;
    process.env.PATH = env.PATH;
    try {
      assert.throws(() => planSandboxedLaunch({ mounts: [], gidMaps: [] }, ADDER, []), /bubblewrap/);
    } finally {
      process.env.PATH = saved;
    }
  });
});
