/**
 * What {@link Vcpu.wait} returns: why the VCPU stopped, as the SDK gives it
 * to a plugin, made from the host's `wait` answers.
 */
import type { AddressSpace, VcpuResponse_Wait } from '../protocol/gen/plugin.js';
import { errno as Errno } from '../errno.js';
import { PluginError } from './errors.js';
// eslint-disable-next-line @typescript-eslint/no-unused-vars -- named by {@link} in the docs
import type { Vcpu } from './vcpu.js';

/** The VCPU stopped before running for the first time; set it up, then resume. */
export interface InitEvent {
  /** What happened. */
  kind: 'init';
}

/** An access to a reserved range. */
export interface IoAccessEvent {
  /** What happened. */
  kind: 'io';
  /** The address space of the access. */
  space: AddressSpace;
  /** The port or guest physical address. */
  address: bigint;
  /** True when the guest wrote, false when it read. */
  isWrite: boolean;
  /**
   * True for a write to an async-write range: the VCPU did not stop, so do
   * not resume (resume() is a no-op for such events).
   */
  noResume: boolean;
  /**
   * For a write, the bytes written. For a read, zeros of the access size:
   * fill them in (or pass the value to resume()).
   */
  data: Uint8Array;
  /** Raw struct kvm_regs, present when the call hint matched. */
  regs?: Uint8Array;
  /** Raw struct kvm_sregs, present when the matching hint detail asked for them. */
  sregs?: Uint8Array;
  /** Raw struct kvm_debugregs, present when the matching hint detail asked for them. */
  debugregs?: Uint8Array;
}

/** The VCPU stopped because of Connection.pauseVcpus. */
export interface PausedEvent {
  /** What happened. */
  kind: 'paused';
  /** The `user` value given to pauseVcpus. */
  user: bigint;
}

/** A Hyper-V hypercall: set `result` before resume(). */
export interface HypervCallEvent {
  /** What happened. */
  kind: 'hypervCall';
  /** The hypercall input value (call code and flags). */
  input: bigint;
  /** The two parameters (input and output GPAs, or fast-call values). */
  params: [bigint, bigint];
  /** The hypercall's result, sent with the next resume() (default 0). */
  result: bigint;
}

/** A Hyper-V SynIC MSR write. */
export interface HypervSynicEvent {
  /** What happened. */
  kind: 'hypervSynic';
  /** The SynIC MSR the guest wrote. */
  msr: number;
  /** The SynIC control value. */
  control: bigint;
  /** The event flags page's address. */
  evtPage: bigint;
  /** The message page's address. */
  msgPage: bigint;
}

/** Why a VCPU stopped, as {@link Vcpu.wait} returns it: switch on `kind`. */
export type VcpuEvent = InitEvent | IoAccessEvent | PausedEvent | HypervCallEvent | HypervSynicEvent;

/** One MSR for setMsrs. */
export interface MsrEntry {
  /** The MSR's index. */
  index: number;
  /** Its value. */
  data: bigint;
}

/** The event of a wait answer from the host to VCPU `id`. */
export function eventOf(wait: VcpuResponse_Wait, id: number): VcpuEvent {
  const exit = wait.exit;
  switch (exit?.$case) {
    case 'init':
      return { kind: 'init' };
    case 'io': {
      const io = exit.io;
      const event: IoAccessEvent = {
        kind: 'io',
        space: io.space,
        address: io.address,
        isWrite: io.isWrite,
        noResume: io.noResume,
        data: io.data,
      };
      if (io.regs.length > 0) event.regs = io.regs;
      if (io.sregs.length > 0) event.sregs = io.sregs;
      if (io.debugregs.length > 0) event.debugregs = io.debugregs;
      return event;
    }
    case 'user':
      return { kind: 'paused', user: exit.user.user };
    case 'hypervCall': {
      const c = exit.hypervCall;
      return { kind: 'hypervCall', input: c.input, params: [c.params0, c.params1], result: 0n };
    }
    case 'hypervSynic': {
      const s = exit.hypervSynic;
      return { kind: 'hypervSynic', msr: s.msr, control: s.control, evtPage: s.evtPage, msgPage: s.msgPage };
    }
    default:
      throw new PluginError('wait', Errno.EPROTO, `vcpu ${id}: wait without a known exit reason`, { transport: true });
  }
}
