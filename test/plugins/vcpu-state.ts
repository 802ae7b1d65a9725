#!/usr/bin/env node
/**
 * Test plugin (2 VCPUs): per-VCPU state set by the plugin and observed by
 * the guest. At VCPU 0's `init` the plugin sets CPUID, MSRs, FPU, XCR0,
 * the LAPIC TPR, an injected interrupt (VCPU events), debug registers and
 * general registers (the last two with raw set_state requests), and special
 * registers with the resume. The guest reports what it sees on port 0x510
 * (its interrupt handler on 0x511). VCPU 1 is made runnable through its MP
 * state and reports its own LAPIC ID on 0x512. Also records the errno of
 * malformed state requests as they come back on the wire, and reads state
 * back after the guest ran. Prints one JSON line.
 */
import { Buffer } from 'node:buffer';
import {
  DebugregsView,
  RegsView,
  SregsView,
  VcpuStateSet,
  kvmConstants,
  type CpuidEntry,
  type Vcpu,
} from '../../src/plugin/index.js';
import type { VcpuRequest_StateSet } from '../../src/protocol/gen/plugin.js';
import { assemble } from '../support/asm.js';
import type { VcpuStateReport, WireAnswer } from '../support/reports.js';
import {
  connectWithProgram,
  expectInit,
  expectReport,
  finish,
  mpState,
  pluginMain,
  routeVectorToHandler,
  setUpRealMode,
  wireAnswer,
} from '../support/test-plugin.js';

const REPORT = 0x510n;
const HANDLER_REPORT = 0x511n;
const AP_REPORT = 0x512n;
const LAPIC_BASE = 0xfee00000n;
const INJECTED_VECTOR = 0x30;

/** The values the plugin sets (test/protocol-vcpu.test.ts expects the same). */
const VALUES = {
  rbx: 0x5e7_0001n,
  dr0: 0x1234_5678n,
  dr3: 0x9abc_def0n,
  fcw: 0x027f,
  mxcsr: 0x9f80,
  st0: 5,
  cpuid: { eax: 0x4000_0001, ebx: 0x6775_6c50, ecx: 0x7369_7672, edx: 0x2020_726f }, // "Plugvisor  "
  sysenterCs: 0xbeefn,
  sysenterEsp: 0x1234_5678n,
  sysenterEip: 0x9abc_def0n,
  star: 0x0023_0010_c0ff_ee00n,
  tpr: 0x20,
} as const;

const VCPU0_BODY = `
  mov dx, ${REPORT}
  mov eax, ebx          ; general registers (set_state REGS)
  out dx, eax
  mov eax, cr4          ; special registers (resume sregs)
  out dx, eax
  mov eax, dr0          ; debug registers (set_state DEBUGREGS)
  out dx, eax
  mov eax, dr3
  out dx, eax
  mov eax, 0x40000000   ; CPUID (set_cpuid)
  cpuid
  mov esi, edx
  mov dx, ${REPORT}
  out dx, eax
  mov eax, ebx
  out dx, eax
  mov eax, ecx
  out dx, eax
  mov eax, esi
  out dx, eax
  mov ecx, 0x174        ; MSRs (set_msrs)
  rdmsr
  mov dx, ${REPORT}
  out dx, eax
  mov ecx, 0xc0000081   ; STAR: all 64 bits
  rdmsr
  mov esi, edx
  mov dx, ${REPORT}
  out dx, eax
  mov eax, esi
  out dx, eax
  mov eax, [fs:0x80]    ; LAPIC TPR (fs.base = the LAPIC page)
  out dx, eax
  hlt
`;

// Runs first: the interrupt injected through the VCPU events.
const HANDLER = `
  push dx
  push eax
  mov dx, ${HANDLER_REPORT}
  mov eax, 0xe1000000 + ${INJECTED_VECTOR}
  out dx, eax
  pop eax
  pop dx
  iret
`;

// VCPU 1 starts here: reports its LAPIC ID register.
const AP_CODE = `
bits 16
org 0x2000
  mov eax, [fs:0x20]
  mov dx, ${AP_REPORT}
  out dx, eax
  hlt
`;

function u32At(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(offset, true);
}

function setStateRaw(vcpu: Vcpu, set: VcpuRequest_StateSet, state: Uint8Array): WireAnswer {
  return wireAnswer(vcpu.request({ message: { $case: 'setState', setState: { set, state: Buffer.from(state) } } }));
}

function getStateRaw(vcpu: Vcpu, set: VcpuRequest_StateSet): WireAnswer {
  return wireAnswer(vcpu.request({ message: { $case: 'getState', getState: { set } } }));
}

