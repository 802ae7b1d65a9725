#!/usr/bin/env node
/**
 * Test plugin: the query requests of the main connection — supported and
 * emulated CPUID, the MSR index list, check_extension, set_identity_map_addr
 * (before and after start) and get_net_config — recorded as they came back
 * on the wire. Prints one JSON line; the test asserts on it.
 */
import type { ProtoQueriesReport } from '../support/reports.js';
import { cpuidText, finish, pluginMain, wireAnswer } from '../support/test-plugin.js';
import { Connection, kvmConstants, type CpuidEntry, type MainRequest } from '../../src/plugin/index.js';

const C = kvmConstants();

pluginMain(() => {
  const conn = Connection.connect();
  const wire = (request: MainRequest): { errno: number; member: string | null; fds: number } => {
    const { response, fds } = conn.request(request);
    return { ...wireAnswer(response), fds: fds.length };
  };
  const leaf = (entries: CpuidEntry[], fn: number): CpuidEntry | undefined =>
    entries.find((e) => e.function === fn && (!e.hasIndex || e.index === 0));

  const supported = conn.getSupportedCpuid();
  const leaf0 = leaf(supported, 0);
  const leaf1 = leaf(supported, 1);
  const emulated = conn.getEmulatedCpuid();
  const msrs = conn.getMsrIndexList();

  const extension = (cap: number): { errno: number; has: boolean | null } => {
    const { response } = conn.request({ message: { $case: 'checkExtension', checkExtension: { extension: cap } } });
    return {
      errno: response.errnoValue,
      has: response.message?.$case === 'checkExtension' ? response.message.checkExtension.hasExtension : null,
    };
  };
  const identityMap = (address: number): MainRequest => ({
    message: { $case: 'setIdentityMapAddr', setIdentityMapAddr: { address } },
  });

  const result: ProtoQueriesReport = {
    supported: {
      count: supported.length,
      leaf0: leaf0 === undefined ? null : { maxLeaf: leaf0.eax, vendor: cpuidText(leaf0.ebx, leaf0.edx, leaf0.ecx) },
      // Leaf 1 EDX bit 0 (FPU) and bit 4 (TSC): every x86-64 host has them.
      leaf1Fpu: leaf1 === undefined ? null : (leaf1.edx & 1) !== 0,
      leaf1Tsc: leaf1 === undefined ? null : (leaf1.edx & 0x10) !== 0,
      hasExtendedLeaf: supported.some((e) => e.function === 0x80000000),
      // Leaf 0xb (or 7) is indexed: has_index must come through.
      indexedLeaves: supported.filter((e) => e.hasIndex).length,
    },
    emulated: {
      count: emulated.length,
      functions: [...new Set(emulated.map((e) => e.function))],
      // KVM emulates MOVBE (leaf 1 ECX bit 22) for any guest.
      movbe: ((leaf(emulated, 1)?.ecx ?? 0) & (1 << 22)) !== 0,
    },
    msrs: { count: msrs.length, tsc: msrs.includes(0x10), sysenterCs: msrs.includes(0x174) },
    extensions: {
      irqchip: extension(C.KVM_CAP_IRQCHIP),
      irqfdResample: extension(C.KVM_CAP_IRQFD_RESAMPLE),
      readonlyMem: extension(C.KVM_CAP_READONLY_MEM),
      madeUp: extension(0xfffff),
    },
    identityMapBeforeStart: wire(identityMap(0xfffbc000)),
    netConfig: wire({ message: { $case: 'getNetConfig', getNetConfig: {} } }),
    start: wire({ message: { $case: 'start', start: {} } }),
    identityMapAfterStart: wire(identityMap(0xfffbc000)),
  };
  finish(result);
});
