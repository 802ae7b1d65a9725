#!/usr/bin/env node
/**
 * Test plugin: an async-write range (IO port 0x700). The guest writes 1000
 * distinct 16-bit values there, then reads the port (with eax preset to all
 * ones) and reports what it read on the ordinary port 0x701. The plugin
 * never resumes while it collects the notifications: the guest must get to
 * its report on its own. Prints one JSON line.
 */
import type { VcpuAsyncReport } from '../support/reports.js';
import {
  connectWithProgram,
  describeEvent,
  expectReport,
  finish,
  littleEndian,
  pluginMain,
  startVcpu0,
} from '../support/test-plugin.js';

const ASYNC = 0x700n;
const REPORT = 0x701n;
const COUNT = 1000;

const BODY = `
  mov dx, ${ASYNC}
  mov cx, 1
.l:
  mov ax, cx
  xor ax, 0x5a00          ; distinct values, not just a count
  out dx, ax
  inc cx
  cmp cx, ${COUNT + 1}
  jne .l
  mov eax, 0xffffffff
  in eax, dx              ; a read of the async range: zeros, no stop
  mov dx, ${REPORT}
  out dx, eax
  hlt
`;

pluginMain(() => {
  const { conn } = connectWithProgram({ body: BODY }, [{ start: ASYNC, asyncWrite: true }, REPORT]);
  const vcpu = startVcpu0(conn);

  const values: number[] = [];
  let allNoResume = true;
  let allWrites = true;
  const sizes = new Set<number>();
  for (let i = 0; i < COUNT; i++) {
    const event = vcpu.wait(); // no resume in between
    if (event.kind !== 'io' || event.address !== ASYNC) throw new Error(`notification ${i}: got ${describeEvent(event)}`);
    allNoResume &&= event.noResume;
    allWrites &&= event.isWrite;
    sizes.add(event.data.length);
    values.push(Number(littleEndian(event.data)));
  }
  const read = expectReport(vcpu, REPORT, { resume: false });
  const report: VcpuAsyncReport = { values, allNoResume, allWrites, sizes: [...sizes], read };
  finish(report);
});
