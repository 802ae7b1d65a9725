/**
 * The delimited-stream reader (src/protocol/framing.ts), which splits what
 * the SDK reads from a VCPU's host->plugin pipe into VcpuResponses: a
 * varint32 length, then that many bytes, any number of them per read and
 * any of them cut across reads. The bytes are made by protobuf's own writer.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { VcpuResponse } from '../src/protocol/gen/plugin.js';
import { DelimitedStream } from '../src/protocol/framing.js';

/** `payloads`, each length-delimited, one after another. */
function delimited(...payloads: Uint8Array[]): Uint8Array {
  const writer = new BinaryWriter();
  for (const payload of payloads) writer.bytes(payload);
  return writer.finish();
}

/** A payload of `size` bytes that differ from their neighbours. */
function payload(size: number, seed = 1): Uint8Array {
  return Uint8Array.from({ length: size }, (_, i) => (i * 7 + seed) & 0xff);
}

/** Every message `stream` has complete now. */
function drain(stream: DelimitedStream): number[][] {
  const out: number[][] = [];
  for (let next = stream.next(); next !== undefined; next = stream.next()) out.push([...next]);
  return out;
}

describe('DelimitedStream', () => {
  test('real VcpuResponses, several in one read, come out whole and in order', () => {
    const responses: VcpuResponse[] = [
      { errnoValue: 0, message: { $case: 'wait', wait: { exit: { $case: 'init', init: {} } } } },
      { errnoValue: 22, message: { $case: 'setState', setState: {} } },
      { errnoValue: 0, message: { $case: 'getMsrs', getMsrs: { entryData: [1n, 0xffff_ffff_ffff_ffffn] } } },
    ];
    const stream = new DelimitedStream();
    stream.push(delimited(...responses.map((r) => VcpuResponse.encode(r).finish())));
    const decoded = drain(stream).map((bytes) => VcpuResponse.decode(Uint8Array.from(bytes)));
    assert.deepEqual(decoded, responses);
    assert.equal(stream.empty, true);
  });

  test('a message cut anywhere, even inside its length, waits for the rest', () => {
    const message = payload(300); // a two-byte length (0xac 0x02)
    const bytes = delimited(message, payload(5, 9));
    for (let cut = 0; cut <= bytes.length; cut++) {
      const stream = new DelimitedStream();
      stream.push(bytes.subarray(0, cut));
      const early = drain(stream);
      stream.push(bytes.subarray(cut));
      const all = [...early, ...drain(stream)];
      assert.deepEqual(all, [[...message], [...payload(5, 9)]], `cut at ${cut}`);
      assert.equal(stream.empty, true, `cut at ${cut}`);
    }
  });

  test('one byte at a time', () => {
    const bytes = delimited(payload(1), payload(200, 3), payload(2));
    const stream = new DelimitedStream();
    const got: number[][] = [];
    for (const byte of bytes) {
      stream.push(Uint8Array.of(byte));
      got.push(...drain(stream));
    }
    assert.deepEqual(got, [[...payload(1)], [...payload(200, 3)], [...payload(2)]]);
  });

  test('an empty message is a message, not "more bytes needed"', () => {
    const stream = new DelimitedStream();
    stream.push(delimited(new Uint8Array(0), payload(3)));
    const first = stream.next();
    assert.ok(first !== undefined);
    assert.equal(first.length, 0);
    assert.deepEqual([...stream.next()!], [...payload(3)]);
    assert.equal(stream.next(), undefined);
  });

  test('push takes only `length` bytes, and copies them', () => {
    const chunk = delimited(payload(4));
    const padded = new Uint8Array(chunk.length + 3).fill(0xee);
    padded.set(chunk);
    const stream = new DelimitedStream();
    stream.push(padded, chunk.length);
    padded.fill(0); // the caller reuses its read buffer
    assert.deepEqual(drain(stream), [[...payload(4)]]);
    assert.equal(stream.empty, true, 'the padding was not taken');
  });

  test('grows for messages larger than its buffer, with bytes of earlier messages still pending', () => {
    const big = payload(100_000, 5);
    const bytes = delimited(payload(10), big, payload(20));
    const stream = new DelimitedStream();
    const got: number[][] = [];
    for (let at = 0; at < bytes.length; at += 4000) {
      stream.push(bytes.subarray(at, at + 4000));
      got.push(...drain(stream));
    }
    assert.deepEqual(
      got.map((m) => m.length),
      [10, 100_000, 20],
    );
    assert.deepEqual(got[1], [...big]);
  });

  test('a length longer than 32 bits is refused', () => {
    const stream = new DelimitedStream();
    stream.push(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x10)); // 2^32 + ...: a fifth byte above 0x0f
    assert.throws(() => stream.next(), RangeError);
    const largest = new DelimitedStream();
    largest.push(Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f)); // 2^32 - 1: valid, and not all there
    assert.equal(largest.next(), undefined);
  });
});
