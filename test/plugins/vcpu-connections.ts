#!/usr/bin/env node
/**
 * Test plugin: several connections used at once. The main thread makes three
 * connections with new_connection and hands each to a worker_thread
 * (Connection.fromFd). Each worker loops over requests on its own port:
 * reserve (ok), reserve again (EPERM), unreserve (ok), unreserve again
 * (ENOENT), check_extension(IRQCHIP) (true). Meanwhile VCPU 0 runs a guest
 * that keeps writing a reserved port, and the main thread answers it. Worker
 * 0 closes its connection once every worker has done a few rounds; the other workers, the main
 * connection and the VCPU must go on working. Progress and failures are
 * shared through a SharedArrayBuffer (the main thread never yields to its
 * event loop). Prints one JSON line.
 */
import { writeSync } from 'node:fs';
import { Worker, isMainThread, workerData } from 'node:worker_threads';
import { AddressSpace, Connection, PluginError, kvmConstants } from '../../src/plugin/index.js';
import type { VcpuConnectionsReport } from '../support/reports.js';
import { connectWithProgram, expectReport, finish, pluginMain, startRealMode, waitUntil } from '../support/test-plugin.js';

const WORKERS = 3;
const CLOSE_AFTER = 20;
const MORE_AFTER_CLOSE = 30;
const GUEST_PORT = 0xb00n;
/** What each worker counts in the shared state ({@link SharedState}). */
const FIELDS = ['rounds', 'failures', 'closed', 'done'] as const;
type Field = (typeof FIELDS)[number];

/**
 * What the threads share (the main thread never yields to its event loop):
 * one Int32Array of a stop flag, then each worker's {@link FIELDS}.
 */
class SharedState {
  private readonly words: Int32Array;

  constructor(readonly buffer = new SharedArrayBuffer(4 * (1 + FIELDS.length * WORKERS))) {
    this.words = new Int32Array(buffer);
  }

  get(worker: number, field: Field): number {
    return Atomics.load(this.words, this.at(worker, field));
  }

  set(worker: number, field: Field, value: number): void {
    Atomics.store(this.words, this.at(worker, field), value);
  }

  /** Adds 1 to a field; returns its new value. */
  bump(worker: number, field: Field): number {
    return Atomics.add(this.words, this.at(worker, field), 1) + 1;
  }

  get stopped(): boolean {
    return Atomics.load(this.words, 0) !== 0;
  }

  stop(): void {
    Atomics.store(this.words, 0, 1);
  }

  private at(worker: number, field: Field): number {
    return 1 + worker * FIELDS.length + FIELDS.indexOf(field);
  }
}

interface WorkerInput {
  index: number;
  fd: number;
  shared: SharedArrayBuffer;
}

function workerMain(input: WorkerInput): void {
  const state = new SharedState(input.shared);
  const conn = Connection.fromFd(input.fd);
  const port = 0xa00n + BigInt(input.index);
  const irqchip = kvmConstants().KVM_CAP_IRQCHIP;
  const errnoOf = (f: () => void): number => {
    try {
      f();
      return 0;
    } catch (e) {
      if (e instanceof PluginError && !e.transport) return e.errno;
      throw e;
    }
  };
  const fail = (what: string): void => {
    writeSync(2, `worker ${input.index}: ${what}\n`);
    state.bump(input.index, 'failures');
  };
  try {
    while (!state.stopped) {
      const got = [
        errnoOf(() => conn.reserveRange(AddressSpace.IOPORT, port, 1n)),
        errnoOf(() => conn.reserveRange(AddressSpace.IOPORT, port, 1n)),
        errnoOf(() => conn.unreserveRange(AddressSpace.IOPORT, port)),
        errnoOf(() => conn.unreserveRange(AddressSpace.IOPORT, port)),
      ].join(',');
      const expected = '0,1,0,2'; // ok, EPERM, ok, ENOENT
      if (got !== expected) fail(`round answers ${got}, expected ${expected}`);
      if (!conn.checkExtension(irqchip)) fail('check_extension(IRQCHIP) is false');
      const rounds = state.bump(input.index, 'rounds');
      const othersBusy = [1, 2].every((w) => state.get(w, 'rounds') >= CLOSE_AFTER);
      if (input.index === 0 && rounds >= CLOSE_AFTER && othersBusy) {
        conn.close();
        state.set(0, 'closed', 1);
        break;
      }
    }
  } catch (e) {
    fail(String((e as Error)?.stack ?? e));
  }
  state.set(input.index, 'done', 1);
}

const GUEST = `
  mov dx, ${GUEST_PORT}
  xor eax, eax
.l:
  inc eax
  out dx, eax
  jmp .l
`;

if (!isMainThread) {
  workerMain(workerData as WorkerInput);
} else {
  pluginMain(() => {
    const { conn } = connectWithProgram({ body: GUEST }, [GUEST_PORT]);
    const vcpu = conn.getVcpu(0);
    const state = new SharedState();
    for (let index = 0; index < WORKERS; index++) {
      const input: WorkerInput = { index, fd: conn.newConnection().fd, shared: state.buffer };
      new Worker(new URL(import.meta.url), { workerData: input });
    }
    conn.start();
    startRealMode(vcpu);

    // Serve the guest while the workers work.
    let exits = 0;
    let last = 0n;
    let ordered = true;
    let exitsAtClose = -1;
    let roundsAtClose: number[] = [];
    const deadline = Date.now() + 20_000;
    for (;;) {
      const value = expectReport(vcpu, GUEST_PORT, { resume: false });
      if (value !== last + 1n) ordered = false;
      last = value;
      exits++;
      if (exitsAtClose < 0 && state.get(0, 'closed') === 1) {
        exitsAtClose = exits;
        roundsAtClose = [1, 2].map((w) => state.get(w, 'rounds'));
      }
      const enough = exitsAtClose >= 0 && [1, 2].every((w, i) => state.get(w, 'rounds') >= roundsAtClose[i] + MORE_AFTER_CLOSE);
      if (enough || Date.now() > deadline) break;
      vcpu.resume();
    }
    // The main connection still answers.
    const mainStillWorks = conn.checkExtension(kvmConstants().KVM_CAP_IRQCHIP);
    state.stop();
    waitUntil('the workers to stop', () => [0, 1, 2].every((w) => state.get(w, 'done') === 1));
    const workers = [0, 1, 2].map((w) => ({
      rounds: state.get(w, 'rounds'),
      failures: state.get(w, 'failures'),
      closed: state.get(w, 'closed') === 1,
    }));
    const report: VcpuConnectionsReport = { workers, roundsAtClose, exits, exitsAtClose, ordered, mainStillWorks };
    finish(report);
  });
}
