#!/usr/bin/env node
/**
 * A probe "plugin" for test/sandbox.test.ts: run inside the jail, it looks at
 * its surroundings and prints one JSON line on stdout. It speaks no protocol.
 *
 * usage: sandbox-probe HOST_PID HOST_FILE...
 */
import fs from 'node:fs';
import os from 'node:os';
// The probe imports nothing of plugvisor but the addon it tries below (../support/jail-probes.js uses only Node's modules).
import { attempt, procPids, statusField } from '../support/jail-probes.js';
import type { SandboxProbeReport } from '../support/reports.js';

const hostPid = Number(process.argv[2]);
const hostFiles = process.argv.slice(3);

let addon = 'not tried';
try {
  // The SDK's native addon, from the bound plugvisor tree.
  const native = await import('../../src/native/index.js');
  addon = typeof native === 'object' && native !== null ? 'ok' : 'odd';
} catch (e) {
  addon = `error: ${(e as Error).message}`;
}

const limits = fs
  .readFileSync('/proc/self/limits', 'utf8')
  .split('\n')
  .find((l) => l.startsWith('Max open files'));
const fd3 = (() => {
  try {
    const st = fs.fstatSync(3);
    return st.isSocket() ? 'socket' : 'other';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? 'error';
  }
})();

const report: SandboxProbeReport = {
  uid: process.getuid!(),
  gid: process.getgid!(),
  euid: process.geteuid!(),
  pid: process.pid,
  capEff: statusField('CapEff'),
  capPrm: statusField('CapPrm'),
  capBnd: statusField('CapBnd'),
  noNewPrivs: statusField('NoNewPrivs'),
  seccomp: statusField('Seccomp'),
  dev: fs.readdirSync('/dev').sort(),
  kvm: attempt(() => fs.openSync('/dev/kvm', 'r+')),
  hostFiles: Object.fromEntries(hostFiles.map((f) => [f, attempt(() => fs.readFileSync(f))])),
  procPids: procPids(),
  killHost: attempt(() => process.kill(hostPid, 0)),
  nofile: limits?.trim().split(/\s+/).slice(3, 5),
  fd3,
  writeRoot: attempt(() => fs.writeFileSync('/probe-was-here', 'x')),
  writeDev: attempt(() => fs.writeFileSync('/dev/probe-was-here', 'x')),
  devNull: attempt(() => fs.writeFileSync('/dev/null', 'x')),
  urandom: attempt(() => fs.readSync(fs.openSync('/dev/urandom', 'r'), Buffer.alloc(8))),
  hostname: os.hostname(),
  netInterfaces: Object.keys(os.networkInterfaces()).sort(),
  uidMap: fs.readFileSync('/proc/self/uid_map', 'utf8').trim().split(/\s+/).map(Number),
  addon,
  env: process.env.CROSVM_SOCKET,
};
process.stdout.write(JSON.stringify(report) + '\n');
