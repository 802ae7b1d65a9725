/**
 * The plugvisor plugin SDK (`plugvisor/plugin`): everything a plugin script
 * needs to drive a VM from its own process. Synchronous, like crosvm's C
 * client library: calls block until the host answers; use worker_threads
 * with their own connection (Connection.newConnection + Connection.fromFd)
 * for concurrency.
 *
 *   const conn = Connection.connect();
 *   const mem = GuestMemory.create(0x1000);
 *   conn.createMemory(mem, { start: 0x1000n });
 *   conn.reserveRange(AddressSpace.IOPORT, 0x3f8n, 1n);
 *   const vcpu = conn.getVcpu(0);
 *   conn.start();
 *   for (;;) { const event = vcpu.wait(); ...; vcpu.resume(); }
 */
import { native } from '../native/index.js';
import type {
  CpuidEntry as GeneratedCpuidEntry,
  MainRequest as GeneratedMainRequest,
  MainResponse as GeneratedMainResponse,
} from '../protocol/gen/plugin.js';

export { Connection } from './connection.js';
export { MAX_HINT_DETAILS } from './connection-types.js';
export type {
  CallHint,
  IoEvent,
  IrqEvent,
  IrqRoute,
  MemoryOptions,
  MemorySlot,
  NetConfig,
  RegHint,
  VcpuOptions,
} from './connection-types.js';
export { GuestMemory } from './memory.js';
export { Vcpu } from './vcpu.js';
export type {
  HypervCallEvent,
  HypervSynicEvent,
  InitEvent,
  IoAccessEvent,
  MsrEntry,
  PausedEvent,
  VcpuEvent,
} from './vcpu-events.js';
export { PluginError, errnoCode, errnoDescription } from './errors.js';

// Protocol enums under friendly names.
export {
  AddressSpace,
  MainRequest_StateSet as VmStateSet,
  VcpuRequest_StateSet as VcpuStateSet,
} from '../protocol/gen/plugin.js';
/**
 * One CPUID leaf, as the protocol carries it: `function` (the leaf),
 * `hasIndex` and `index` (the sub-leaf, when the leaf has them), and the
 * values `eax`, `ebx`, `ecx`, `edx` that CPUID returns for it.
 */
export type CpuidEntry = GeneratedCpuidEntry;

/**
 * A request on a main connection, as ts-proto generates it from
 * src/protocol/plugin.proto: `{ message: { $case: 'reserveRange', reserveRange: {...} } }`.
 * For {@link Connection.request}, the way to send what the SDK has no method
 * for; docs/protocol.md describes every member.
 */
export type MainRequest = GeneratedMainRequest;
/** The answer to a {@link MainRequest}: `errnoValue` (0 or a positive errno) and the same `message` member. */
export type MainResponse = GeneratedMainResponse;

// Typed views over raw register bytes (getRegs()/setRegs() etc. take and give raw bytes).
export { DebugregsView, DtableView, RegsView, SEGMENT_NAMES, SegmentView, SregsView, type SegmentName } from '../kvm/views.js';
export { REG_NAMES, type RegName } from '../kvm/structs.js';

/** Kernel constants (capability numbers, struct sizes, ...) computed by the addon from <linux/kvm.h>. */
export function kvmConstants(): typeof native.constants {
  return native.constants;
}

/** Adds `value` to an eventfd's counter (e.g. signal the shutdown eventfd, raise an IrqEvent). */
export function eventfdWrite(fd: number, value = 1): void {
  native.eventfdWrite(fd, value);
}

/** Reads and clears an eventfd's counter (blocks until non-zero unless the fd is non-blocking: then -1). */
export function eventfdRead(fd: number): number | bigint {
  return native.eventfdRead(fd);
}

/** Closes a descriptor the SDK handed out (shutdown eventfd, tap fd, ...). */
export function closeFd(fd: number): void {
  native.close(fd);
}
