/**
 * The host core end to end: real plugins (compiled test plugins and the
 * demo) driving real KVM VMs through the `plugvisor` CLI. The plugin runs
 * are repeated in the plugin jail and unsandboxed (SANDBOX_MODES in
 * ./support/run.ts); the CLI's own errors are checked once.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import path from 'node:path';
import { PACKAGE_ROOT } from '../src/package-root.js';
import { runPlugin, type RunOutcome } from '../src/host/run.js';
import { MAX_LINE_CHARS } from '../src/host/lines.js';
import { needsKvm } from './support/kvm.js';
import { MANY_VCPU_COUNTS, checkFileLimitFor } from './support/vcpus.js';
import type { WireErrorsReport } from './support/reports.js';
import {
  CLI,
  SANDBOX_MODES,
  examplePlugin,
  gone,
  modeName,
  processExists,
  reportOf,
  runCli,
  runPluginCli,
  testPlugin,
} from './support/run.js';

const E = constants.errno;

/** Why the hang test runs only unsandboxed. */
const HANG_SKIP =
  'checks host pids the plugin prints, but a jailed plugin sees only its own PID namespace ' +
  '(and has no `sleep` to spawn as the grandchild)';

/** A node process started with piped output, once its stdout (its plugin's) matched a pattern. */
interface Started {
  child: ChildProcessWithoutNullStreams;
  match: RegExpExecArray;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** All it wrote so far. */
  stdout(): string;
  stderr(): string;
}

/**
 * Runs node with `args` and waits (at most 10 s) until its stdout matches
 * `pattern`. With `readStderr: false` its stderr is left unread (stderr() stays empty).
 */
