/**
 * The plugin jail (src/sandbox). Besides the parsers and the shape of the
 * command line, these tests run real jails: they spawn the plan's command
 * the way the host does (main socket at fd 3, extra fds at 4, 5, ...) with
 * probe plugins (a Node script and a small C program) that report what they
 * can see and do from inside.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LaunchPlan } from '../src/host/process.js';
import { JAIL_HOSTNAME, planSandboxedLaunch } from '../src/sandbox/bubblewrap.js';
import { sharedLibraries } from '../src/sandbox/executable.js';
import { UNPRIVILEGED_ID, formatIdMap, jailGidMap, jailIdentity } from '../src/sandbox/identity.js';
import { PLUGIN_NOFILE_LIMIT, pluginNofileLimit } from '../src/sandbox/limits.js';
import { parseBindMount, parseGidMap, type SandboxConfig } from '../src/sandbox/options.js';
import { DEFAULT_SECCOMP_POLICY_PATH, compileSeccompPolicy } from '../src/sandbox/seccomp.js';
import { helperCandidates } from '../src/sandbox/tools.js';
import { PACKAGE_ROOT } from '../src/package-root.js';
import type { Reported, SandboxProbeReport } from './support/reports.js';

const isRoot = process.geteuid!() === 0;
const NODE_PROBE = path.join(PACKAGE_ROOT, 'dist', 'test', 'plugins', 'sandbox-probe.js');
const noConfig = (): SandboxConfig => ({ mounts: [], gidMaps: [] });
/** 32768, unless this process's hard limit is lower and cannot be raised (no CAP_SYS_RESOURCE). */
const NOFILE = pluginNofileLimit();
if (NOFILE < PLUGIN_NOFILE_LIMIT) {
  process.stderr.write(
    `\n*** NOTE: the hard RLIMIT_NOFILE here is ${NOFILE}, below ${PLUGIN_NOFILE_LIMIT}: jails get ${NOFILE} ***\n\n`,
  );
}

// A small C probe: `report HOSTPID HOSTFILE`, `kexec`, `write PATH`, `sleep`.
const C_PROBE = String.raw`
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *res(long rc) {
  return rc >= 0 ? "ok" : strerrorname_np(errno);
}

static const char *clone_newuser(void) {
  long rc = syscall(SYS_clone, (long)(CLONE_NEWUSER | SIGCHLD), 0L, 0L, 0L, 0L);
  if (rc == 0) _exit(0);
  if (rc > 0) { waitpid((pid_t)rc, NULL, 0); return "ok"; }
  return strerrorname_np(errno);
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "kexec") == 0) {
    long rc = syscall(SYS_kexec_load, 0L, 0L, 0L, 0L);
    printf("survived=%s\n", res(rc));
    return 0;
  }
  if (argc >= 3 && strcmp(argv[1], "write") == 0) {
    printf("write=%s\n", res(open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644)));
    return 0;
  }
  if (argc >= 2 && strcmp(argv[1], "sleep") == 0) {
    printf("sleeping\n");
    fflush(stdout);
    pause();
    return 0;
  }
  if (argc < 4 || strcmp(argv[1], "report") != 0) return 64;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  printf("uid=%d\ngid=%d\n", (int)getuid(), (int)getgid());
  printf("nofile=%llu:%llu\n", (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
  printf("fd3=%s\n", res(fcntl(3, F_GETFD)));
  printf("kill=%s\n", res(kill((pid_t)atoi(argv[2]), 0)));
  printf("kvm=%s\n", res(open("/dev/kvm", O_RDWR)));
  printf("hostfile=%s\n", res(open(argv[3], O_RDONLY)));
  printf("ptrace=%s\n", res(ptrace(PTRACE_TRACEME, 0, 0, 0)));
  printf("bpf=%s\n", res(syscall(SYS_bpf, 0L, 0L, 0L)));
  printf("perf=%s\n", res(syscall(SYS_perf_event_open, 0L, 0L, -1L, -1L, 0L)));
  printf("io_uring=%s\n", res(syscall(SYS_io_uring_setup, 1L, 0L)));
  printf("unshare=%s\n", res(unshare(CLONE_NEWUSER)));
  printf("clone_newuser=%s\n", clone_newuser());
  printf("mount=%s\n", res(mount("none", "/", "tmpfs", 0, NULL)));
  printf("setpgid=%s\n", res(setpgid(0, 0)));
  char fds[256] = "";
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d)) continue;
    strncat(fds, e->d_name, sizeof fds - strlen(fds) - 2);
    strcat(fds, ",");
  }
  if (d) closedir(d);
  printf("fds=%s\n", fds);
  char map[512] = "";
  FILE *f = fopen("/proc/self/gid_map", "r");
  unsigned long a, b, c;
  while (f != NULL && fscanf(f, "%lu %lu %lu", &a, &b, &c) == 3) {
    char one[64];
    snprintf(one, sizeof one, "%lu %lu %lu;", a, b, c);
    strncat(map, one, sizeof map - strlen(map) - 1);
  }
  if (f) fclose(f);
  printf("gid_map=%s\n", map);
  return 0;
}
`;

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  pid: number;
}

