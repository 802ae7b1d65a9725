#!/usr/bin/env node
/**
 * The fuzz plugin: a hostile plugin that talks to the host only through the
 * wire (the main socket and the VCPU pipes), so it keeps working whatever
 * runs the VCPUs on the host side.
 *
 *   fuzz.js SEED BUDGET_MS
 *   stdin:  corpus inputs to replay first, one JSON line each: {"kind":"main"|"vcpu","hex":"..."}
 *   stdout: one JSON line, the report (counts, findings, novel outcomes)
 *
 * Main requests go to a side connection (made with new_connection), each one:
 *  - generated: from MainRequest's real shape (src/protocol/strict.ts's
 *    descriptor, encoded by the generated code), absurd values and all, with
 *    0-32 descriptors attached at times. Must be answered with its member
 *    (E2BIG with its member when it is over 4096 bytes).
 *  - broken: a generated one made malformed (test/fuzz/generate.ts,
 *    breakMessage). Must drop its connection, and only it.
 *  - mutated, random, truncated, corpus: of unknown form. Answered (with a
 *    well-formed response) or dropped; nothing else.
 * After every drop a new connection must serve a valid request, and the main
 * connection must too. `start` may be among the generated requests (and is
 * sent by the plugin half-way otherwise); once started, VCPU 0 is driven over
 * its pipes: generated VcpuRequests (never resume/shutdown), every state set
 * with the wrong size, 10 000 MSRs, and garbage. Each must get its response
 * (garbage: at most one), and the VCPU must then still answer get_state.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { C, native } from '../../src/native/index.js';
import { errno } from '../../src/errno.js';
import { Connection } from '../../src/plugin/index.js';
import { MainRequest, MainResponse, VcpuRequest, VcpuResponse } from '../../src/protocol/gen/plugin.js';
import { DelimitedStream } from '../../src/protocol/framing.js';
import { checkWellFormed } from '../../src/protocol/strict.js';
import { VCPU_RESPONSE_CASES } from '../../src/protocol/responses.js';
import { messageDescriptor } from '../support/descriptor.js';
import type { FuzzReport } from '../support/reports.js';
import { Random, breakMessage, mutate, randomMessage } from '../fuzz/generate.js';

const [seedArg, budgetArg] = process.argv.slice(2);
const random = new Random(Number(seedArg ?? 1));
const deadline = performance.now() + Number(budgetArg ?? 3000);

const MAIN_REQUEST = messageDescriptor('MainRequest');
const MAIN_RESPONSE = messageDescriptor('MainResponse');
const VCPU_REQUEST = messageDescriptor('VcpuRequest');
const VCPU_RESPONSE = messageDescriptor('VcpuResponse');
const ANSWER_TIMEOUT_MS = 10_000;
const REQUEST_LIMIT = 4096;

type MainKind = 'generated' | 'broken' | 'mutated' | 'random' | 'truncated' | 'corpus';
type VcpuKind = 'generated' | 'wrongSize' | 'manyMsrs' | 'garbage' | 'corpus';

const report: FuzzReport = {
  seed: Number(seedArg ?? 1),
  main: { sent: {}, answered: 0, dropped: 0, probes: 0, fdsAttached: 0, connectionsOpened: 0 },
  vcpu: { sent: {}, answered: 0, silent: 0, probes: 0 },
  started: false,
  vmEnded: false,
  findings: [],
  novel: [],
};
const seenOutcomes = new Set<string>();
const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

function finding(what: string, kind: string, bytes: Uint8Array): void {
  if (report.findings.length < 50) report.findings.push({ what, kind, hex: hex(bytes.subarray(0, 8192)) });
}

function outcome(kind: 'main' | 'vcpu', key: string, bytes: Uint8Array): void {
  if (seenOutcomes.has(key)) return;
  seenOutcomes.add(key);
  if (report.novel.length < 1000 && bytes.length <= 8192) report.novel.push({ key, kind, hex: hex(bytes) });
}

const count = (table: Record<string, number>, key: string): void => void (table[key] = (table[key] ?? 0) + 1);

// ---- the main socket ----

const main = Connection.connect();
const shutdownFd = main.getShutdownEventfd();
const vcpuFds = main.request({ message: { $case: 'getVcpus', getVcpus: {} } }).fds;
const [vcpuRequestFd, vcpuResponseFd] = [vcpuFds[0], vcpuFds[1]];
for (const fd of vcpuFds.slice(2)) native.close(fd);

/** Descriptors to attach: the kinds a request might carry, and some it should not. */
const fdPool = (() => {
  const sealed = native.memfdCreate('fuzz-sealed', C.MFD_CLOEXEC | C.MFD_ALLOW_SEALING);
  native.ftruncate(sealed, 0x10000);
  native.fcntl(sealed, C.F_ADD_SEALS, C.F_SEAL_SHRINK);
  const unsealed = native.memfdCreate('fuzz-unsealed', C.MFD_CLOEXEC);
  native.ftruncate(unsealed, 0x10000);
  const [pipeRead, pipeWrite] = native.pipe2(C.O_CLOEXEC);
  return [sealed, sealed, unsealed, native.eventfd(0, C.EFD_CLOEXEC), pipeRead, pipeWrite, main.fd];
})();

