/**
 * Reading a VCPU pipe with a bounded spin before sleeping.
 *
 * A VCPU exit is a round trip between two processes. When the reader sleeps
 * in read(2), every message costs a wake-up of a thread on another core,
 * which on virtualized hosts is most of the round trip. After sending its
 * half of an exchange, each side expects the answer within microseconds, so
 * it first polls the pipe without blocking for a short budget, and only then
 * sleeps in poll(2). An idle VM therefore costs nothing: a side spins at most
 * one budget per message it sent.
 *
 * The budget is PLUGVISOR_SPIN_US microseconds (default below; 0 disables
 * spinning). Both the host (which hands it to its native VCPU threads,
 * native/vcpu/conn.c) and the TypeScript SDK (PipeReader) read it, each in
 * its own process.
 */
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { C, native } from '../native/index.js';

/**
 * Why 1 ms: on virtualized hosts a wake-up costs far more than the answer
 * takes (nested KVM: a sleeping reader makes the writer's write(2) take
 * ~40-60 µs, and the C pipe round trip goes from ~15 µs spinning to ~90 µs
 * sleeping). A budget shorter than the other side's worst turnaround is
 * self-defeating: a miss makes the next write slow, which makes the other
 * side miss too, and the pair can stay in that state for thousands of exits
 * (JIT warm-up does exactly this with a 50 µs budget). The bound per message
 * still keeps an idle VM free.
 */
export const DEFAULT_SPIN_US = 1000;

/**
 * The budget of a side that runs one spinning thread per VCPU (the host's
 * VCPU threads; the C client library applies the same rule to a plugin's
 * threads). Spinning pays only while every VCPU thread still has a core beside
 * the spinners: with as many VCPUs as cores, spinning threads take the cores
 * that the other side needs to produce the very message they wait for.
 */
export function spinBudgetForVcpus(vcpuCount: number, env: NodeJS.ProcessEnv = process.env): number {
  return vcpuCount < availableParallelism() ? spinBudgetUs(env) : 0;
}

/** The spin budget from the environment, in microseconds. */
export function spinBudgetUs(env: NodeJS.ProcessEnv = process.env): number {
  const value = env['PLUGVISOR_SPIN_US'];
  if (value === undefined || value === '') return DEFAULT_SPIN_US;
  const n = Number(value);
  return Number.isFinite(n) && n >= 0 ? n : DEFAULT_SPIN_US;
}

export class PipeReader {
  private readonly spinMs: number;

  /**
   * With a budget, puts `fd` (a read end that only this process reads) in
   * non-blocking mode. O_NONBLOCK belongs to the open file, which every
   * duplicate of the fd shares; only readers look at it, and each reader
   * copes with it (see read). Without a budget the fd is left as it is:
   * blocking, as in crosvm, unless another reader here spins.
   */
  constructor(
    readonly fd: number,
    spinUs: number,
  ) {
    this.spinMs = spinUs / 1000;
    if (this.spinMs > 0) native.fcntl(fd, C.F_SETFL, native.fcntl(fd, C.F_GETFL, 0) | C.O_NONBLOCK);
  }

  /**
   * Reads what is there (at least one byte, or 0 at end of file), spinning,
   * then sleeping, until then. Without a budget the fd may still be
   * non-blocking: another handle on the same pipe in this process (another
   * connection's VCPU objects) may spin, so EAGAIN is always waited out.
   */
  read(buffer: Uint8Array, offset: number, length: number): number {
    let n = native.read(this.fd, buffer, offset, length);
    if (n >= 0) return n;
    const deadline = performance.now() + this.spinMs;
    while (performance.now() < deadline) {
      n = native.read(this.fd, buffer, offset, length);
      if (n >= 0) return n;
    }
    for (;;) {
      native.poll(this.fd, C.POLLIN, -1);
      n = native.read(this.fd, buffer, offset, length);
      if (n >= 0) return n;
    }
  }
}