/** The wire's answers to state requests that must be refused. */
function malformedStateRequests(vcpu: Vcpu): Record<string, WireAnswer> {
  const C = kvmConstants();
  const sizes: [string, VcpuRequest_StateSet, number][] = [
    ['regs', VcpuStateSet.REGS, C.SIZEOF_KVM_REGS],
    ['sregs', VcpuStateSet.SREGS, C.SIZEOF_KVM_SREGS],
    ['fpu', VcpuStateSet.FPU, C.SIZEOF_KVM_FPU],
    ['debugregs', VcpuStateSet.DEBUGREGS, C.SIZEOF_KVM_DEBUGREGS],
    ['lapic', VcpuStateSet.LAPIC, C.SIZEOF_KVM_LAPIC_STATE],
    ['mp', VcpuStateSet.MP, C.SIZEOF_KVM_MP_STATE],
    ['xcregs', VcpuStateSet.XCREGS, C.SIZEOF_KVM_XCRS],
    ['events', VcpuStateSet.EVENTS, C.SIZEOF_KVM_VCPU_EVENTS],
  ];
  const out: Record<string, WireAnswer> = {};
  for (const [name, set, size] of sizes) {
    out[`${name}TooShort`] = setStateRaw(vcpu, set, new Uint8Array(size - 1));
    out[`${name}TooLong`] = setStateRaw(vcpu, set, new Uint8Array(size + 1));
  }
  out['getUnknownSet'] = getStateRaw(vcpu, 8 as VcpuRequest_StateSet);
  out['getUnknownSetLarge'] = getStateRaw(vcpu, 1000 as VcpuRequest_StateSet);
  out['setUnknownSet'] = setStateRaw(vcpu, 8 as VcpuRequest_StateSet, new Uint8Array(4));
  return out;
}

function withCpuid(supported: CpuidEntry[]): CpuidEntry[] {
  const entries = supported.map((e) => ({ ...e }));
  const hv = { function: 0x4000_0000, hasIndex: false, index: 0, ...VALUES.cpuid };
  const existing = entries.findIndex((e) => e.function === 0x4000_0000);
  if (existing >= 0) entries[existing] = hv;
  else entries.push(hv);
  return entries;
}

/** XCR0 = x87 | SSE, plus AVX where KVM offers it (CPUID leaf 0xD). */
function xcr0For(supported: CpuidEntry[]): bigint {
  const leafD = supported.find((e) => e.function === 0xd && e.index === 0);
  return leafD !== undefined && (leafD.eax & 4) !== 0 ? 7n : 3n;
}

/** An x87 register (80-bit extended precision) holding a small positive integer. */
function x87Integer(value: number): Uint8Array {
  const out = new Uint8Array(10);
  const exponent = Math.floor(Math.log2(value));
  const mantissa = BigInt(value) << BigInt(63 - exponent);
  new DataView(out.buffer).setBigUint64(0, mantissa, true);
  new DataView(out.buffer).setUint16(8, 0x3fff + exponent, true);
  return out;
}

