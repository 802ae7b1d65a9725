#!/usr/bin/env node
/**
 * Test plugin: Hyper-V support on the VCPU connection. Asks check_extension
 * first and records why a part was skipped. get_hyperv_cpuid; enable_capability
 * with KVM_CAP_HYPERV_SYNIC (then the guest writes the SynIC control MSR,
 * which only an active SynIC turns into a `hyperv_synic` stop); enable_capability
 * with other capabilities (refused on the wire). Prints one JSON line.
 */
import { kvmConstants } from '../../src/plugin/index.js';
import type { VcpuHypervReport, WireAnswer } from '../support/reports.js';
import {
  connectWithProgram,
  cpuidText,
  describeEvent,
  expectInit,
  expectReport,
  finish,
  pluginMain,
  setUpRealMode,
  wireAnswer,
} from '../support/test-plugin.js';

const REPORT = 0x510n;
const SCONTROL = 0x4000_0080;
const SIEFP = 0x4000_0082;
const SIMP = 0x4000_0083;

// rsi != 0: the SynIC is active, write its MSRs (each write to SCONTROL stops the VCPU).
const BODY = `
  test si, si
  jz .done
  mov ecx, ${SIEFP}
  mov eax, 0x5000      ; event flags page (not enabled: bit 0 clear)
  xor edx, edx
  wrmsr
  mov ecx, ${SIMP}
  mov eax, 0x6000      ; message page
  wrmsr
  mov ecx, ${SCONTROL}
  mov eax, 1           ; enable
  xor edx, edx
  wrmsr
.done:
  mov dx, ${REPORT}
  mov eax, 0xd0e
  out dx, eax
  hlt
`;

pluginMain(() => {
  const C = kvmConstants();
  const { conn } = connectWithProgram({ body: BODY }, [REPORT]);
  const has = {
    hypervCpuid: conn.checkExtension(C.KVM_CAP_HYPERV_CPUID),
    synic: conn.checkExtension(C.KVM_CAP_HYPERV_SYNIC),
  };
  const vcpu = conn.getVcpu(0);
  conn.start();
  expectInit(vcpu);

  let hypervCpuid: VcpuHypervReport['hypervCpuid'];
  if (has.hypervCpuid) {
    const entries = vcpu.getHypervCpuid();
    const signature = entries.find((e) => e.function === 0x4000_0000);
    const interface_ = entries.find((e) => e.function === 0x4000_0001);
    hypervCpuid = {
      count: entries.length,
      vendor: signature ? cpuidText(signature.ebx, signature.ecx, signature.edx) : null,
      interface: interface_ ? cpuidText(interface_.eax) : null,
    };
  }

  const enable = (capability: number): WireAnswer =>
    wireAnswer(vcpu.request({ message: { $case: 'enableCapability', enableCapability: { capability } } }));
  const refused = {
    hypervCpuid: enable(C.KVM_CAP_HYPERV_CPUID),
    irqchip: enable(C.KVM_CAP_IRQCHIP),
    unknown: enable(0x7fff_ffff),
  };
  // Where KVM lacks the feature, the kernel's refusal must come back on the wire.
  const enableSynic = enable(C.KVM_CAP_HYPERV_SYNIC);
  let hypervCpuidRefused: WireAnswer | undefined;
  if (!has.hypervCpuid) {
    hypervCpuidRefused = wireAnswer(vcpu.request({ message: { $case: 'getHypervCpuid', getHypervCpuid: {} } }));
  }

  setUpRealMode(vcpu, { registers: { rsi: has.synic ? 1n : 0n } });
  vcpu.resume();
  let synicExit: VcpuHypervReport['synicExit'];
  if (has.synic) {
    const event = vcpu.wait();
    if (event.kind !== 'hypervSynic') throw new Error(`expected a hyperv_synic stop, got ${describeEvent(event)}`);
    synicExit = { msr: event.msr, control: event.control, evtPage: event.evtPage, msgPage: event.msgPage };
    vcpu.resume();
  }
  const done = expectReport(vcpu, REPORT, { resume: false });
  const report: VcpuHypervReport = { has, hypervCpuid, refused, enableSynic, hypervCpuidRefused, synicExit, done };
  finish(report);
});