async function startNode(args: readonly string[], pattern: RegExp, options: { readStderr?: boolean } = {}): Promise<Started> {
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  if (options.readStderr ?? true) child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${String(pattern)} on stdout within 10 s; stderr: ${stderr}`)), 10_000);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = pattern.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
  });
  return { child, match, exited, stdout: () => stdout, stderr: () => stderr };
}

/** After a test: kills `pids` that survived it (they would hold the test's pipes open) and lets go of `child`. */
function cleanUp(child: ChildProcessWithoutNullStreams, pids: readonly number[]): void {
  for (const pid of pids) if (processExists(pid)) process.kill(pid, 'SIGKILL');
  child.stdout.destroy();
  child.stderr.destroy();
}

for (const sandboxed of SANDBOX_MODES) {
  const mode = modeName(sandboxed);

  describe(`the demo (adder) (${mode})`, needsKvm, () => {
    test("prints the guest's sum and exits 0", async () => {
      const result = await runPluginCli(examplePlugin('adder'), { sandboxed });
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, '9\nguest computed 2 + 7 = 9\n');
    });
  });

  describe(`wire errors of the main connection (${mode})`, needsKvm, () => {
    test("each refused request carries the spec's errno and its own member", async () => {
      const got = reportOf<WireErrorsReport>(await runPluginCli(testPlugin('wire-errors'), { sandboxed }));
      assert.deepEqual(got['unsealedMemfd'], { errno: E.EPERM, member: 'create' });
      assert.deepEqual(got['memoryPastEnd'], { errno: E.EINVAL, member: 'create' });
      assert.deepEqual(got['memoryWithoutFd'], { errno: E.EBADF, member: 'create' });
      assert.deepEqual(got['overlappingReservation'], { errno: E.EPERM, member: 'reserveRange' });
      assert.deepEqual(got['unreserveNothing'], { errno: E.ENOENT, member: 'reserveRange' });
      assert.deepEqual(got['destroyUnknown'], { errno: E.ENOENT, member: 'destroy' });
      assert.deepEqual(got['firstCreate'], { errno: 0, member: 'create' });
      assert.deepEqual(got['duplicateId'], { errno: E.EEXIST, member: 'create' });
      assert.deepEqual(got['unknownRequest'], { errno: E.ENOTTY, member: null });
      assert.deepEqual(got['firstStart'], { errno: 0, member: 'start' });
      assert.deepEqual(got['secondStart'], { errno: E.EINVAL, member: 'start' });
      assert.deepEqual(got['requestBeforeInit'], { errno: E.EPROTO, member: null });
      assert.deepEqual(got['initAfterRefusal'], { errno: 0, member: 'init' });
    });
  });

  describe(`a plugin that fails (${mode})`, needsKvm, () => {
    test('exiting non-zero makes plugvisor exit with its code and say so', async () => {
      const result = await runPluginCli(testPlugin('exit-status'), { args: ['exit', '3'], sandboxed });
      assert.equal(result.code, 3);
      assert.match(result.stderr, /plugin exited with code 3/);
    });

    test('dying by a signal makes plugvisor exit 128+N naming the signal', async () => {
      const result = await runPluginCli(testPlugin('exit-status'), { args: ['signal'], sandboxed });
      assert.equal(result.code, 128 + constants.signals.SIGKILL);
      assert.match(result.stderr, /killed by signal SIGKILL/);
    });

    test('hanging without starting the VM times out, and nothing is left running', { skip: sandboxed && HANG_SKIP }, async () => {
      const result = await runPluginCli(testPlugin('exit-status'), {
        args: ['hang'],
        flags: ['--start-timeout', '1'],
        timeoutMs: 15_000,
      });
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /did not start the VM within 1 s/);
      assert.ok(result.ms < 10_000, `took ${result.ms} ms`);
      const pids = /pids (\d+) (\d+)/.exec(result.stdout);
      assert.ok(pids, `no pids in ${JSON.stringify(result.stdout)}`);
      // Killed processes are reaped by their parent (or by init, for the
      // grandchild) shortly after: allow a moment before calling one a survivor.
      for (const pid of [Number(pids[1]), Number(pids[2])]) assert.equal(await gone(pid, 2_000), true, `process ${pid} survived`);
    });
  });

  describe(`a host short of file descriptors (${mode})`, needsKvm, () => {
    test('running out at any step of setting up is a one-line error, never a crash or a hang', { timeout: 180_000 }, async () => {
      // Start at the lowest limit under which node itself gets going, then
      // raise it one at a time until a run succeeds: each limit runs out at a
      // later step (the VM, the VCPU pipes and threads, the jail's preparation,
      // the plugin's socket, the spawn, the plugin itself).
      let limit = 16;
      while ((await runCli(['--version'], { fdLimit: limit })).code !== 0) {
        limit++;
        assert.ok(limit < 64, 'the CLI does not start even with 64 open files');
      }
      const failures: string[] = [];
      for (; ; limit++) {
        assert.ok(limit < 160, `no run succeeded; failures: ${failures.join(' / ')}`);
        const result = await runPluginCli(testPlugin('multi-vcpu'), { sandboxed, fdLimit: limit });
        if (result.code === 0) break;
        assert.equal(result.signal, null, `limit ${limit}: the host was killed by ${result.signal}`);
        const hostLines = result.stderr.split('\n').filter((line) => line !== '' && !line.startsWith('[plugin] '));
        assert.ok(hostLines.length > 0, `limit ${limit}: exit ${result.code} without a word`);
        for (const line of hostLines)
          assert.match(line, /^plugvisor: /, `limit ${limit}: not a message of the host's:\n${result.stderr}`);
        failures.push(hostLines.join(' / '));
      }
      assert.ok(
        failures.some((line) => /Too many open files|EMFILE/.test(line)),
        `no run failed for want of fds: ${failures.join(' / ')}`,
      );
    });
  });

  describe(`VCPUs (${mode})`, needsKvm, () => {
    test('64 VCPUs with too few open files: a one-line error that names the limit', async () => {
      // 64 VCPUs take more than 200 descriptors on the host alone (pipes and VCPU fds).
      const result = await runPluginCli(testPlugin('multi-vcpu'), { cpus: 64, sandboxed, fdLimit: 200, timeoutMs: 120_000 });
      assert.equal(result.code, 1, result.stderr);
      assert.equal(result.stdout, '');
      assert.match(
        result.stderr,
        /^plugvisor: error: .*Too many open files \(plugvisor may have 200 open files at once, too few for this VM: raise the limit with `ulimit -n`\)\n$/,
      );
    });

    for (const cpus of [1, 2, 4, 16, ...MANY_VCPU_COUNTS]) {
      test(`${cpus} VCPU(s) each run the guest to completion`, { timeout: 300_000 }, async () => {
        checkFileLimitFor(cpus);
        const result = await runPluginCli(testPlugin('multi-vcpu'), { cpus, sandboxed, timeoutMs: 240_000 });
        assert.equal(result.code, 0, result.stderr);
        const expected = Array.from({ length: cpus }, (_, id) => `vcpu ${id}: ${100 + id}\n`).join('');
        assert.equal(result.stdout, expected);
      });
    }
  });

  describe(`the end of a VM (${mode})`, needsKvm, () => {
    // The lifecycle plugin's two ways to end VCPU 0, and what the host logs for each.
    for (const { how, what, logged } of [
      { how: 'triple-fault', what: 'a guest that triple-faults', logged: /vcpu 0: the guest shut down/ },
      { how: 'vcpu-shutdown', what: 'a `shutdown` request', logged: /vcpu 0: shut down on request/ },
    ]) {
      test(`${what} ends that VCPU, and the host signals the shutdown eventfd`, async () => {
        const result = await runPluginCli(testPlugin('lifecycle'), {
          args: [how],
          flags: ['--verbose'],
          sandboxed,
          assemblesGuest: true,
        });
        assert.equal(result.code, 0, result.stderr);
        assert.equal(result.stdout, `first event: init\nsecond wait: errno ${E.EPROTO}\nshutdown eventfd signalled\n`);
        assert.match(result.stderr, logged);
      });
    }
  });
}