let side = openSide();
const sideBuffer = new Uint8Array(0x40000);

function openSide(): Connection {
  report.main.connectionsOpened++;
  return main.newConnection();
}

type Exchange = { kind: 'answer'; response: MainResponse; bytes: Uint8Array } | { kind: 'dropped' } | { kind: 'timeout' };

function exchange(conn: Connection, bytes: Uint8Array, fds: readonly number[]): Exchange {
  try {
    native.sendmsg(conn.fd, bytes, bytes.length, fds);
  } catch {
    return { kind: 'dropped' };
  }
  if ((native.poll(conn.fd, C.POLLIN, ANSWER_TIMEOUT_MS) & (C.POLLIN | C.POLLHUP | C.POLLERR)) === 0) return { kind: 'timeout' };
  let received;
  try {
    received = native.recvmsg(conn.fd, sideBuffer, 32);
  } catch {
    return { kind: 'dropped' };
  }
  if (received === null || received.bytes === 0) return { kind: 'dropped' };
  for (const fd of received.fds) native.close(fd);
  const answer = sideBuffer.slice(0, received.bytes);
  checkWellFormed(MAIN_RESPONSE, answer);
  return { kind: 'answer', response: MainResponse.decode(answer), bytes: answer };
}

/** After a drop: the host must serve a new connection, and the main one. */
function probeAfterDrop(kind: string, bytes: Uint8Array): void {
  side.close();
  side = openSide();
  report.main.probes++;
  if (!side.checkExtension(C.KVM_CAP_IRQCHIP) || !main.checkExtension(C.KVM_CAP_IRQCHIP)) {
    finding('a valid request after a drop was not served', kind, bytes);
  }
}

function generatedRequest(): { bytes: Uint8Array; member: string | undefined } {
  const large = random.chance(0.05);
  const shape = randomMessage(random, MAIN_REQUEST, { maxRepeated: large ? 700 : 24, maxBytes: large ? 6000 : 64 });
  const request = MainRequest.fromPartial(shape);
  return { bytes: MainRequest.encode(request).finish(), member: request.message?.$case };
}

function attachments(): number[] {
  if (!random.chance(0.15)) return [];
  const n = random.chance(0.2) ? 1 + random.below(32) : 1 + random.below(3);
  report.main.fdsAttached += n;
  return Array.from({ length: n }, () => random.pick(fdPool));
}

function sendMain(kind: MainKind, bytes: Uint8Array, member?: string): void {
  if (bytes.length === 0) return; // indistinguishable from a hang-up (the spec's note)
  count(report.main.sent, kind);
  const result = exchange(side, bytes, attachments());
  if (result.kind === 'timeout') {
    finding(`no answer within ${ANSWER_TIMEOUT_MS} ms`, kind, bytes);
    throw new Error('the host stopped answering');
  }
  if (result.kind === 'dropped') {
    report.main.dropped++;
    if (kind === 'generated') finding('a well-formed request dropped its connection', kind, bytes);
    outcome('main', `${kind === 'broken' ? 'broken' : 'any'}:dropped`, bytes);
    probeAfterDrop(kind, bytes);
    return;
  }
  report.main.answered++;
  const { response } = result;
  const answeredMember = response.message?.$case;
  if (kind === 'broken') finding(`a malformed request was answered (errno ${response.errnoValue})`, kind, bytes);
  if (kind === 'generated') {
    if (answeredMember !== member)
      finding(`answered with member ${answeredMember ?? 'none'}, not ${member ?? 'none'}`, kind, bytes);
    if (bytes.length > REQUEST_LIMIT && response.errnoValue !== errno.E2BIG)
      finding(`a ${bytes.length}-byte request got errno ${response.errnoValue}, not E2BIG`, kind, bytes);
  }
  // Mutated bytes can be a `start` too.
  if (answeredMember === 'start' && response.errnoValue === 0) report.started = true;
  outcome('main', `${answeredMember ?? 'none'}:${response.errnoValue}`, bytes);
}

// ---- VCPU 0's pipes ----

