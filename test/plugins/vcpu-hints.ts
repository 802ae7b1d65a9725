#!/usr/bin/env node
/**
 * Test plugin: set_call_hint. The hint is IO port 0x600, on writes, with one
 * detail: rax == 0x1111 → send sregs and debugregs too. The guest:
 *   1. writes 0x600 with rax = 0x1111  → regs + sregs + debugregs; the plugin
 *      sets rbx with setRegs (sent with the resume), the guest reports rbx on 0x601
 *   2. writes 0x600 with rax = 0x2222  → regs only (the detail does not match)
 *   3. reads 0x600                      → no registers (direction differs)
 *   4. writes 0x602 (reserved)          → no registers (other port)
 *   5. writes MMIO 0x600 (reserved)     → no registers (other space)
 *   6. after the plugin cleared the hint: writes 0x600 with rax = 0x1111 → none
 * Prints one JSON line: what each event carried.
 */
import { AddressSpace, DebugregsView, RegsView, SregsView } from '../../src/plugin/index.js';
import type { IoAccessEvent } from '../../src/plugin/index.js';
import type { HintCarried, VcpuHintsReport } from '../support/reports.js';
import {
  connectWithProgram,
  expectInit,
  expectIo,
  expectReport,
  finish,
  littleEndian,
  pluginMain,
  setUpRealMode,
} from '../support/test-plugin.js';

const HINTED = 0x600n;
const REPORT = 0x601n;
const OTHER = 0x602n;
const MMIO = 0x8000n; // above the guest's memory: an MMIO exit

const BODY = `
  mov dx, ${HINTED}
  mov eax, 0x1111
  out dx, eax            ; 1
  mov dx, ${REPORT}
  mov eax, ebx
  out dx, eax            ; rbx as the plugin set it
  mov dx, ${HINTED}
  mov eax, 0x2222
  out dx, eax            ; 2
  in eax, dx             ; 3
  mov dx, ${OTHER}
  mov eax, 0x1111
  out dx, eax            ; 4
  mov [${MMIO}], eax     ; 5 (ds base 0: linear 0x8000)
  mov dx, ${HINTED}
  out dx, eax            ; 6
  hlt
`;

function carried(event: IoAccessEvent): HintCarried {
  const out: HintCarried = {
    address: `0x${event.address.toString(16)}`,
    isWrite: event.isWrite,
    regs: event.regs !== undefined,
    sregs: event.sregs !== undefined,
    debugregs: event.debugregs !== undefined,
  };
  if (event.regs) out.rax = `0x${new RegsView(new Uint8Array(event.regs)).rax.toString(16)}`;
  if (event.debugregs) out.dr0 = `0x${new DebugregsView(new Uint8Array(event.debugregs)).db(0).toString(16)}`;
  if (event.sregs) out.cr0 = `0x${new SregsView(new Uint8Array(event.sregs)).cr0.toString(16)}`;
  return out;
}

pluginMain(() => {
  const { conn } = connectWithProgram({ body: BODY }, [
    HINTED,
    { start: REPORT, length: 2n }, // 0x601 and 0x602
    { space: AddressSpace.MMIO, start: MMIO, length: 4n },
  ]);
  conn.setCallHint({
    space: AddressSpace.IOPORT,
    address: HINTED,
    onWrite: true,
    details: [{ matchRax: true, rax: 0x1111n, sendSregs: true, sendDebugregs: true }],
  });
  const vcpu = conn.getVcpu(0);
  conn.start();
  expectInit(vcpu);
  setUpRealMode(vcpu);
  const debugregs = new DebugregsView(vcpu.getDebugregs());
  debugregs.setDb(0, 0xd0d0n);
  vcpu.setDebugregs(debugregs.bytes);
  vcpu.resume();

  const events: HintCarried[] = [];
  const first = expectIo(vcpu, HINTED, { isWrite: true });
  events.push(carried(first));
  // Change a register during the event: deferred to the resume.
  const regs = new RegsView(vcpu.getRegs());
  regs.rbx = 0xb0b0_1234n;
  vcpu.setRegs(regs.bytes);
  vcpu.resume();
  const rbxSeen = expectReport(vcpu, REPORT);

  for (const [address, isWrite, space] of [
    [HINTED, true, AddressSpace.IOPORT],
    [HINTED, false, AddressSpace.IOPORT],
    [OTHER, true, AddressSpace.IOPORT],
    [MMIO, true, AddressSpace.MMIO],
  ] as const) {
    const event = expectIo(vcpu, address, { isWrite, space });
    events.push(carried(event));
    if (address === MMIO) conn.setCallHint(null); // the next hinted write finds no hint
    vcpu.resume();
  }
  const last = expectIo(vcpu, HINTED, { isWrite: true });
  events.push(carried(last));
  const report: VcpuHintsReport = { events, rbxSeen, lastValue: littleEndian(last.data) };
  finish(report);
});