function main(): void {
  const C = kvmConstants();
  const { conn, memory } = connectWithProgram({ body: VCPU0_BODY, handler: HANDLER }, [REPORT, HANDLER_REPORT, AP_REPORT]);
  memory.bytes.set(assemble(AP_CODE), 0x2000);
  routeVectorToHandler(memory, INJECTED_VECTOR);
  const supported = conn.getSupportedCpuid();
  const xcr0 = xcr0For(supported);
  const [vcpu0, vcpu1] = conn.getVcpus();
  if (vcpu0 === undefined || vcpu1 === undefined) throw new Error('needs 2 VCPUs (--cpus 2)');
  conn.start();

  // ---- VCPU 0 ----
  expectInit(vcpu0);
  const wire = malformedStateRequests(vcpu0);
  const mpBefore = mpState(vcpu0);

  vcpu0.setCpuid(withCpuid(supported));
  vcpu0.setMsrs([
    { index: 0x174, data: VALUES.sysenterCs },
    { index: 0x175, data: VALUES.sysenterEsp },
    { index: 0x176, data: VALUES.sysenterEip },
    { index: 0xc000_0081, data: VALUES.star },
  ]);
  const msrsInRequestOrder = vcpu0.getMsrs([0xc000_0081, 0x176, 0x174, 0x175]);

  // XCR0 (the guest cannot run xgetbv here: KVM offers no XSAVE to guests on this host).
  const xcrs = new Uint8Array(C.SIZEOF_KVM_XCRS);
  const xcrsView = new DataView(xcrs.buffer);
  xcrsView.setUint32(0, 1, true); // nr_xcrs
  xcrsView.setUint32(8, 0, true); // xcrs[0].xcr = XCR0
  xcrsView.setBigUint64(16, xcr0, true); // xcrs[0].value
  vcpu0.setState(VcpuStateSet.XCREGS, xcrs);
  const xcrsBefore = vcpu0.getState(VcpuStateSet.XCREGS);
  const xcr0Before = new DataView(xcrsBefore.buffer, xcrsBefore.byteOffset).getBigUint64(16, true);

  // FPU: read back after the guest ran (x87/SSE instructions trap to KVM's
  // emulator in real-mode guests on this nested host, so the guest cannot look).
  const fpu = vcpu0.getState(VcpuStateSet.FPU);
  const fpuView = new DataView(fpu.buffer, fpu.byteOffset, fpu.byteLength);
  fpuView.setUint16(128, VALUES.fcw, true); // fcw
  fpu.set(x87Integer(VALUES.st0), 0); // fpr[0]
  fpuView.setUint32(408, VALUES.mxcsr, true); // mxcsr
  vcpu0.setState(VcpuStateSet.FPU, fpu);
  const fpuBefore = vcpu0.getState(VcpuStateSet.FPU);
  const fpuBeforeRun = { fcw: fpuBefore[128] | (fpuBefore[129] << 8), mxcsr: u32At(fpuBefore, 408) };

  const lapic = vcpu0.getState(VcpuStateSet.LAPIC);
  new DataView(lapic.buffer, lapic.byteOffset, lapic.byteLength).setUint32(0x80, VALUES.tpr, true);
  vcpu0.setState(VcpuStateSet.LAPIC, lapic);

  // Special registers go with the resume. Read after the LAPIC write: CR8 mirrors the TPR.
  const sregs = new SregsView(vcpu0.getSregs());
  const cr8AfterTpr = sregs.cr8;
  for (const segment of [sregs.cs, sregs.ds, sregs.es, sregs.ss]) {
    segment.base = 0n;
    segment.selector = 0;
  }
  sregs.fs.base = LAPIC_BASE;
  sregs.cr4 |= 1n << 9n; // OSFXSR
  const cr4Set = sregs.cr4;
  vcpu0.setSregs(sregs.bytes);

  // An interrupt "being delivered" (events.interrupt.injected/nr): the guest's handler runs first.
  const events = vcpu0.getState(VcpuStateSet.EVENTS);
  events[8] = 1; // interrupt.injected
  events[9] = INJECTED_VECTOR; // interrupt.nr
  events[10] = 0; // interrupt.soft
  vcpu0.setState(VcpuStateSet.EVENTS, events);

  // General and debug registers with raw set_state requests (not the resume).
  const regs = new RegsView(vcpu0.getRegs());
  regs.rip = 0x1000n;
  regs.rflags = 2n;
  regs.rsp = 0x4000n;
  regs.rbx = VALUES.rbx;
  const setRegs = setStateRaw(vcpu0, VcpuStateSet.REGS, regs.bytes);
  const debugregs = new DebugregsView(vcpu0.getDebugregs());
  debugregs.setDb(0, VALUES.dr0);
  debugregs.setDb(3, VALUES.dr3);
  const setDebugregs = setStateRaw(vcpu0, VcpuStateSet.DEBUGREGS, debugregs.bytes);
  vcpu0.resume();

  const handler = expectReport(vcpu0, HANDLER_REPORT);
  const guest: Record<string, bigint> = {};
  for (const name of [
    'rbx',
    'cr4',
    'dr0',
    'dr3',
    'cpuidEax',
    'cpuidEbx',
    'cpuidEcx',
    'cpuidEdx',
    'sysenterCs',
    'starLow',
    'starHigh',
    'tpr',
  ]) {
    guest[name] = expectReport(vcpu0, REPORT, { resume: name !== 'tpr' });
  }

  // Read back after the guest ran (VCPU 0 is stopped at its last report).
  const fpuAfter = vcpu0.getState(VcpuStateSet.FPU);
  const lapicAfter = vcpu0.getState(VcpuStateSet.LAPIC);
  const xcrsAfter = vcpu0.getState(VcpuStateSet.XCREGS);
  const eventsAfter = vcpu0.getState(VcpuStateSet.EVENTS);
  const readBack = {
    fcw: fpuAfter[128] | (fpuAfter[129] << 8),
    fpr0: Buffer.from(fpuAfter.subarray(0, 10)).toString('hex'),
    mxcsr: u32At(fpuAfter, 408),
    tpr: u32At(lapicAfter, 0x80),
    nrXcrs: u32At(xcrsAfter, 0),
    xcr0: new DataView(xcrsAfter.buffer, xcrsAfter.byteOffset).getBigUint64(16, true),
    interruptInjected: eventsAfter[8],
    mp: mpState(vcpu0),
    sysenterCs: vcpu0.getMsrs([0x174])[0],
    dr0: new DebugregsView(vcpu0.getDebugregs()).db(0),
  };

  // ---- VCPU 1: waits for a startup IPI unless made runnable ----
  expectInit(vcpu1);
  const apMpBefore = mpState(vcpu1);
  setUpRealMode(vcpu1, { registers: { rip: 0x2000n }, fsBase: LAPIC_BASE });
  const apMpAfter = mpState(vcpu1);
  vcpu1.resume();
  const ap = { mpBefore: apMpBefore, mpAfter: apMpAfter, lapicId: expectReport(vcpu1, AP_REPORT, { resume: false }) };

  const report: VcpuStateReport = {
    xcr0,
    wire,
    mpBefore,
    msrsInRequestOrder,
    xcr0Before,
    fpuBeforeRun,
    cr8AfterTpr,
    cr4Set,
    setRegs,
    setDebugregs,
    handler,
    guest,
    readBack,
    ap,
  };
  finish(report);
}

pluginMain(main);
