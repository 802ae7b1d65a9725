/**
 * The native VCPU threads (native/vcpu/) on their own, without node in the
 * way: native/test/vcpu_test.c drives real VMs through them as a plugin would
 * (hostile requests, pauses, shutdowns while blocked in KVM_RUN or in a pipe
 * write, 64 VCPUs, configurations published while running), built with
 * AddressSanitizer and UndefinedBehaviorSanitizer, which fail it on any
 * memory error, leak or undefined behaviour; then the libFuzzer target for
 * the VCPU request decoder and dispatcher runs for a bounded time
 * (PLUGVISOR_FUZZ_SECONDS, default 15; `npm run fuzz:vcpu` runs it longer).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { PACKAGE_ROOT } from '../src/package-root.js';
import { needsKvm } from './support/kvm.js';

const FUZZ_SECONDS = Number(process.env['PLUGVISOR_FUZZ_SECONDS'] ?? 15);

function make(target: string, extra: string[] = []): { code: number | null; output: string } {
  const r = spawnSync('make', ['-s', '-C', 'native/test', target, ...extra], {
    cwd: PACKAGE_ROOT,
    encoding: 'utf8',
    timeout: 600_000,
  });
  return { code: r.status, output: `${r.stdout}${r.stderr}` };
}

test('clang with the sanitizers and libFuzzer is installed (scripts/setup.sh installs it)', () => {
  const r = spawnSync('clang', ['--version'], { encoding: 'utf8' });
  assert.equal(r.status, 0, 'clang is missing: run ./scripts/setup.sh (Debian package clang)');
});

test('the VCPU threads pass their tests under ASan and UBSan', { ...needsKvm, timeout: 300_000 }, () => {
  const r = make('check');
  assert.equal(r.code, 0, r.output);
  const passed = r.output.split('\n').filter((line) => line.startsWith('ok '));
  assert.ok(passed.length >= 9, `expected every native test to report ok:\n${r.output}`);
});

test(`the VCPU request decoder and dispatcher survive ${FUZZ_SECONDS} s of libFuzzer`, { ...needsKvm, timeout: 600_000 }, () => {
  const r = make('fuzz', [`FUZZ_SECONDS=${FUZZ_SECONDS}`]);
  assert.equal(r.code, 0, r.output.slice(-8000));
  const runs = /Done (\d+) runs/.exec(r.output);
  assert.ok(runs && Number(runs[1]) > 1000, `the fuzzer ran too few inputs to mean anything:\n${r.output.slice(-4000)}`);
});
