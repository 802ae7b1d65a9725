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
import {
  createProgramMemory,
  expectReport,
  finish,
  pluginMain,
  realModeProgram,
  startRealMode,
  waitUntil,
} from '../support/test-plugin.js';

const WORKERS = 3;
const CLOSE_AFTER = 20;
const MORE_AFTER_CLOSE = 30;
const GUEST_PORT = 0xb00n;
// Shared Int32Array: [stop, then per worker: rounds, failures, closed, done]
const STOP = 0;
const slot = (worker: number, field: number): number => 1 + worker * 4 + field;
const ROUNDS = 0;
const FAILURES = 1;
const CLOSED = 2;
const DONE = 3;

interface WorkerInput {
  index: number;
  fd: number;
  shared: SharedArrayBuffer;
}

function workerMain(input: WorkerInput): void {
  const state = new Int32Array(input.shared);
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
    Atomics.add(state, slot(input.index, FAILURES), 1);
  };
  try {
    while (Atomics.load(state, STOP) === 0) {
      const got = [
        errnoOf(() => conn.reserveRange(AddressSpace.IOPORT, port, 1n)),
        errnoOf(() => conn.reserveRange(AddressSpace.IOPORT, port, 1n)),
        errnoOf(() => conn.unreserveRange(AddressSpace.IOPORT, port)),
        errnoOf(() => conn.unreserveRange(AddressSpace.IOPORT, port)),
      ].join(',');
      const expected = '0,1,0,2'; // ok, EPERM, ok, ENOENT
      if (got !== expected) fail(`round answers ${got}, expected ${expected}`);
      if (!conn.checkExtension(irqchip)) fail('check_extension(IRQCHIP) is false');
      const rounds = Atomics.add(state, slot(input.index, ROUNDS), 1) + 1;
      const othersBusy = [1, 2].every((w) => Atomics.load(state, slot(w, ROUNDS)) >= CLOSE_AFTER);
      if (input.index === 0 && rounds >= CLOSE_AFTER && othersBusy) {
        conn.close();
        Atomics.store(state, slot(0, CLOSED), 1);
        break;
      }
    }
  } catch (e) {
    fail(String((e as Error)?.stack ?? e));
  }
  Atomics.store(state, slot(input.index, DONE), 1);
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
    const conn = Connection.connect();
    conn.reserveRange(AddressSpace.IOPORT, GUEST_PORT, 1n);
    createProgramMemory(conn, realModeProgram(GUEST));
    const vcpu = conn.getVcpu(0);
    const shared = new SharedArrayBuffer(4 * (1 + 4 * WORKERS));
    const state = new Int32Array(shared);
    for (let index = 0; index < WORKERS; index++) {
      const input: WorkerInput = { index, fd: conn.newConnection().fd, shared };
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
      if (exitsAtClose < 0 && Atomics.load(state, slot(0, CLOSED)) === 1) {
        exitsAtClose = exits;
        roundsAtClose = [1, 2].map((w) => Atomics.load(state, slot(w, ROUNDS)));
      }
      const enough =
        exitsAtClose >= 0 && [1, 2].every((w, i) => Atomics.load(state, slot(w, ROUNDS)) >= roundsAtClose[i] + MORE_AFTER_CLOSE);
      if (enough || Date.now() > deadline) break;
      vcpu.resume();
    }
    // The main connection still answers.
    const mainStillWorks = conn.checkExtension(kvmConstants().KVM_CAP_IRQCHIP);
    Atomics.store(state, STOP, 1);
    waitUntil('the workers to stop', () => [0, 1, 2].every((w) => Atomics.load(state, slot(w, DONE)) === 1));
    const workers = [0, 1, 2].map((w) => ({
      rounds: Atomics.load(state, slot(w, ROUNDS)),
      failures: Atomics.load(state, slot(w, FAILURES)),
      closed: Atomics.load(state, slot(w, CLOSED)) === 1,
    }));
    const report: VcpuConnectionsReport = { workers, roundsAtClose, exits, exitsAtClose, ordered, mainStillWorks };
    finish(report);
  });
}
