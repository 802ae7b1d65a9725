#!/usr/bin/env node
/**
 * Test plugin (3 VCPUs): pause_vcpus. VCPUs 0 and 2 spin with no exit at
 * all until their rax changes, counting in memory; VCPU 1 counts too and
 * reports progress on an async-write port. The plugin pauses mask 0b101
 * with a user value from a second connection, checks that 0 and 2 stopped
 * (their counters freeze) while 1 goes on, sets rax on each paused VCPU and
 * resumes: the guests leave their loops and report rax. Then it reads VCPU
 * 1's notifications up to its current count: none may be `paused`.
 * Prints one JSON line.
 */
import { RegsView } from '../../src/plugin/index.js';
import { assemble } from '../support/asm.js';
import type { VcpuPauseReport } from '../support/reports.js';
import {
  SCRATCH,
  connectWithProgram,
  describeEvent,
  expectReport,
  finish,
  littleEndian,
  pluginMain,
  startRealMode,
  waitUntil,
} from '../support/test-plugin.js';

const REPORT = 0x520n;
const PROGRESS = 0x521n;
const USER = 0xfeed_0000_0000_beefn;
const MASK = 0b101n;

// VCPUs 0 and 2: count at [si] while rax == 0, then report rax.
const SPINNER = `
.l:
  inc dword [si]
  cmp eax, 0
  je .l
  mov dx, ${REPORT}
  out dx, eax
  hlt
`;

// VCPU 1 (at 0x2000): count at [si] forever; every 2^16 rounds, an async write of the count.
const COUNTER = `
bits 16
org 0x2000
  xor ecx, ecx
.l:
  inc dword [si]
  inc ecx
  test ecx, 0xffff
  jnz .l
  mov dx, ${PROGRESS}
  mov eax, ecx
  out dx, eax
  jmp .l
`;

pluginMain(() => {
  const { conn, memory } = connectWithProgram({ body: SPINNER }, [REPORT, { start: PROGRESS, asyncWrite: true }]);
  const other = conn.newConnection();
  memory.bytes.set(assemble(COUNTER), 0x2000);
  const counters = new Uint32Array(memory.bytes.buffer, memory.bytes.byteOffset + SCRATCH, 3);
  const vcpus = conn.getVcpus();
  if (vcpus.length !== 3) throw new Error('needs --cpus 3');
  conn.start();
  for (const vcpu of vcpus) {
    startRealMode(vcpu, {
      registers: { rax: 0n, rsi: BigInt(SCRATCH + 4 * vcpu.id), ...(vcpu.id === 1 ? { rip: 0x2000n } : {}) },
    });
  }
  waitUntil('every VCPU to run', () => counters[0] > 0 && counters[1] > 0 && counters[2] > 0);

  other.pauseVcpus(MASK, USER);
  const paused = [vcpus[0], vcpus[2]].map((vcpu) => {
    const event = vcpu.wait();
    if (event.kind !== 'paused') throw new Error(`vcpu ${vcpu.id}: expected paused, got ${describeEvent(event)}`);
    return { vcpu: vcpu.id, user: event.user };
  });
  // While 0 and 2 are paused, their counters stand still and VCPU 1's moves on
  // (real-mode code, which some hosts emulate: give it time on a loaded machine).
  const frozen = [counters[0], counters[2]];
  const start1 = counters[1];
  waitUntil('VCPU 1 to keep counting', () => counters[1] - start1 > 1_000_000, 20_000);
  const afterWait = [counters[0], counters[2]];
  const stillFrozen = afterWait[0] === frozen[0] && afterWait[1] === frozen[1];

  const reports: { vcpu: number; rax: bigint }[] = [];
  for (const vcpu of [vcpus[0], vcpus[2]]) {
    const regs = new RegsView(vcpu.getRegs());
    if (regs.rax !== 0n) throw new Error(`vcpu ${vcpu.id}: rax is already ${regs.rax}`);
    regs.rax = 0xa000n + BigInt(vcpu.id);
    vcpu.setRegs(regs.bytes);
    vcpu.resume();
    reports.push({ vcpu: vcpu.id, rax: expectReport(vcpu, REPORT, { resume: false }) });
  }

  // VCPU 1's notifications, up to (at least) its count now: all progress, never a pause.
  const target = counters[1];
  const vcpu1 = vcpus[1];
  let notifications = 0;
  let last = 0n;
  let ordered = true;
  for (;;) {
    const event = vcpu1.wait();
    if (event.kind !== 'io' || event.address !== PROGRESS || !event.noResume) {
      throw new Error(`vcpu 1 was not to stop, got ${describeEvent(event)}`);
    }
    const value = littleEndian(event.data);
    if (value <= last) ordered = false;
    last = value;
    notifications++;
    vcpu1.resume();
    if (value >= BigInt(target)) break;
  }
  const report: VcpuPauseReport = {
    paused,
    stillFrozen,
    frozenCounters: frozen,
    afterWait,
    reports,
    vcpu1: { notifications, ordered, lastCount: last, target },
  };
  finish(report);
});