const vcpuStream = new DelimitedStream();
const vcpuBuffer = new Uint8Array(0x40000);
const STATE_SIZES = [
  C.SIZEOF_KVM_REGS,
  C.SIZEOF_KVM_SREGS,
  C.SIZEOF_KVM_FPU,
  C.SIZEOF_KVM_DEBUGREGS,
  C.SIZEOF_KVM_LAPIC_STATE,
  C.SIZEOF_KVM_MP_STATE,
  C.SIZEOF_KVM_XCRS,
  C.SIZEOF_KVM_VCPU_EVENTS,
];
/** Every VcpuRequest member that is answered; resume and shutdown would let the VCPU go. */
const ANSWERED_VCPU_MEMBERS = [...VCPU_RESPONSE_CASES];

/** The next VcpuResponse within `timeoutMs`, or undefined. */
function nextVcpuResponse(timeoutMs: number): VcpuResponse | undefined {
  const until = performance.now() + timeoutMs;
  for (;;) {
    const message = vcpuStream.next();
    if (message !== undefined) {
      checkWellFormed(VCPU_RESPONSE, message);
      return VcpuResponse.decode(message);
    }
    const left = until - performance.now();
    if (left <= 0 || (native.poll(vcpuResponseFd, C.POLLIN, Math.ceil(left)) & C.POLLIN) === 0) return undefined;
    const n = native.read(vcpuResponseFd, vcpuBuffer, 0, vcpuBuffer.length);
    if (n === 0) throw new Error("the host closed VCPU 0's response pipe");
    if (n > 0) vcpuStream.push(vcpuBuffer, n);
  }
}

function writeVcpu(bytes: Uint8Array): void {
  // One request per write (the protocol's framing); the pipe is empty and
  // larger than any request sent here, so the write is whole.
  if (native.write(vcpuRequestFd, bytes, 0, bytes.length) !== bytes.length) throw new Error('short write to the VCPU pipe');
}

function encodeVcpu(request: VcpuRequest): Uint8Array {
  return VcpuRequest.encode(request).finish();
}

function startVcpus(): void {
  writeVcpu(encodeVcpu({ message: { $case: 'wait', wait: {} } }));
  const init = nextVcpuResponse(ANSWER_TIMEOUT_MS);
  if (init?.message?.$case !== 'wait' || init.message.wait.exit?.$case !== 'init') {
    finding(`VCPU 0's first wait got ${JSON.stringify(init?.message?.$case)}`, 'vcpu', new Uint8Array());
    throw new Error('VCPU 0 did not start');
  }
}

function sendVcpu(kind: VcpuKind, bytes: Uint8Array, member?: string, expectErrno?: number): void {
  if (bytes.length === 0) return; // a zero-length write is no message at all
  count(report.vcpu.sent, kind);
  writeVcpu(bytes);
  // Every request gets one answer, garbage too (EINVAL, no member): waiting
  // less for garbage would let the next write join it in the pipe while a
  // loaded host has not read it yet, and two writes read at once are one
  // message (the pipe has no framing), which then looks like a lost answer.
  const response = nextVcpuResponse(ANSWER_TIMEOUT_MS);
  if (response === undefined) {
    finding(`no VCPU response within ${ANSWER_TIMEOUT_MS} ms`, kind, bytes);
    report.vcpu.silent++;
  } else {
    report.vcpu.answered++;
    const got = response.message?.$case;
    if (member !== undefined && got !== member) finding(`VCPU answer has member ${got ?? 'none'}, not ${member}`, kind, bytes);
    if (expectErrno !== undefined && response.errnoValue !== expectErrno)
      finding(`VCPU answer errno ${response.errnoValue}, not ${expectErrno}`, kind, bytes);
    outcome('vcpu', `${got ?? 'none'}:${response.errnoValue}`, bytes);
  }
  if (member === undefined) probeVcpu(kind, bytes);
}

/** After garbage: get_state must be answered (a late answer to the garbage may come first). */
function probeVcpu(kind: string, bytes: Uint8Array): void {
  report.vcpu.probes++;
  writeVcpu(encodeVcpu({ message: { $case: 'getState', getState: { set: 0 } } }));
  for (let i = 0; i < 3; i++) {
    const response = nextVcpuResponse(ANSWER_TIMEOUT_MS);
    if (response?.message?.$case === 'getState' && response.errnoValue === 0) return;
    if (response === undefined) break;
  }
  finding('VCPU 0 did not answer get_state after garbage', kind, bytes);
  throw new Error('VCPU 0 stopped answering');
}

/** Garbage that the generated decoder would read as resume or shutdown is not sent: it would let the VCPU go. */
function releasesVcpu(bytes: Uint8Array): boolean {
  try {
    const member = VcpuRequest.decode(bytes).message?.$case;
    return member === 'resume' || member === 'shutdown';
  } catch {
    return false;
  }
}

