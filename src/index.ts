/**
 * plugvisor as a library: run a plugin-driven VM (`runPlugin`), or use the
 * KVM layer directly. Plugins import the SDK from 'plugvisor/plugin'.
 */
export { runPlugin, validateRunOptions, RunSetupError, type RunOptions, type RunOutcome } from './host/run.js';
export type { ChildStatus as PluginStatus } from './child.js';
export type { LogLevel, LogSink } from './host/log.js';
export type { LineSink } from './host/lines.js';
export type { NetOptions } from './host/net.js';
export type { SandboxConfig, BindMount, GidMap } from './sandbox/options.js';
export { Kvm, VmFd, VcpuFd } from './kvm/index.js';
export type {
  CpuidEntry2,
  FailEntryExit,
  GsiRoute,
  InternalErrorExit,
  IoEventFd,
  IoExit,
  IrqFd,
  MmioExit,
  OtherExit,
  PlainExit,
  UserMemoryRegion,
  VcpuExit,
} from './kvm/index.js';
