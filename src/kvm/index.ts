/**
 * The KVM layer: thin typed wrappers, one method per ioctl, over /dev/kvm, a
 * VM and its VCPUs, plus the struct layouts and views they use.
 */
export { Kvm } from './kvm.js';
export { VmFd, type GsiRoute, type IoEventFd, type IrqFd, type UserMemoryRegion } from './vm.js';
export { VcpuFd, type IoExit, type MmioExit } from './vcpu.js';
export * from './structs.js';
export * from './views.js';