function vcpuStep(): void {
  const roll = random.below(10);
  if (roll < 5) {
    const member = random.pick(ANSWERED_VCPU_MEMBERS);
    const shape = randomMessage(random, VCPU_REQUEST, { maxRepeated: 40, maxBytes: 64, member });
    const request = VcpuRequest.fromPartial(shape);
    // `wait` with no reason pending is EPROTO (the init reason was collected).
    sendVcpu('generated', encodeVcpu(request), member, member === 'wait' ? errno.EPROTO : undefined);
  } else if (roll < 7) {
    const set = random.below(STATE_SIZES.length + 1);
    const size = STATE_SIZES[set] ?? 64;
    const wrong = random.pick([0, size - 1, size + 1, 2 * size, 0x10000]);
    const request = encodeVcpu({
      message: {
        $case: 'setState',
        setState: { set: set < STATE_SIZES.length ? set : 99, state: Buffer.from(random.bytes(wrong)) },
      },
    });
    sendVcpu('wrongSize', request, 'setState', errno.EINVAL);
  } else if (roll < 8) {
    const indices = Array.from({ length: 10_000 }, () => (random.chance(0.5) ? random.u32() : random.below(0x1000)));
    const request = random.chance(0.5)
      ? encodeVcpu({ message: { $case: 'getMsrs', getMsrs: { entryIndices: indices } } })
      : encodeVcpu({
          message: { $case: 'setMsrs', setMsrs: { entries: indices.map((index) => ({ index, data: random.u64() })) } },
        });
    sendVcpu('manyMsrs', request, VcpuRequest.decode(request).message!.$case);
  } else {
    const base = encodeVcpu(
      VcpuRequest.fromPartial(
        randomMessage(random, VCPU_REQUEST, { maxRepeated: 8, maxBytes: 32, member: random.pick(ANSWERED_VCPU_MEMBERS) }),
      ),
    );
    const bytes = random.chance(0.3) ? random.bytes(1 + random.below(64)) : mutate(random, base);
    if (!releasesVcpu(bytes)) sendVcpu('garbage', bytes);
  }
}

// ---- the run ----

function vmEnded(): boolean {
  return (native.poll(shutdownFd, C.POLLIN, 0) & C.POLLIN) !== 0;
}

function corpus(): { kind: string; bytes: Uint8Array }[] {
  let text = '';
  try {
    text = readFileSync(0, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const entry = JSON.parse(line) as { kind: string; hex: string };
      return { kind: entry.kind, bytes: Buffer.from(entry.hex, 'hex') };
    });
}

function mainStep(): void {
  const roll = random.below(20);
  const { bytes, member } = generatedRequest();
  if (roll < 9) sendMain('generated', bytes, member);
  else if (roll < 12 && bytes.length <= REQUEST_LIMIT - 64) sendMain('broken', breakMessage(random, bytes).bytes);
  else if (roll < 16) sendMain('mutated', mutate(random, bytes));
  else if (roll < 18) sendMain('truncated', bytes.subarray(0, random.below(bytes.length)));
  else sendMain('random', random.bytes(random.chance(0.1) ? REQUEST_LIMIT + 1 + random.below(2000) : 1 + random.length(600)));
}

const replay = corpus();
/** Half-way, the plugin starts the VM itself if no generated `start` did. */
const startAt = deadline - (deadline - performance.now()) / 2;
let vcpuRunning = false;
try {
  for (const entry of replay) if (entry.kind === 'main') sendMain('corpus', entry.bytes);
  for (let step = 0; performance.now() < deadline; step++) {
    if (vmEnded()) {
      report.vmEnded = true;
      break;
    }
    if (!report.started && performance.now() > startAt) {
      const refused = main.request({ message: { $case: 'start', start: {} } }).response.errnoValue;
      if (refused !== 0) throw new Error(`start was refused (errno ${refused})`);
      report.started = true;
    }
    if (report.started && !vcpuRunning) {
      startVcpus();
      vcpuRunning = true;
      for (const entry of replay) if (entry.kind === 'vcpu' && !releasesVcpu(entry.bytes)) sendVcpu('corpus', entry.bytes);
    }
    if (vcpuRunning && random.chance(0.3)) vcpuStep();
    else mainStep();
    if (step % 256 === 0 && !main.checkExtension(C.KVM_CAP_IRQCHIP))
      finding('the main connection stopped serving', 'main', new Uint8Array());
  }
} catch (e) {
  if (report.findings.length === 0)
    finding(`the run stopped: ${e instanceof Error ? e.message : String(e)}`, 'run', new Uint8Array());
}
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exit(0);
