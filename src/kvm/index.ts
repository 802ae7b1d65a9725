/**
 * The KVM layer: thin typed wrappers, one method per ioctl, over /dev/kvm, a
 * VM and its VCPUs, plus the struct layouts and views they use.
 */
export { Kvm } from './kvm.js';
export { VmFd, type GsiRoute, type IoEventFd, type IrqFd, type UserMemoryRegion } from './vm.js';
export { VcpuFd } from './vcpu.js';
export type { FailEntryExit, InternalErrorExit, IoExit, MmioExit, OtherExit, PlainExit, VcpuExit } from './exit.js';
export * from './structs.js';
export * from './views.js';