// Unsandboxed only: the test checks host pids the plugin prints (see HANG_SKIP).
describe('a host told to stop', needsKvm, () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    test(`${signal} ends the run with exit 1, and nothing is left running`, async () => {
      // The plugin hangs (never starts the VM) once it has printed its pids.
      const run = await startNode(
        [CLI, 'run', '--disable-sandbox', '--plugin', testPlugin('exit-status'), '--', 'hang'],
        /pids (\d+) (\d+)/,
      );
      const pids = [Number(run.match[1]), Number(run.match[2])];
      try {
        const sent = Date.now();
        run.child.kill(signal);
        assert.deepEqual(await run.exited, { code: 1, signal: null });
        assert.match(run.stderr(), /plugvisor: error: interrupted/);
        // The plugin ignores the shutdown eventfd: it is killed after the 1 s grace.
        assert.ok(Date.now() - sent < 5_000, `took ${Date.now() - sent} ms to stop`);
        for (const pid of pids) assert.equal(await gone(pid, 2_000), true, `process ${pid} survived`);
      } finally {
        cleanUp(run.child, pids);
      }
    });
  }
});

describe('a host whose stderr is closed', needsKvm, () => {
  test('ends the run (as on SIGPIPE) instead of dying and leaving its plugin running', async () => {
    // As `plugvisor run ... 2>&1 | head`: the reader of the host's stderr
    // goes away while the plugin keeps writing lines there.
    const run = await startNode(
      [CLI, 'run', '--disable-sandbox', '--plugin', testPlugin('exit-status'), '--', 'chatter'],
      /pid (\d+)/,
    );
    const pid = Number(run.match[1]);
    try {
      run.child.stderr.destroy();
      const sent = Date.now();
      assert.deepEqual(await run.exited, { code: 1, signal: null });
      assert.ok(Date.now() - sent < 5_000, `took ${Date.now() - sent} ms to stop`);
      // The usual shutdown, not a crash: the plugin was asked to exit first.
      assert.match(run.stdout(), /shutdown eventfd signalled/);
      assert.equal(await gone(pid, 2_000), true, `the plugin (${pid}) survived`);
    } finally {
      cleanUp(run.child, [pid]);
    }
  });
});