/** Spawns a plan like the host does: stdio 0-2, a socket at fd 3, the plan's fds from 4. */
function runPlan(
  plan: LaunchPlan,
  opts: { timeoutMs?: number; onStdout?: (text: string, pid: number) => void } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(plan.file, plan.args, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe', ...plan.extraFds],
      env: { ...process.env, CROSVM_SOCKET: '3', NODE_EXTRA_CA_CERTS: '/etc/no-such-ca.pem' },
    });
    plan.dispose(); // the child has its copies: the plan must not need ours any more
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      opts.onStdout?.(stdout, child.pid!);
    });
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, pid: child.pid! });
    });
  });
}

function keyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

/** The probe's `key=value` report holds `expected` (and may hold more). */
function assertReported(kv: Record<string, string>, expected: Record<string, string>): void {
  assert.deepEqual(Object.fromEntries(Object.keys(expected).map((key) => [key, kv[key]])), expected);
}

let tmp = '';
let cProbe = '';
let cProbeStatic: string | undefined;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plugvisor-sandbox-test-'));
  // scripts/post-build.js makes the probe executable; plain `tsc` does not.
  try {
    fs.accessSync(NODE_PROBE, fs.constants.X_OK);
  } catch {
    fs.chmodSync(NODE_PROBE, 0o755);
  }
  for (const helper of ['plugvisor-seccomp-compile', 'plugvisor-jail-exec'] as const) {
    assert.ok(
      helperCandidates(helper).some((c) => fs.existsSync(c)),
      `${helper} is not built (binding.gyp builds it: npm run build)`,
    );
  }
  fs.writeFileSync(path.join(tmp, 'probe.c'), C_PROBE);
  cProbe = path.join(tmp, 'probe');
  const cc = spawnSync('cc', ['-O1', '-o', cProbe, path.join(tmp, 'probe.c')], { encoding: 'utf8' });
  assert.equal(cc.status, 0, `compiling the C probe failed:\n${cc.stderr}`);
  const ccStatic = spawnSync('cc', ['-O1', '-static', '-o', cProbe + '-static', path.join(tmp, 'probe.c')], { encoding: 'utf8' });
  if (ccStatic.status === 0) cProbeStatic = cProbe + '-static';
});

after(() => {
  if (tmp !== '') fs.rmSync(tmp, { recursive: true, force: true });
});

