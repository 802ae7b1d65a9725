/**
 * src/child.ts against real processes: Child, which starts the plugin and
 * sees its end through the pidfd on the event loop, and runToEnd, which runs
 * the sandbox's helpers to their end.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { C, native } from '../src/native/index.js';
import { Child, describeEnd, runToEnd, signalName, type ChildOptions, type ChildStatus } from '../src/child.js';
import { gone } from './support/run.js';

/** Runs `sh -c script` as a Child; resolves with the status onExit got, and the status the Child reports then. */
function runShell(script: string, options: Partial<ChildOptions> = {}): Promise<[ChildStatus, ChildStatus]> {
  return new Promise((resolve) => {
    const child: Child = Child.spawn(
      { file: 'sh', args: ['-c', script], env: process.env, fds: [], newSession: false, ...options },
      (status) => setImmediate(() => resolve([status, child.status])),
    );
    assert.deepEqual(child.status, { state: 'running' });
  });
}

test('Child: the exit code, the killing signal by name and number, also one node has no name for', async () => {
  assert.deepEqual(await runShell('exit 3'), [
    { state: 'exited', code: 3 },
    { state: 'exited', code: 3 },
  ]);
  const [term] = await runShell('kill -TERM $$');
  assert.deepEqual(term, { state: 'signaled', signal: 'SIGTERM', signalNumber: 15 });
  const realTime = C.SIGRTMIN + 2;
  const [rt] = await runShell(`kill -${realTime} $$`);
  assert.deepEqual(rt, { state: 'signaled', signal: `SIG${realTime}`, signalNumber: realTime });
  assert.equal(signalName(9), 'SIGKILL');
  assert.equal(signalName(0), undefined);
});

test('Child: descriptors and environment as asked; killWithGroup reaches what the child left in its group', async () => {
  const fdsBefore = readdirSync('/proc/self/fd').length;
  const [r, w] = native.pipe2(C.O_CLOEXEC);
  let grandchild = 0;
  // The child starts a grandchild in its own (new) session's group, says the
  // grandchild's pid on fd 3 and waits; killing the group ends both.
  const ended = new Promise<ChildStatus>((resolve) => {
    const child = Child.spawn(
      {
        file: 'sh',
        args: ['-c', 'sleep 60 & echo "$WHO $!" >&3; wait'],
        env: { WHO: 'grandchild', PATH: process.env.PATH },
        fds: ['inherit', 'inherit', 'inherit', w],
        newSession: true,
      },
      resolve,
    );
    native.close(w);
    const buf = new Uint8Array(64);
    const line = Buffer.from(buf.subarray(0, native.read(r, buf, 0, buf.length))).toString();
    const [who, pid] = line.trim().split(' ');
    assert.equal(who, 'grandchild');
    grandchild = Number(pid);
    child.killWithGroup();
  });
  assert.deepEqual(await ended, { state: 'signaled', signal: 'SIGKILL', signalNumber: 9 });
  assert.equal(await gone(grandchild, 5_000), true, 'the grandchild died with the group');
  native.close(r);
  assert.equal(readdirSync('/proc/self/fd').length, fdsBefore, 'the pidfd is closed once the child is reaped');
});

test('Child: a program that cannot be executed throws at once, with its errno', () => {
  assert.throws(
    () => Child.spawn({ file: '/nonexistent/plugin', args: [], env: {}, fds: [], newSession: true }, () => {}),
    (e: unknown) =>
      e instanceof Error && 'code' in e && e.code === 'ENOENT' && /cannot execute \/nonexistent\/plugin/.test(e.message),
  );
});

test('runToEnd: the exit status and both outputs, however large, with this process environment and no stdin', () => {
  const fdsBefore = readdirSync('/proc/self/fd').length;
  // 1 MiB to each of stdout and stderr, more than a pipe holds: a reader of
  // one pipe at a time would stall the program on the other.
  const script = 'head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2; echo "$PLUGVISOR_TEST_VAR" >&2; cat; exit 4';
  process.env.PLUGVISOR_TEST_VAR = 'from the parent';
  try {
    const run = runToEnd('sh', ['-c', script], 10_000);
    assert.deepEqual(run.status, { state: 'exited', code: 4 });
    assert.equal(run.timedOut, false);
    assert.equal(run.stdout.length, 1 << 20, 'stdout whole, and nothing from stdin');
    assert.equal(run.stderr.subarray(1 << 20).toString(), 'from the parent\n');
    assert.equal(describeEnd(run), 'exit status 4');
  } finally {
    delete process.env.PLUGVISOR_TEST_VAR;
  }
  assert.equal(readdirSync('/proc/self/fd').length, fdsBefore, 'no fd left open');
});

test('runToEnd: a program past its time is killed; too much output, or no program, throws', () => {
  const started = Date.now();
  const slow = runToEnd('sleep', ['30'], 200);
  assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started} ms`);
  assert.equal(slow.timedOut, true);
  assert.deepEqual(slow.status, { state: 'signaled', signal: 'SIGKILL', signalNumber: 9 });
  assert.equal(describeEnd(slow), 'timed out (killed)');
  assert.equal(describeEnd(runToEnd('sh', ['-c', 'kill -SEGV $$'], 10_000)), 'killed by SIGSEGV');
  assert.throws(
    () => runToEnd('head', ['-c', '2000', '/dev/zero'], 10_000, 1000),
    /wrote 2000 bytes to its stdout, more than 1000/,
  );
  assert.throws(
    () => runToEnd('/nonexistent/helper', [], 10_000),
    /cannot execute \/nonexistent\/helper: No such file or directory/,
  );
});