describe('a host whose stderr is not read', needsKvm, () => {
  test("stops reading the plugin's stderr, so the plugin blocks and the host stays small; then everything arrives", async () => {
    const floodMiB = 32;
    const run = await startNode(
      [CLI, 'run', '--disable-sandbox', '--plugin', testPlugin('exit-status'), '--', 'flood', String(floodMiB)],
      /flooding/,
      { readStderr: false },
    );
    try {
      // Nobody reads the host's stderr for a while (its 'data' is not listened to yet).
      await new Promise((r) => setTimeout(r, 2_000));
      const progressKiB = Number(/.*wrote (\d+) KiB/s.exec(run.stdout())?.[1] ?? 0);
      const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${run.child.pid}/status`, 'utf8'))?.[1]);
      // Without backpressure the plugin wrote all 32 MiB into the host's memory at once.
      assert.ok(progressKiB < 8 * 1024, `the plugin wrote ${progressKiB} KiB while the host's stderr was not read`);
      assert.ok(rssKiB < 256 * 1024, `the host grew to ${rssKiB} KiB`);
      let pluginBytes = 0;
      let partial = '';
      run.child.stderr.on('data', (d: Buffer) => {
        const text = partial + d.toString();
        const lines = text.split('\n');
        partial = lines.pop()!;
        for (const line of lines) if (line.startsWith('[plugin] ')) pluginBytes += line.length - '[plugin] '.length + 1;
      });
      assert.deepEqual(await run.exited, { code: 0, signal: null });
      assert.match(run.stdout(), /flood done/);
      assert.equal(pluginBytes, floodMiB * 1024 * 1024, "every byte the plugin wrote reached the host's stderr");
    } finally {
      cleanUp(run.child, []);
    }
  });
});

describe('the library (runPlugin)', needsKvm, () => {
  test('a plugin that writes to stderr without newlines reaches the log in lines of bounded length', async () => {
    // Before, the host held such a "line" whole until its newline: a plugin
    // writing ~512 MiB without one made the host throw and die.
    const length = 3 * MAX_LINE_CHARS + 5;
    const lines: string[] = [];
    const outcome = await runPlugin({
      plugin: testPlugin('exit-status'),
      args: ['stderr', String(length)],
      sandbox: false,
      pluginStderr: (line) => lines.push(line),
      log: () => {},
    });
    assert.equal(outcome.ok, true, outcome.message);
    assert.deepEqual(
      lines.map((line) => line.length),
      [MAX_LINE_CHARS, MAX_LINE_CHARS, MAX_LINE_CHARS, 5, 3],
    );
    assert.equal(lines.join(''), `${'x'.repeat(length)}end`);
  });

  test('an application that dies of an uncaught exception takes its unsandboxed plugin with it', async () => {
    const app = `
      import { runPlugin } from ${JSON.stringify(new URL('../src/host/run.js', import.meta.url).href)};
      process.stdin.once('data', () => { throw new Error('the application failed'); });
      void runPlugin({ plugin: ${JSON.stringify(testPlugin('exit-status'))}, args: ['chatter'], sandbox: false, pluginStderr: () => {}, log: () => {} });
    `;
    const run = await startNode(['--input-type=module', '-e', app], /pid (\d+)/);
    const pid = Number(run.match[1]);
    try {
      run.child.stdin.write('fail\n');
      assert.equal((await run.exited).code, 1);
      assert.match(run.stderr(), /the application failed/);
      assert.equal(await gone(pid, 2_000), true, `the plugin (${pid}) survived`);
    } finally {
      cleanUp(run.child, [pid]);
    }
  });
});

describe('VCPU threads the plugin leaves behind (runPlugin)', needsKvm, () => {
  const tasks = (): number => readdirSync('/proc/self/task').length;
  const fds = (): number => readdirSync('/proc/self/fd').length;

  for (const sandboxed of SANDBOX_MODES) {
    for (const mode of ['spin', 'paused', 'never-resume', 'full-pipe']) {
      test(`${mode} (${modeName(sandboxed)}): the run ends in bounded time with the plugin's status, leaving no thread or fd`, async () => {
        const run = (): Promise<RunOutcome> =>
          runPlugin({
            plugin: testPlugin('vcpu-ends'),
            args: [mode],
            cpus: 4,
            sandbox: sandboxed ? { mounts: [], gidMaps: [] } : false,
            pluginStderr: () => {},
            log: () => {},
          });
        await run(); // the first run makes what node keeps for later (its thread pool, for one)
        const before = { tasks: tasks(), fds: fds() };
        const started = Date.now();
        const outcome = await run();
        const took = Date.now() - started;
        assert.equal(outcome.exitCode, 3, outcome.message);
        assert.ok(took < 10_000, `the run took ${took} ms`);
        assert.deepEqual({ tasks: tasks(), fds: fds() }, before, 'threads and fds after the run, against before it');
      });
    }
  }
});