describe('parseBindMount', () => {
  test('SRC:DST and SRC:DST:WRITABLE', () => {
    assert.deepEqual(parseBindMount('/a/b:/c'), { source: '/a/b', target: '/c', writable: false });
    assert.deepEqual(parseBindMount('/a:/c/d/:true'), { source: '/a', target: '/c/d', writable: true });
    assert.deepEqual(parseBindMount('/a:/c:false'), { source: '/a', target: '/c', writable: false });
  });
  test("crosvm's short forms: DST defaults to SRC", () => {
    assert.deepEqual(parseBindMount('/a/b'), { source: '/a/b', target: '/a/b', writable: false });
    assert.deepEqual(parseBindMount('/a/b:'), { source: '/a/b', target: '/a/b', writable: false });
    assert.deepEqual(parseBindMount('/a/b::true'), { source: '/a/b', target: '/a/b', writable: true });
  });
  test('clear errors', () => {
    assert.throws(() => parseBindMount(''), /expected SRC\[:DST\[:WRITABLE\]\]/);
    assert.throws(() => parseBindMount(':/b'), /expected SRC\[:DST/);
    assert.throws(() => parseBindMount('/a:/b:true:x'), /expected SRC\[:DST/);
    assert.throws(() => parseBindMount('a:/b'), /source 'a' must be an absolute path/);
    assert.throws(() => parseBindMount('/a:b'), /target 'b' must be an absolute path/);
    assert.throws(() => parseBindMount('/a:/b:yes'), /WRITABLE must be 'true' or 'false', not 'yes'/);
    assert.throws(() => parseBindMount('/a:/'), /cannot be '\/'/);
    assert.throws(() => parseBindMount('/a:/b/../c'), /must not contain '\.\.'/);
  });
});

describe('parseGidMap', () => {
  test('INNER:OUTER:COUNT', () => {
    assert.deepEqual(parseGidMap('1000:1001:1'), { inner: 1000, outer: 1001, count: 1 });
    assert.deepEqual(parseGidMap('0:100:10'), { inner: 0, outer: 100, count: 10 });
  });
  test("crosvm's short forms: OUTER defaults to INNER, COUNT to 1", () => {
    assert.deepEqual(parseGidMap('1000'), { inner: 1000, outer: 1000, count: 1 });
    assert.deepEqual(parseGidMap('1000:1001'), { inner: 1000, outer: 1001, count: 1 });
    assert.deepEqual(parseGidMap('1000::5'), { inner: 1000, outer: 1000, count: 5 });
  });
  test('clear errors', () => {
    assert.throws(() => parseGidMap(''), /expected INNER\[:OUTER\[:COUNT\]\]/);
    assert.throws(() => parseGidMap('1:2:3:4'), /expected INNER\[:OUTER\[:COUNT\]\]/);
    assert.throws(() => parseGidMap('a:1:1'), /INNER 'a' is not a non-negative integer/);
    assert.throws(() => parseGidMap('1:-1:1'), /OUTER '-1' is not a non-negative integer/);
    assert.throws(() => parseGidMap('1:1:0'), /COUNT must be at least 1/);
    assert.throws(() => parseGidMap('4294967295:1:1'), /too large/);
    assert.throws(() => parseGidMap('4294967200:1:100'), /past the largest gid/);
  });
});

describe('identity and id maps', () => {
  test('root on the host is 65534 in the jail; anyone else keeps their ids', () => {
    assert.deepEqual(jailIdentity(0, 0), { uid: UNPRIVILEGED_ID, gid: UNPRIVILEGED_ID, hostUid: 0, hostGid: 0 });
    assert.deepEqual(jailIdentity(1000, 1001), { uid: 1000, gid: 1001, hostUid: 1000, hostGid: 1001 });
  });
  test('gid maps: own gid first, overlaps refused', () => {
    const id = jailIdentity(1000, 1000);
    const maps = jailGidMap(id, [{ inner: 20, outer: 20, count: 5 }]);
    assert.equal(formatIdMap(maps), '1000 1000 1\n20 20 5\n');
    assert.throws(() => jailGidMap(id, [{ inner: 999, outer: 5000, count: 2 }]), /overlaps the plugin's own gid/);
    assert.throws(() => jailGidMap(id, [{ inner: 1, outer: 1000, count: 1 }]), /overlaps/);
    assert.throws(
      () =>
        jailGidMap(id, [
          { inner: 1, outer: 1, count: 10 },
          { inner: 5, outer: 50, count: 1 },
        ]),
      /5:50:1 overlaps 1:1:10/,
    );
  });
});

describe('seccomp policy compiler', () => {
  test('the default policy compiles to BPF', () => {
    assert.ok(fs.readFileSync(DEFAULT_SECCOMP_POLICY_PATH, 'utf8').includes('default allow'));
    const bpf = compileSeccompPolicy(DEFAULT_SECCOMP_POLICY_PATH);
    assert.equal(bpf.length % 8, 0);
    assert.ok(bpf.length >= 8 * 20, `only ${bpf.length / 8} instructions`);
  });
  test('errors name the file and line', () => {
    const bad = path.join(tmp, 'bad.policy');
    const cases: [string, RegExp][] = [
      ['default allow\nptrace errno EPERM\nnot_a_syscall kill\n', /bad\.policy:3: unknown syscall 'not_a_syscall'/],
      ['ptrace kill\n', /no 'default ACTION' line/],
      ['default allow\nptrace explode\n', /bad\.policy:2: unknown action 'explode'/],
      ['default allow\nptrace errno ENOTANERRNO\n', /unknown errno name 'ENOTANERRNO'/],
      ['default allow\nptrace kill\nptrace errno EPERM\n', /bad\.policy:3: 'ptrace' already has a rule on line 2/],
      ['default allow\ndefault kill\n', /second 'default' line/],
      ['default allow\nclone kill if arg9 & 1\n', /argument index must be 0\.\.5/],
      ['default allow\nclone kill when\n', /expected 'if argN & MASK'/],
    ];
    for (const [text, expected] of cases) {
      fs.writeFileSync(bad, text);
      assert.throws(() => compileSeccompPolicy(bad), expected, text);
    }
  });
  test('optional names, numeric errnos and conditions are accepted', () => {
    const ok = path.join(tmp, 'ok.policy');
    fs.writeFileSync(
      ok,
      '# c\ndefault errno 38\nread allow\nnot_a_syscall? kill\nclone allow if arg0 & 0x11\nclone log if arg0 & 0x2\n',
    );
    assert.equal(compileSeccompPolicy(ok).length % 8, 0);
  });
  test('an unreadable policy is an error', () => {
    assert.throws(
      () => compileSeccompPolicy(path.join(tmp, 'missing.policy')),
      /seccomp policy .*missing\.policy is not readable/,
    );
  });
});

describe('launch plan', () => {
  test('argv shape for a Node plugin on the empty root', () => {
    const plan = planSandboxedLaunch(noConfig(), NODE_PROBE, ['a', 'b']);
    try {
      assert.equal(path.basename(plan.file), 'plugvisor-jail-exec');
      assert.deepEqual(plan.args.slice(0, 5), ['--nofile', String(NOFILE), '--keep-fds-below', '5', '--']);
      assert.equal(path.basename(plan.args[5]), 'bwrap');
      assert.equal(plan.extraFds.length, 1);
      const a = plan.args;
      const has = (...seq: string[]) => a.some((_, i) => seq.every((s, j) => a[i + j] === s));
      for (const flag of [
        '--unshare-user',
        '--disable-userns',
        '--unshare-pid',
        '--unshare-ipc',
        '--unshare-uts',
        '--unshare-net',
        '--die-with-parent',
        '--new-session',
      ])
        assert.ok(has(flag), flag);
      assert.ok(has('--cap-drop', 'ALL'));
      assert.ok(has('--proc', '/proc'));
      assert.ok(has('--tmpfs', '/dev'));
      for (const dev of ['full', 'null', 'urandom', 'zero']) assert.ok(has('--dev-bind', `/dev/${dev}`, `/dev/${dev}`), dev);
      assert.ok(!a.includes('--dev'), 'no full /dev');
      assert.ok(has('--remount-ro', '/'));
      assert.ok(has('--seccomp', '4'));
      const uid = Number(a[a.indexOf('--uid') + 1]);
      const gid = Number(a[a.indexOf('--gid') + 1]);
      assert.notEqual(uid, 0);
      assert.notEqual(gid, 0);
      const node = fs.realpathSync(process.execPath);
      assert.ok(has('--ro-bind', node, node), 'the node binary');
      const dist = path.join(fs.realpathSync(PACKAGE_ROOT), 'dist');
      assert.ok(has('--ro-bind', dist, dist), 'plugvisor dist/');
      assert.ok(!a.includes(path.join(fs.realpathSync(PACKAGE_ROOT), 'src')), 'no sources');
      const command = a.slice(a.lastIndexOf('--') + 1);
      assert.deepEqual(command, [node, fs.realpathSync(NODE_PROBE), 'a', 'b']);
      // Every bind comes before the final remount of / read-only.
      assert.ok(a.lastIndexOf('--ro-bind') < a.lastIndexOf('--remount-ro'));
    } finally {
      plan.dispose();
    }
  });

  test('#!/usr/bin/env -S PROGRAM ARGS runs PROGRAM with ARGS; what only env could do is refused with the reason and the fix', () => {
    const script = path.join(tmp, 'env-split.mjs');
    fs.writeFileSync(script, '#!/usr/bin/env -S node --no-warnings  --stack-size=2000\n', { mode: 0o755 });
    const plan = planSandboxedLaunch(noConfig(), script, ['x']);
    try {
      const command = plan.args.slice(plan.args.lastIndexOf('--') + 1);
      assert.deepEqual(command, [
        fs.realpathSync(process.execPath),
        '--no-warnings',
        '--stack-size=2000',
        fs.realpathSync(script),
        'x',
      ]);
    } finally {
      plan.dispose();
    }
    const refused: [string, RegExp][] = [
      ['/usr/bin/env -S FOO=1 node', /variable assignments \(FOO=1\) are not supported/],
      ['/usr/bin/env -S -i node', /env's option -i is not supported/],
      ['/usr/bin/env -i node', /env's option -i is not supported/],
      ['/usr/bin/env node --no-warnings', /without -S, env looks for a program whose name contains the spaces/],
      ['/usr/bin/env -S node "a b"', /quotes, escapes, '\$' or '#' is not supported/],
      ['/usr/bin/env -S', /-S is followed by no program/],
      ['/usr/bin/env', /it names no program/],
    ];
    for (const [line, reason] of refused) {
      fs.writeFileSync(script, `#!${line}\n`, { mode: 0o755 });
      assert.throws(
        () => planSandboxedLaunch(noConfig(), script, []),
        (e: Error) => {
          assert.match(e.message, reason);
          assert.ok(e.message.includes(`cannot run '#!${line}' in the sandbox`), e.message);
          assert.match(
            e.message,
            /understands '#!\/usr\/bin\/env PROGRAM' and '#!\/usr\/bin\/env -S PROGRAM ARGS\.\.\.'; use one of those or an absolute interpreter path/,
          );
          return true;
        },
      );
    }
  });

  test('argv shape for a C plugin: binary, its libraries, no Node runtime', () => {
    const plan = planSandboxedLaunch(noConfig(), cProbe, ['report']);
    try {
      const a = plan.args;
      for (const lib of sharedLibraries(cProbe)) assert.ok(a.includes(lib), lib);
      assert.ok(!a.includes(fs.realpathSync(process.execPath)));
      assert.deepEqual(a.slice(a.lastIndexOf('--') + 1), [fs.realpathSync(cProbe), 'report']);
    } finally {
      plan.dispose();
    }
  });

  test('mounts and --plugin-root', () => {
    const root = path.join(tmp, 'shape-root');
    for (const d of ['proc', 'dev', 'data', 'bin']) fs.mkdirSync(path.join(root, d), { recursive: true });
    fs.writeFileSync(path.join(root, 'bin', 'plugin'), '');
    const plan = planSandboxedLaunch(
      {
        pluginRoot: root,
        mounts: [
          { source: tmp, target: '/data', writable: true },
          { source: '/usr', target: '/bin', writable: false },
        ],
        gidMaps: [],
      },
      '/bin/plugin',
      ['x'],
    );
    try {
      const a = plan.args;
      const has = (...seq: string[]) => a.some((_, i) => seq.every((s, j) => a[i + j] === s));
      assert.ok(has('--ro-bind', fs.realpathSync(root), '/'));
      assert.ok(has('--bind', tmp, '/data'));
      assert.ok(has('--ro-bind', '/usr', '/bin'));
      assert.ok(!has('--remount-ro', '/'));
      assert.deepEqual(a.slice(a.lastIndexOf('--') + 1), ['/bin/plugin', 'x']);
    } finally {
      plan.dispose();
    }
    assert.throws(
      () => planSandboxedLaunch({ pluginRoot: root, mounts: [], gidMaps: [] }, '/bin/missing', []),
      /does not exist inside --plugin-root/,
    );
    assert.throws(
      () =>
        planSandboxedLaunch(
          { pluginRoot: root, mounts: [{ source: tmp, target: '/nope', writable: false }], gidMaps: [] },
          '/bin/plugin',
          [],
        ),
      /has no \/nope/,
    );
    assert.throws(() => planSandboxedLaunch({ pluginRoot: root, mounts: [], gidMaps: [] }, 'bin/plugin', []), /must be absolute/);
  });

  test('clear errors, and no fd leaks on error', () => {
    const fdsBefore = fs.readdirSync('/proc/self/fd').length;
    assert.throws(
      () => planSandboxedLaunch(noConfig(), path.join(tmp, 'no-such-plugin'), []),
      /plugin .*no-such-plugin not found/,
    );
    const notExec = path.join(tmp, 'not-exec');
    fs.writeFileSync(notExec, '#!/bin/sh\n', { mode: 0o644 });
    assert.throws(() => planSandboxedLaunch(noConfig(), notExec, []), /is not executable/);
    const weird = path.join(tmp, 'weird');
    fs.writeFileSync(weird, 'just text', { mode: 0o755 });
    assert.throws(() => planSandboxedLaunch(noConfig(), weird, []), /neither an ELF executable nor a #! script/);
    assert.throws(
      () =>
        planSandboxedLaunch(
          { mounts: [{ source: path.join(tmp, 'nope'), target: '/x', writable: false }], gidMaps: [] },
          cProbe,
          [],
        ),
      /--plugin-mount source .*nope does not exist/,
    );
    assert.throws(
      () => planSandboxedLaunch({ mounts: [{ source: tmp, target: '/dev/x', writable: false }], gidMaps: [] }, cProbe, []),
      /inside the jail's \/proc or \/dev/,
    );
    const badPolicy = path.join(tmp, 'bad2.policy');
    fs.writeFileSync(badPolicy, 'default allow\nptrace frobnicate\n');
    assert.throws(
      () => planSandboxedLaunch({ ...noConfig(), seccompPolicyFile: badPolicy }, cProbe, []),
      /bad seccomp policy: .*bad2\.policy:2: unknown action 'frobnicate'/,
    );
    assert.equal(fs.readdirSync('/proc/self/fd').length, fdsBefore);
  });

  test('a missing bubblewrap or helper is named, never skipped', () => {
    const savedPath = process.env.PATH;
    const savedDir = process.env.PLUGVISOR_HELPER_DIR;
    try {
      process.env.PATH = path.join(tmp, 'empty-bin');
      assert.throws(
        () => planSandboxedLaunch(noConfig(), cProbe, []),
        /bubblewrap \('bwrap'\) is not installed.*--disable-sandbox/,
      );
      process.env.PATH = savedPath;
      // A helper dir holding a broken compiler: the override is used, and its failure reported.
      const dir = path.join(tmp, 'helpers');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'plugvisor-seccomp-compile'), '#!/bin/sh\necho "no libseccomp here" >&2\nexit 1\n', {
        mode: 0o755,
      });
      process.env.PLUGVISOR_HELPER_DIR = dir;
      assert.throws(() => planSandboxedLaunch(noConfig(), cProbe, []), /plugvisor-seccomp-compile failed: no libseccomp here/);
    } finally {
      process.env.PATH = savedPath;
      if (savedDir === undefined) delete process.env.PLUGVISOR_HELPER_DIR;
      else process.env.PLUGVISOR_HELPER_DIR = savedDir;
    }
  });

  test('gid maps need root', { skip: isRoot ? 'running as root' : false }, () => {
    assert.throws(
      () => planSandboxedLaunch({ mounts: [], gidMaps: [{ inner: 5, outer: 5, count: 1 }] }, cProbe, []),
      /--plugin-gid-map needs plugvisor to run as root/,
    );
  });
});

describe('inside the jail', () => {
  test('a Node plugin: unprivileged, alone, no devices, minimal read-only root', async () => {
    const hostFiles = [
      '/etc/hostname',
      '/etc/passwd',
      path.join(PACKAGE_ROOT, 'tsconfig.json'),
      path.join(PACKAGE_ROOT, 'package.json'),
    ];
    const plan = planSandboxedLaunch(noConfig(), NODE_PROBE, [String(process.pid), ...hostFiles]);
    const r = await runPlan(plan);
    assert.equal(r.code, 0, `probe failed: ${r.stderr}`);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as Reported<SandboxProbeReport>;
    assert.notEqual(report.uid, 0);
    assert.notEqual(report.euid, 0);
    assert.notEqual(report.gid, 0);
    if (isRoot) assert.equal(report.uid, UNPRIVILEGED_ID);
    else assert.equal(report.uid, process.getuid!());
    assert.equal(report.capEff, '0000000000000000');
    assert.equal(report.capPrm, '0000000000000000');
    assert.equal(report.capBnd, '0000000000000000');
    assert.equal(report.noNewPrivs, '1');
    assert.equal(report.seccomp, '2');
    assert.deepEqual(report.dev, ['fd', 'full', 'null', 'stderr', 'stdin', 'stdout', 'urandom', 'zero']);
    assert.equal(report.kvm, 'ENOENT');
    assert.equal(report.hostFiles['/etc/hostname'], 'ENOENT');
    assert.equal(report.hostFiles['/etc/passwd'], 'ENOENT');
    assert.equal(report.hostFiles[path.join(PACKAGE_ROOT, 'tsconfig.json')], 'ENOENT');
    assert.equal(report.hostFiles[path.join(PACKAGE_ROOT, 'package.json')], 'ok', 'the SDK package.json is bound');
    // bwrap's init is pid 1, the plugin pid 2: nothing of the host.
    assert.deepEqual(report.procPids, [1, 2]);
    assert.equal(report.pid, 2);
    assert.equal(report.killHost, 'ESRCH');
    assert.deepEqual(report.nofile, [String(NOFILE), String(NOFILE)]);
    assert.equal(report.fd3, 'socket');
    assert.equal(report.writeRoot, 'EROFS');
    assert.equal(report.writeDev, 'EROFS');
    assert.equal(report.devNull, 'ok');
    assert.equal(report.urandom, 'ok');
    assert.equal(report.hostname, JAIL_HOSTNAME);
    assert.deepEqual(report.netInterfaces, ['lo']);
    assert.equal(report.env, '3');
    assert.equal(r.stderr, '', 'nothing on stderr (e.g. no warning about NODE_EXTRA_CA_CERTS)');
    const addonOutside = spawnSync(process.execPath, [
      '--input-type=module',
      '-e',
      `await import(${JSON.stringify(path.join(PACKAGE_ROOT, 'dist/src/native/index.js'))})`,
    ]);
    if (addonOutside.status === 0) assert.equal(report.addon, 'ok', 'the native addon loads inside the jail');
  });

  test('a C plugin: ids, rlimit, devices, host processes and files, denied syscalls, fds', async () => {
    const plan = planSandboxedLaunch(noConfig(), cProbe, [
      'report',
      String(process.pid),
      path.join(PACKAGE_ROOT, 'tsconfig.json'),
    ]);
    const r = await runPlan(plan);
    assert.equal(r.code, 0, `probe failed: ${r.stderr}`);
    const kv = keyValues(r.stdout);
    assert.notEqual(kv.uid, '0');
    assert.notEqual(kv.gid, '0');
    assertReported(kv, {
      nofile: `${NOFILE}:${NOFILE}`,
      fd3: 'ok',
      kill: 'ESRCH',
      kvm: 'ENOENT',
      hostfile: 'ENOENT',
      // Denied by the default policy: EPERM (without the filter these give EFAULT/EINVAL/ENOSPC instead).
      ptrace: 'EPERM',
      bpf: 'EPERM',
      perf: 'EPERM',
      unshare: 'EPERM',
      clone_newuser: 'EPERM',
      mount: 'EPERM',
      io_uring: 'ENOSYS',
      setpgid: 'ok',
      // Only stdio and the main socket: the seccomp fd is gone.
      fds: '0,1,2,3,',
    });
  });

  test('a syscall the policy kills for ends the plugin with SIGSYS', async () => {
    const plan = planSandboxedLaunch(noConfig(), cProbe, ['kexec']);
    const r = await runPlan(plan);
    assert.ok(!r.stdout.includes('survived'), r.stdout);
    assert.equal(r.code, 128 + os.constants.signals.SIGSYS, `bwrap reports 128+SIGSYS; got ${r.code} ${r.signal} ${r.stderr}`);
  });

  test('a custom policy replaces the default', async () => {
    const policy = path.join(tmp, 'custom.policy');
    fs.writeFileSync(policy, 'default allow\nsetpgid errno EACCES\n');
    const plan = planSandboxedLaunch({ ...noConfig(), seccompPolicyFile: policy }, cProbe, ['report', '1', '/x']);
    const r = await runPlan(plan);
    assert.equal(r.code, 0, r.stderr);
    const kv = keyValues(r.stdout);
    assert.equal(kv.setpgid, 'EACCES');
    assert.notEqual(kv.bpf, 'EPERM', 'bpf is not denied by this policy');
    assert.equal(kv.clone_newuser, 'ENOSPC', 'bwrap --disable-userns still refuses new user namespaces');
  });

  test('writable and read-only --plugin-mount', async () => {
    const rw = path.join(tmp, 'rw');
    const ro = path.join(tmp, 'ro');
    fs.mkdirSync(rw);
    fs.mkdirSync(ro);
    const config: SandboxConfig = {
      mounts: [parseBindMount(`${rw}:/data/rw:true`), parseBindMount(`${ro}:/data/ro`)],
      gidMaps: [],
    };
    const w1 = await runPlan(planSandboxedLaunch(config, cProbe, ['write', '/data/rw/out']));
    assert.equal(keyValues(w1.stdout).write, 'ok', w1.stderr);
    assert.ok(fs.existsSync(path.join(rw, 'out')));
    const w2 = await runPlan(planSandboxedLaunch(config, cProbe, ['write', '/data/ro/out']));
    assert.equal(keyValues(w2.stdout).write, 'EROFS', w2.stderr);
    const w3 = await runPlan(planSandboxedLaunch(config, cProbe, ['write', '/data/new']));
    assert.equal(keyValues(w3.stdout).write, 'EROFS', w3.stderr);
  });

  test('--plugin-root: a static plugin in its own root', async (t) => {
    if (cProbeStatic === undefined) {
      t.skip('no static libc to build a static probe');
      return;
    }
    const root = path.join(tmp, 'static-root');
    for (const d of ['proc', 'dev', 'bin']) fs.mkdirSync(path.join(root, d), { recursive: true });
    fs.copyFileSync(cProbeStatic, path.join(root, 'bin', 'probe'));
    fs.chmodSync(path.join(root, 'bin', 'probe'), 0o755);
    const plan = planSandboxedLaunch({ pluginRoot: root, mounts: [], gidMaps: [] }, '/bin/probe', [
      'report',
      String(process.pid),
      '/etc/hostname',
    ]);
    const r = await runPlan(plan);
    assert.equal(r.code, 0, r.stderr);
    const kv = keyValues(r.stdout);
    assert.notEqual(kv.uid, '0');
    assertReported(kv, { hostfile: 'ENOENT', ptrace: 'EPERM', nofile: `${NOFILE}:${NOFILE}` });
  });

  test('several gid maps (root only)', { skip: isRoot ? false : 'needs root' }, async () => {
    const plan = planSandboxedLaunch({ mounts: [], gidMaps: [parseGidMap('100:100:10'), parseGidMap('2000:3000:1')] }, cProbe, [
      'report',
      String(process.pid),
      '/etc/hostname',
    ]);
    assert.ok(plan.args.includes('--userns'));
    assert.equal(plan.extraFds.length, 2);
    const r = await runPlan(plan);
    assert.equal(r.code, 0, r.stderr);
    const kv = keyValues(r.stdout);
    assert.equal(kv.uid, String(UNPRIVILEGED_ID));
    assert.equal(kv.gid_map, `${UNPRIVILEGED_ID} 0 1;100 100 10;2000 3000 1;`);
    assert.equal(kv.clone_newuser, 'EPERM', 'the policy refuses nested user namespaces');
    assert.equal(kv.ptrace, 'EPERM');
    assert.equal(kv.kill, 'ESRCH');
    // 5 is the user namespace fd itself: bwrap keeps --userns fds open (see README, limitations).
    assert.equal(kv.fds, '0,1,2,3,5,');
  });

  test('the jail dies with the host (--die-with-parent)', async () => {
    // A stand-in host: plans and spawns the jail, reports bwrap's pid once the plugin runs, then is SIGKILLed.
    const moduleUrl = new URL('../src/sandbox/bubblewrap.js', import.meta.url).href;
    const script = `
      import { planSandboxedLaunch } from ${JSON.stringify(moduleUrl)};
      import { spawn } from 'node:child_process';
      const plan = planSandboxedLaunch({ mounts: [], gidMaps: [] }, ${JSON.stringify(cProbe)}, ['sleep']);
      const c = spawn(plan.file, plan.args, { stdio: ['ignore', 'pipe', 'inherit', 'pipe', ...plan.extraFds] });
      plan.dispose();
      c.stdout.on('data', (d) => { if (String(d).includes('sleeping')) process.stdout.write('bwrap ' + c.pid + '\\n'); });
    `;
    const host = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const children = (pid: number): number[] => {
      const out: number[] = [];
      for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
        const text = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
        for (const c of text === '' ? [] : text.split(/\s+/).map(Number)) out.push(c, ...children(c));
      }
      return out;
    };
    const jail = await new Promise<number[]>((resolve, reject) => {
      let text = '';
      const timer = setTimeout(() => {
        host.kill('SIGKILL');
        reject(new Error('the stand-in host never reported'));
      }, 15_000);
      host.stdout.on('data', (d: Buffer) => {
        text += d.toString();
        const m = /bwrap (\d+)/.exec(text);
        if (m === null) return;
        clearTimeout(timer);
        const bwrapPid = Number(m[1]);
        resolve([bwrapPid, ...children(bwrapPid)]);
      });
    });
    assert.ok(jail.length >= 3, `bwrap, its init and the plugin: ${jail.join(' ')}`);
    const exited = new Promise((res) => host.on('exit', res));
    host.kill('SIGKILL');
    await exited;
    const alive = () =>
      jail.filter((p) => {
        try {
          return !/^\d+ \(.*\) [ZX] /.test(fs.readFileSync(`/proc/${p}/stat`, 'utf8'));
        } catch {
          return false;
        }
      });
    const deadline = Date.now() + 5000;
    while (alive().length > 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    assert.deepEqual(alive(), [], 'every jail process is gone');
  });
});
