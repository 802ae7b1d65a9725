/**
 * crosvm's plugin-mode command line on plugvisor: every option crosvm had
 * for plugins works under its crosvm spelling (and plugvisor's), a shell
 * script written for crosvm runs with the program's name changed, list files
 * parse as crosvm parsed them, and options that do nothing in the chosen mode
 * say so. Tap options are in net.test.ts, --seccomp-log-failures in
 * sandbox-e2e.test.ts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEFAULT_SECCOMP_POLICY_PATH } from '../src/sandbox/seccomp.js';
import { needsKvm } from './support/kvm.js';
import type { CrosvmOptionsReport } from './support/reports.js';
import { CLI, describeRun, reportOf, runCli, runCommand, testPlugin } from './support/run.js';

const PLUGIN = testPlugin('crosvm-options');
const isRoot = process.geteuid?.() === 0;

let tmp = '';
let mountFile = '';
let policyDir = '';

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'plugvisor-crosvm-cli-'));
  const data = path.join(tmp, 'data');
  fs.mkdirSync(data);
  fs.writeFileSync(path.join(data, 'hello.txt'), 'bound by a mount file\n');
  mountFile = path.join(tmp, 'mounts');
  // crosvm's format: one --plugin-mount value a line, '#' comments, blank lines.
  fs.writeFileSync(
    mountFile,
    `# what the plugin sees\n\n  ${data}:/crosvm-test   # its data\n${tmp}  # crosvm's short form: DST = SRC\n`,
  );
  policyDir = path.join(tmp, 'policy');
  fs.mkdirSync(policyDir);
  // The default policy, and one more rule whose effect the plugin reports.
  fs.writeFileSync(
    path.join(policyDir, 'plugin.policy'),
    `${fs.readFileSync(DEFAULT_SECCOMP_POLICY_PATH, 'utf8')}\nstatfs errno EXDEV\n`,
  );
});

after(() => {
  if (tmp !== '') fs.rmSync(tmp, { recursive: true, force: true });
});

describe('a shell script written for crosvm', needsKvm, () => {
  test('runs unchanged with crosvm replaced by plugvisor (-c, -p, --plugin-mount-file, --seccomp-policy-dir)', async () => {
    const bin = path.join(tmp, 'bin');
    fs.mkdirSync(bin, { recursive: true });
    fs.symlinkSync(CLI, path.join(bin, 'plugvisor')); // what `npm install plugvisor` puts on PATH
    const crosvmScript = [
      '#!/bin/sh',
      '# Starts our device model, jailed, with two VCPUs.',
      'set -e',
      'crosvm run --plugin "$1" -c 2 -p x --plugin-mount-file "$2" --seccomp-policy-dir "$3"',
      '',
    ].join('\n');
    const script = path.join(tmp, 'start.sh');
    fs.writeFileSync(script, crosvmScript.replace(/\bcrosvm run\b/, 'plugvisor run'), { mode: 0o755 });
    const r = await runCommand(script, [PLUGIN, mountFile, policyDir], {
      env: { ...process.env, PATH: `${bin}:${process.env['PATH'] ?? ''}` },
      timeoutMs: 60_000,
    });
    const got = reportOf<CrosvmOptionsReport>(r);
    assert.deepEqual(got.args, ['x']);
    assert.equal(got.vcpus, 2);
    assert.equal(got.file, 'bound by a mount file\n');
    assert.equal(got.statfs, 'EXDEV', 'the policy came from DIR/plugin.policy');
    assert.equal(r.stderr, '', describeRun(r));
  });
});

describe("crosvm's plugin options", needsKvm, () => {
  test('-p arguments come first, then those after --; -c is --cpus', async () => {
    const got = reportOf<CrosvmOptionsReport>(
      await runCli(['run', '--disable-sandbox', '--plugin', PLUGIN, '-c', '3', '-p', 'a', '--params', 'b c', '--', 'd']),
    );
    assert.deepEqual(got.args, ['a', 'b c', 'd']);
    assert.equal(got.vcpus, 3);
  });

  test('--plugin-gid-map-file maps what the file lists (root only)', { skip: isRoot ? false : 'needs root' }, async () => {
    const file = path.join(tmp, 'gids');
    fs.writeFileSync(file, "# groups for the plugin\n100:100:10\n2000  # crosvm's short form: 2000:2000:1\n");
    const got = reportOf<CrosvmOptionsReport>(await runCli(['run', '--plugin', PLUGIN, '--plugin-gid-map-file', file]));
    assert.deepEqual(got.gidMap, ['65534 0 1', '100 100 10', '2000 2000 1']);
  });
});

describe('list files and policy directories: clear errors', () => {
  for (const [option, entry, message] of [
    [
      '--plugin-mount-file',
      'relative/path',
      /--plugin-mount-file \S+:3: bad --plugin-mount 'relative\/path': the source 'relative\/path' must be an absolute path/,
    ],
    [
      '--plugin-gid-map-file',
      '1:x:1',
      /--plugin-gid-map-file \S+:3: bad --plugin-gid-map '1:x:1': OUTER 'x' is not a non-negative integer/,
    ],
  ] as const) {
    test(`${option}: a bad entry is named by file and line`, async () => {
      const file = path.join(tmp, `bad${option}`);
      fs.writeFileSync(file, `# line 1\n\n${entry}\n`);
      const r = await runCli(['run', '--plugin', PLUGIN, option, file]);
      assert.notEqual(r.code, 0, describeRun(r));
      assert.match(r.stderr, message, describeRun(r));
    });
  }

  test('a list file that cannot be read', async () => {
    const r = await runCli(['run', '--plugin', PLUGIN, '--plugin-mount-file', path.join(tmp, 'missing')]);
    assert.notEqual(r.code, 0, describeRun(r));
    assert.match(r.stderr, /--plugin-mount-file \S+missing: cannot read it \(ENOENT\)/, describeRun(r));
  });

  test('--seccomp-policy-dir without a plugin.policy', async () => {
    const r = await runCli(['run', '--plugin', PLUGIN, '--seccomp-policy-dir', tmp]);
    assert.equal(r.code, 1, describeRun(r));
    assert.match(r.stderr, /^plugvisor: error: --seccomp-policy-dir \S+ has no plugin\.policy/, describeRun(r));
  });

  test("a minijail policy (crosvm's format) is named as such", async () => {
    const dir = path.join(tmp, 'minijail');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'plugin.policy'), '# crosvm plugin policy\nread: 1\nwrite: 1\n');
    const r = await runCli(['run', '--plugin', PLUGIN, '--seccomp-policy-dir', dir]);
    assert.equal(r.code, 1, describeRun(r));
    assert.match(r.stderr, /plugin\.policy:2: 'read:' is minijail's policy syntax/, describeRun(r));
  });

  test('--seccomp-policy and --seccomp-policy-dir together', async () => {
    const r = await runCli([
      'run',
      '--plugin',
      PLUGIN,
      '--seccomp-policy',
      DEFAULT_SECCOMP_POLICY_PATH,
      '--seccomp-policy-dir',
      policyDir,
    ]);
    assert.equal(r.code, 1, describeRun(r));
    assert.match(r.stderr, /--seccomp-policy and --seccomp-policy-dir both name the policy/, describeRun(r));
  });
});

describe('options that do nothing in the chosen mode', needsKvm, () => {
  test('jail options with --disable-sandbox each print a warning, and the run goes on', async () => {
    const gidFile = path.join(tmp, 'gids-unused');
    fs.writeFileSync(gidFile, '100:100:1\n');
    const flags = [
      ['--plugin-root', tmp],
      ['--plugin-mount', `${tmp}:/x`],
      ['--plugin-mount-file', mountFile],
      ['--plugin-gid-map', '100:100:1'],
      ['--plugin-gid-map-file', gidFile],
      ['--seccomp-policy', DEFAULT_SECCOMP_POLICY_PATH],
      ['--seccomp-log-failures'],
    ];
    const r = await runCli(['run', '--disable-sandbox', '--plugin', PLUGIN, ...flags.flat()]);
    assert.equal(reportOf<CrosvmOptionsReport>(r).file, 'ENOENT', 'nothing was bound');
    for (const [option] of flags) {
      assert.match(
        r.stderr,
        new RegExp(`^plugvisor: warning: ${option} has no effect with --disable-sandbox: the plugin runs outside the jail$`, 'm'),
        describeRun(r),
      );
    }
    const dirRun = await runCli(['run', '--disable-sandbox', '--plugin', PLUGIN, '--seccomp-policy-dir', policyDir]);
    assert.equal(reportOf<CrosvmOptionsReport>(dirRun).statfs, 'ok');
    assert.match(dirRun.stderr, /warning: --seccomp-policy-dir has no effect with --disable-sandbox/);
  });
});

describe('--help', () => {
  test('documents every option, with their crosvm short forms', () => {
    const help = spawnSync(process.execPath, [CLI, 'run', '--help'], { encoding: 'utf8' });
    assert.equal(help.status, 0);
    for (const option of [
      '--plugin',
      '-c, --cpus',
      '-p, --params',
      '--disable-sandbox',
      '--plugin-root',
      '--plugin-mount ',
      '--plugin-mount-file',
      '--plugin-gid-map ',
      '--plugin-gid-map-file',
      '--seccomp-policy ',
      '--seccomp-policy-dir',
      '--seccomp-log-failures',
      '--host-ip',
      '--host_ip',
      '--netmask',
      '--mac',
      '--tap-name',
      '--tap-fd',
      '--start-timeout',
      '-v, --verbose',
    ]) {
      assert.ok(help.stdout.includes(option), `--help lacks ${option}`);
    }
  });
});
