/**
 * PipeReader (src/protocol/pipe-reader.ts), which the SDK's VCPUs read their
 * pipes with (the host's native VCPU threads do the same in
 * native/vcpu/conn.c): real pipes, and a worker thread that writes late, so
 * that every read has to wait.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { C, native } from '../src/native/index.js';
import { PipeReader } from '../src/protocol/pipe-reader.js';

/** Writes `text` to `fd` from another thread after `delayMs`; resolves once the thread is gone. */
function writeLater(fd: number, text: string, delayMs: number): Promise<void> {
  const worker = new Worker(
    `const { workerData } = require('node:worker_threads');
     import(workerData.nativeUrl).then(({ native }) => {
       Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.delayMs);
       const bytes = Buffer.from(workerData.text);
       native.write(workerData.fd, bytes, 0, bytes.length);
     });`,
    { eval: true, workerData: { fd, text, delayMs, nativeUrl: new URL('../src/native/index.js', import.meta.url).href } },
  );
  return new Promise((resolve, reject) => {
    worker.once('error', reject);
    worker.once('exit', () => resolve());
  });
}

function isNonBlocking(fd: number): boolean {
  return (native.fcntl(fd, C.F_GETFL, 0) & C.O_NONBLOCK) !== 0;
}

describe('PipeReader', () => {
  test('with a budget: the fd becomes non-blocking, and data that comes after the spin is still read', async () => {
    const [r, w] = native.pipe2(C.O_CLOEXEC);
    try {
      const reader = new PipeReader(r, 100);
      assert.equal(isNonBlocking(r), true);
      const written = writeLater(w, 'late', 200);
      const buffer = new Uint8Array(16);
      const n = reader.read(buffer, 0, buffer.length);
      assert.equal(Buffer.from(buffer.subarray(0, n)).toString(), 'late');
      await written;
    } finally {
      native.close(r);
      native.close(w);
    }
  });

  test('without a budget: a non-blocking fd (another handle on the pipe spins) is waited out, not read as -1', async () => {
    const [r, w] = native.pipe2(C.O_CLOEXEC);
    try {
      new PipeReader(r, 100); // another reader on the same open file: it sets O_NONBLOCK
      const reader = new PipeReader(r, 0);
      assert.equal(isNonBlocking(r), true, 'a reader without a budget must not take O_NONBLOCK from the other');
      const written = writeLater(w, 'x', 200);
      const buffer = new Uint8Array(16);
      assert.equal(reader.read(buffer, 0, buffer.length), 1);
      assert.equal(buffer[0], 'x'.charCodeAt(0));
      await written;
    } finally {
      native.close(r);
      native.close(w);
    }
  });

  test('end of file reads as 0', () => {
    const [r, w] = native.pipe2(C.O_CLOEXEC);
    native.close(w);
    try {
      assert.equal(new PipeReader(r, 100).read(new Uint8Array(4), 0, 4), 0);
    } finally {
      native.close(r);
    }
  });
});
