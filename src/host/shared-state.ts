/**
 * State shared between the main thread and the VCPU threads through one
 * SharedArrayBuffer: per-VCPU pause requests and thread ids (for kicks), the
 * VM-wide shutdown flag, and the generation of the VCPU configuration
 * (reserved ranges and call hint). The configuration itself travels as a
 * message on each VCPU's MessagePort; a VCPU compares one integer per exit and
 * drains its port only when the generation moved.
 */
import type { MainRequest_SetCallHint } from '../protocol/gen/plugin.js';
import type { RangeTable } from './ranges.js';

/** What every VCPU needs to dispatch exits; replaced whole on each change. */
export interface VcpuConfig {
  ranges: RangeTable;
  /** The one call hint, or null when none is set. */
  callHint: MainRequest_SetCallHint | null;
}

const GENERATION = 0;
const SHUTDOWN = 1;
const HEADER_INTS = 2;
// Per VCPU: [kernel thread id, pause pending]
const TID = 0;
const PAUSE = 1;
const INTS_PER_VCPU = 2;

export class SharedVcpuState {
  private readonly ints: Int32Array;
  private readonly pauseUsers: BigUint64Array;

  static create(vcpuCount: number): SharedVcpuState {
    const bytes = 8 * vcpuCount + 4 * (HEADER_INTS + INTS_PER_VCPU * vcpuCount);
    return new SharedVcpuState(new SharedArrayBuffer(bytes), vcpuCount);
  }

  constructor(
    readonly buffer: SharedArrayBuffer,
    readonly vcpuCount: number,
  ) {
    this.pauseUsers = new BigUint64Array(buffer, 0, vcpuCount);
    this.ints = new Int32Array(buffer, 8 * vcpuCount, HEADER_INTS + INTS_PER_VCPU * vcpuCount);
  }

  get configGeneration(): number {
    return Atomics.load(this.ints, GENERATION);
  }

  /** Called after the new configuration was posted to every VCPU's port. */
  bumpConfigGeneration(): void {
    Atomics.add(this.ints, GENERATION, 1);
  }

  requestShutdown(): void {
    Atomics.store(this.ints, SHUTDOWN, 1);
  }

  get shutdownRequested(): boolean {
    return Atomics.load(this.ints, SHUTDOWN) !== 0;
  }

  setThreadId(vcpu: number, tid: number): void {
    Atomics.store(this.ints, this.slot(vcpu, TID), tid);
  }

  /** The VCPU thread's kernel id, or 0 before it has started. */
  threadId(vcpu: number): number {
    return Atomics.load(this.ints, this.slot(vcpu, TID));
  }

  /** Records a pause; the caller then kicks the VCPU. A later request overwrites the user value. */
  requestPause(vcpu: number, user: bigint): void {
    this.pauseUsers[vcpu] = user;
    Atomics.store(this.ints, this.slot(vcpu, PAUSE), 1);
  }

  isPausePending(vcpu: number): boolean {
    return Atomics.load(this.ints, this.slot(vcpu, PAUSE)) !== 0;
  }

  /** Takes the pending pause of `vcpu`: its user value, or undefined if none. */
  takePause(vcpu: number): bigint | undefined {
    if (Atomics.exchange(this.ints, this.slot(vcpu, PAUSE), 0) === 0) return undefined;
    return this.pauseUsers[vcpu];
  }

  private slot(vcpu: number, field: number): number {
    return HEADER_INTS + INTS_PER_VCPU * vcpu + field;
  }
}