describe('the CLI', () => {
  // What `run --help` documents: test/crosvm-cli.test.ts, every option.

  test('--version prints the package version', async () => {
    const result = await runCli(['--version']);
    assert.equal(result.code, 0);
    const pkg = JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(result.stdout, `${pkg.version}\n`);
  });

  test('a missing plugin is a clear error', async () => {
    const result = await runCli(['run', '--plugin', '/nonexistent/plugin', '--disable-sandbox']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /plugin not found: \/nonexistent\/plugin/);
  });

  test('a plugin that is not executable is a clear error', async () => {
    const result = await runCli(['run', '--plugin', new URL(import.meta.url).pathname, '--disable-sandbox']);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /plugin is not executable: .*chmod \+x/);
  });

  test('a plugin the system cannot execute is a clear error, leaving no fd behind', needsKvm, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'plugvisor-exec-'));
    try {
      const plugin = path.join(dir, 'plugin');
      writeFileSync(plugin, '#!/nonexistent/interpreter\n', { mode: 0o755 });
      const result = await runCli(['run', '--plugin', plugin, '--disable-sandbox']);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /could not start the plugin: cannot execute .*plugin: No such file or directory/);

      const fds = (): number => readdirSync('/proc/self/fd').length;
      const before = fds();
      const run = (): Promise<RunOutcome> => runPlugin({ plugin, sandbox: false, pluginStderr: () => {}, log: () => {} });
      await assert.rejects(run(), /could not start the plugin: cannot execute/);
      assert.equal(fds(), before, 'fds after the failed start, against before it');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const sandboxed of SANDBOX_MODES) {
    test(
      `a run that logs nothing loads neither node's child_process nor its net and stream (${modeName(sandboxed)})`,
      needsKvm,
      async () => {
        // Each was ~2 ms of the CLI's start-up (bench/README.md, start-up
        // profile): the plugin and the sandbox's helpers are started through
        // the addon, and process.stdout and process.stderr are only made when
        // written to.
        const dir = mkdtempSync(path.join(tmpdir(), 'plugvisor-modules-'));
        try {
          const probe = path.join(dir, 'probe.cjs');
          const list = path.join(dir, 'modules.txt');
          // NODE_OPTIONS reaches the (node) plugin too: only the host, which has no CROSVM_SOCKET, writes the list.
          writeFileSync(
            probe,
            `if (process.env.CROSVM_SOCKET === undefined) process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(list)}, process.moduleLoadList.join('\\n')));`,
          );
          const env = { ...process.env, NODE_OPTIONS: `--require ${probe}` };
          const mode = sandboxed ? ['--plugin-mount', `${dir}:${dir}:false`] : ['--disable-sandbox'];
          const result = await runCli(['run', ...mode, '--plugin', examplePlugin('adder')], { env });
          assert.equal(result.code, 0, result.stderr);
          assert.match(result.stdout, /guest computed 2 \+ 7 = 9/);
          const loaded = readFileSync(list, 'utf8').split('\n');
          assert.ok(loaded.includes('NativeModule fs'), 'the probe saw the modules node loaded');
          for (const module of ['child_process', 'net', 'stream']) {
            assert.equal(loaded.includes(`NativeModule ${module}`), false, `node:${module} was loaded`);
          }
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      },
    );
  }

  test('bad --cpus is refused', async () => {
    const result = await runCli(['run', '--plugin', testPlugin('multi-vcpu'), '--cpus', 'zero']);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /--cpus must be a whole number from 1 to 64/);
  });

  test('run without --plugin is refused', async () => {
    const result = await runCli(['run']);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /--plugin/);
  });
});
