/**
 * The typed KVM_RUN exit (src/kvm/exit.ts), decoded from a kvm_run that the
 * test fills in the kernel's way: the exits that real guests give are in
 * kvm.test.ts; these are the ones no guest here can cause on demand (a
 * failed VM entry, a shutdown, an exit reason the layer does not decode,
 * `rep outs` in one exit).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { C } from '../src/native/index.js';
import { ExitDecoder } from '../src/kvm/exit.js';

/** A kvm_run mapping of two pages, as the kernel lays it out: kvm_run, then the IO data page. */
function fakeRun(): { run: DataView; bytes: Uint8Array; decoder: ExitDecoder } {
  const buffer = new ArrayBuffer(2 * 4096);
  const run = new DataView(buffer);
  const bytes = new Uint8Array(buffer);
  return { run, bytes, decoder: new ExitDecoder(run, bytes) };
}

test('exits without data, and the ones with a reason or a sub-error', () => {
  const { run, decoder } = fakeRun();
  const kindOf = (reason: number): string => {
    run.setUint32(C.KVM_RUN_EXIT_REASON, reason, true);
    return decoder.decode().kind;
  };
  assert.equal(kindOf(C.KVM_EXIT_HLT), 'hlt');
  assert.equal(kindOf(C.KVM_EXIT_SHUTDOWN), 'shutdown');
  assert.equal(kindOf(C.KVM_EXIT_INTR), 'intr');

  run.setUint32(C.KVM_RUN_EXIT_REASON, C.KVM_EXIT_FAIL_ENTRY, true);
  run.setBigUint64(C.KVM_RUN_FAIL_ENTRY_REASON, 0x8000_0021n, true);
  assert.deepEqual(decoder.decode(), { kind: 'failEntry', reason: 0x8000_0021n });

  run.setUint32(C.KVM_RUN_EXIT_REASON, C.KVM_EXIT_INTERNAL_ERROR, true);
  run.setUint32(C.KVM_RUN_INTERNAL_SUBERROR, 1, true);
  assert.deepEqual(decoder.decode(), { kind: 'internalError', suberror: 1 });

  run.setUint32(C.KVM_RUN_EXIT_REASON, C.KVM_EXIT_HYPERV, true);
  assert.deepEqual(decoder.decode(), { kind: 'other', reason: C.KVM_EXIT_HYPERV });
});

test('an IO exit views its size * count bytes at data_offset; the view follows a new offset or length', () => {
  const { run, bytes, decoder } = fakeRun();
  run.setUint32(C.KVM_RUN_EXIT_REASON, C.KVM_EXIT_IO, true);
  run.setUint8(C.KVM_RUN_IO_DIRECTION, C.KVM_EXIT_IO_OUT);
  run.setUint8(C.KVM_RUN_IO_SIZE, 2);
  run.setUint16(C.KVM_RUN_IO_PORT, 0x3f8, true);
  run.setUint32(C.KVM_RUN_IO_COUNT, 3, true);
  run.setBigUint64(C.KVM_RUN_IO_DATA_OFFSET, 4096n, true);
  bytes.set([1, 2, 3, 4, 5, 6, 7], 4096);
  const first = decoder.decode();
  assert.deepEqual(
    { ...first, data: [...(first as { data: Uint8Array }).data] },
    {
      kind: 'io',
      direction: 'out',
      port: 0x3f8,
      size: 2,
      count: 3,
      data: [1, 2, 3, 4, 5, 6],
    },
  );

  // Writing an IN exit's data writes kvm_run.
  run.setUint8(C.KVM_RUN_IO_DIRECTION, C.KVM_EXIT_IO_IN);
  run.setUint32(C.KVM_RUN_IO_COUNT, 1, true);
  run.setBigUint64(C.KVM_RUN_IO_DATA_OFFSET, 4100n, true);
  const second = decoder.decode();
  assert.ok(second.kind === 'io');
  assert.equal(second, first, 'the exit object is reused');
  assert.equal(second.direction, 'in');
  assert.equal(second.data.length, 2);
  second.data[0] = 0xaa;
  assert.equal(bytes[4100], 0xaa);
});

test('an MMIO exit views `len` bytes of kvm_run.mmio.data', () => {
  const { run, bytes, decoder } = fakeRun();
  run.setUint32(C.KVM_RUN_EXIT_REASON, C.KVM_EXIT_MMIO, true);
  run.setBigUint64(C.KVM_RUN_MMIO_PHYS_ADDR, 0xfee0_0030n, true);
  run.setUint32(C.KVM_RUN_MMIO_LEN, 4, true);
  run.setUint8(C.KVM_RUN_MMIO_IS_WRITE, 0);
  const exit = decoder.decode();
  assert.ok(exit.kind === 'mmio');
  assert.equal(exit.address, 0xfee0_0030n);
  assert.equal(exit.isWrite, false);
  assert.equal(exit.data.length, 4);
  exit.data.set([9, 8, 7, 6]);
  assert.deepEqual([...bytes.subarray(C.KVM_RUN_MMIO_DATA, C.KVM_RUN_MMIO_DATA + 4)], [9, 8, 7, 6]);
});
