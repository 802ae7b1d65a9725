/**
 * The VM-wide kernel states that get_state and set_state read and write, by
 * the protocol's StateSet: the two PICs and the IOAPIC (KVM_GET/SET_IRQCHIP),
 * the PIT (KVM_GET/SET_PIT2) and the clock (KVM_GET/SET_CLOCK).
 */
import { C } from '../native/index.js';
import type { VmFd } from '../kvm/index.js';
import { MainRequest_StateSet } from '../protocol/gen/plugin.js';
import { errno, ErrnoError } from '../errno.js';

/** Getter and setter of one VM-wide kernel state, by protocol StateSet. */
export interface VmStateAccess {
  size: number;
  get(vm: VmFd): Uint8Array;
  set(vm: VmFd, bytes: Uint8Array): void;
}

const VM_STATE_SETS: ReadonlyMap<number, VmStateAccess> = new Map([
  [
    MainRequest_StateSet.PIC0,
    {
      size: C.SIZEOF_KVM_PIC_STATE,
      get: (vm) => vm.getIrqchip(C.KVM_IRQCHIP_PIC_MASTER),
      set: (vm, b) => vm.setIrqchip(C.KVM_IRQCHIP_PIC_MASTER, b),
    },
  ],
  [
    MainRequest_StateSet.PIC1,
    {
      size: C.SIZEOF_KVM_PIC_STATE,
      get: (vm) => vm.getIrqchip(C.KVM_IRQCHIP_PIC_SLAVE),
      set: (vm, b) => vm.setIrqchip(C.KVM_IRQCHIP_PIC_SLAVE, b),
    },
  ],
  [
    MainRequest_StateSet.IOAPIC,
    {
      size: C.SIZEOF_KVM_IOAPIC_STATE,
      get: (vm) => vm.getIrqchip(C.KVM_IRQCHIP_IOAPIC),
      set: (vm, b) => vm.setIrqchip(C.KVM_IRQCHIP_IOAPIC, b),
    },
  ],
  [MainRequest_StateSet.PIT, { size: C.SIZEOF_KVM_PIT_STATE2, get: (vm) => vm.getPit2(), set: (vm, b) => vm.setPit2(b) }],
  [MainRequest_StateSet.CLOCK, { size: C.SIZEOF_KVM_CLOCK_DATA, get: (vm) => vm.getClock(), set: (vm, b) => vm.setClock(b) }],
]);

/** The access to state set `set`; EINVAL for a set the protocol does not have. */
export function vmStateAccess(set: number): VmStateAccess {
  const access = VM_STATE_SETS.get(set);
  if (access === undefined) throw new ErrnoError(errno.EINVAL, `unknown VM state set ${set}`);
  return access;
}
