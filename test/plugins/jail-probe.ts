#!/usr/bin/env node
/**
 * A protocol-speaking probe plugin for test/sandbox-e2e.test.ts. Run through
 * `plugvisor run` (sandboxed), it tries things the jail must refuse, prints
 * the outcome of each attempt as one JSON line on stdout, and then drives a
 * tiny guest to completion and exits 0 — so a refused attempt is an ordinary
 * error the plugin survives, not a crash.
 *
 *   jail-probe probe HOST_FILE ADDON READ_FILE WRITE_FILE HOST_PID
 *                                  (READ_FILE / WRITE_FILE: a file on a read-only / writable
 *                                  --plugin-mount; HOST_PID last, so a shell can append its $$)
 *   jail-probe kill ADDON          makes a syscall the default policy kills for (kexec_load)
 *   jail-probe policy ADDON        reports getpriority (Node's os.getPriority), kcmp, sethostname
 *
 * ADDON is a tiny Node-API module built by the test (raw `syscall(2)`), which
 * Node itself has no binding for; the test binds it into the jail with
 * --plugin-mount.
 */
import fs from 'node:fs';
import os from 'node:os';
import { createRequire } from 'node:module';
import { AddressSpace, Connection, GuestMemory, eventfdWrite } from '../../src/plugin/index.js';
import type { Attempt, JailKillReport, JailPolicyReport, JailProbeReport } from '../support/reports.js';
import { attempt, procPids, statusField } from '../support/jail-probes.js';
import { CODE, printReport, setUpRealMode } from '../support/test-plugin.js';

interface SyscallAddon {
  /** syscall(nr, ...args): the result, or -errno. */
  syscall(nr: number, ...args: number[]): number;
}

// x86_64 syscall numbers
const SYS = { mount: 165, sethostname: 170, kexec_load: 246, kcmp: 312, ptrace: 101 } as const;

const errnoNames = new Map<number, string>(Object.entries(os.constants.errno).map(([name, n]) => [n, name]));

function loadAddon(file: string): SyscallAddon {
  return createRequire(import.meta.url)(file) as SyscallAddon;
}

function rawSyscall(addon: SyscallAddon, nr: number, ...args: number[]): Attempt {
  const rc = addon.syscall(nr, ...args);
  return rc >= 0 ? 'ok' : (errnoNames.get(-rc) ?? `errno ${-rc}`);
}

// A real-mode guest at 0x1000: writes 0x2a to port 0x3f8, then 1 to 0x3f9 ("done").
// One instruction per line, beside its listing.
// prettier-ignore
const GUEST_CODE = new Uint8Array([
  0xba, 0xf8, 0x03, // mov dx, 0x3f8
  0xb0, 0x2a, //       mov al, 0x2a
  0xee, //             out dx, al
  0x42, //             inc dx
  0xb0, 0x01, //       mov al, 1
  0xee, //             out dx, al
  0xf4, //             hlt
]);
const DATA_PORT = 0x3f8n;
const DONE_PORT = 0x3f9n;

/** Starts the VM, runs the guest above to its "done" write, shuts the VM down and exits 0. */
function runGuest(): never {
  const conn = Connection.connect();
  const shutdownFd = conn.getShutdownEventfd();
  conn.reserveRange(AddressSpace.IOPORT, DATA_PORT, 2n);
  const memory = GuestMemory.create(0x1000, 'jail-probe-guest');
  memory.bytes.set(GUEST_CODE, 0);
  conn.createMemory(memory, { start: CODE, length: 0x1000n });
  const vcpu = conn.getVcpu(0);
  conn.start();
  let seen = -1;
  for (;;) {
    const event = vcpu.wait();
    if (event.kind === 'init') {
      setUpRealMode(vcpu);
    } else if (event.kind === 'io' && event.isWrite && event.address === DATA_PORT) {
      seen = event.data[0]!;
    } else if (event.kind === 'io' && event.isWrite && event.address === DONE_PORT) {
      fs.writeSync(1, `guest done: ${seen === 0x2a ? 'ok' : `bad value ${seen}`}\n`);
      eventfdWrite(shutdownFd, 1);
      process.exit(seen === 0x2a ? 0 : 1);
    } else {
      process.stderr.write(`jail-probe: unexpected VCPU event ${event.kind}\n`);
      process.exit(1);
    }
    vcpu.resume();
  }
}

const [mode, ...rest] = process.argv.slice(2);

switch (mode) {
  case 'probe': {
    const [hostFile, addonPath, readFile, writeFile, hostPidText] = rest as [string, string, string, string, string];
    const hostPid = Number(hostPidText);
    const addon = loadAddon(addonPath);
    let text: string | undefined;
    const result: JailProbeReport = {
      pid: process.pid,
      kvm: attempt(() => fs.closeSync(fs.openSync('/dev/kvm', 'r+'))),
      hostFile: attempt(() => fs.readFileSync(hostFile)),
      procPids: procPids(),
      hostPidInProc: fs.existsSync(`/proc/${hostPid}`),
      killHost: attempt(() => process.kill(hostPid, 0)),
      capEff: statusField('CapEff'),
      capPrm: statusField('CapPrm'),
      noNewPrivs: statusField('NoNewPrivs'),
      // needs CAP_SYS_NICE; the policy does not mention setpriority
      raisePriority: attempt(() => os.setPriority(0, -5)),
      sethostname: rawSyscall(addon, SYS.sethostname, 0, 0), // CAP_SYS_ADMIN; also denied by the policy
      mount: rawSyscall(addon, SYS.mount, 0, 0, 0, 0, 0),
      // allowed for a process comparing itself with itself, unless the policy refuses it
      kcmp: rawSyscall(addon, SYS.kcmp, process.pid, process.pid, 0 /* KCMP_FILE */, 1, 1),
      ptraceTraceme: rawSyscall(addon, SYS.ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0),
      readMounted: attempt(() => (text = fs.readFileSync(readFile, 'utf8'))),
      readMountedText: text, // read once the attempt above ran: members are evaluated in order
      writeReadOnlyMount: attempt(() => fs.writeFileSync(readFile + '.new', 'x')),
      writeWritableMount: attempt(() => fs.writeFileSync(writeFile, `written by pid ${process.pid}\n`)),
    };
    printReport(result);
    runGuest();
    break;
  }
  case 'kill': {
    const addon = loadAddon(rest[0]);
    printReport<JailKillReport>({ about: 'kexec_load' });
    const outcome = rawSyscall(addon, SYS.kexec_load, 0, 0, 0, 0);
    printReport<JailKillReport>({ survived: outcome }); // must not be reached
    runGuest();
    break;
  }
  case 'policy': {
    const addon = loadAddon(rest[0]);
    printReport<JailPolicyReport>({
      getPriority: attempt(() => os.getPriority(0)),
      kcmp: rawSyscall(addon, SYS.kcmp, process.pid, process.pid, 0, 1, 1),
      sethostname: rawSyscall(addon, SYS.sethostname, 0, 0), // checks CAP_SYS_ADMIN before its arguments
    });
    runGuest();
    break;
  }
  default:
    process.stderr.write(`jail-probe: unknown mode ${String(mode)}\n`);
    process.exit(2);
}
