/**
 * The reserved-range table (src/host/ranges.ts) on its own: the protocol's
 * rules for reserve_range (overlaps, unreserving, ranges that would pass the
 * end of 64-bit addresses) and the sorted view the VCPU configuration is
 * encoded from. No KVM: real runs are in protocol-vm.test.ts (robustness)
 * and host.test.ts (wire errors).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { AddressSpace } from '../src/protocol/gen/plugin.js';
import { type KnownAddressSpace, ReservedRanges, wrapsPastU64 } from '../src/host/ranges.js';

const E = constants.errno;
const U64_MAX = (1n << 64n) - 1n;

/** The table's ranges of `space` as [start, end, asyncWrite] triples. */
function table(ranges: ReservedRanges, space: KnownAddressSpace): [bigint, bigint, boolean][] {
  return ranges.of(space).map((r) => [r.start, r.end, r.asyncWrite]);
}

describe('ReservedRanges', () => {
  test('keeps each space sorted by start, whatever the order of the requests', () => {
    const ranges = new ReservedRanges();
    assert.equal(ranges.reserve(AddressSpace.IOPORT, 0x300n, 0x10n, false), 0);
    assert.equal(ranges.reserve(AddressSpace.IOPORT, 0x100n, 0x10n, true), 0);
    assert.equal(ranges.reserve(AddressSpace.IOPORT, 0x200n, 1n, false), 0);
    assert.deepEqual(table(ranges, AddressSpace.IOPORT), [
      [0x100n, 0x110n, true],
      [0x200n, 0x201n, false],
      [0x300n, 0x310n, false],
    ]);
    assert.deepEqual(table(ranges, AddressSpace.MMIO), []);
  });

  test('refuses (EPERM) a start inside a range and a range over another start; ranges may touch', () => {
    const ranges = new ReservedRanges();
    assert.equal(ranges.reserve(AddressSpace.MMIO, 0x1000n, 0x1000n, false), 0);
    assert.equal(ranges.reserve(AddressSpace.MMIO, 0x1fffn, 1n, false), E.EPERM, 'starts at its last address');
    assert.equal(ranges.reserve(AddressSpace.MMIO, 0x1000n, 1n, false), E.EPERM, 'the same start');
    assert.equal(ranges.reserve(AddressSpace.MMIO, 0x800n, 0x801n, false), E.EPERM, 'covers its first address');
    assert.equal(ranges.reserve(AddressSpace.MMIO, 0x800n, 0x2000n, false), E.EPERM, 'contains it');
    assert.equal(ranges.reserve(AddressSpace.MMIO, 0x800n, 0x800n, false), 0, 'ends where it starts');
    assert.equal(ranges.reserve(AddressSpace.MMIO, 0x2000n, 0x10n, false), 0, 'starts where it ends');
    assert.deepEqual(table(ranges, AddressSpace.MMIO), [
      [0x800n, 0x1000n, false],
      [0x1000n, 0x2000n, false],
      [0x2000n, 0x2010n, false],
    ]);
  });

  test('the two address spaces are separate', () => {
    const ranges = new ReservedRanges();
    assert.equal(ranges.reserve(AddressSpace.IOPORT, 0x60n, 4n, false), 0);
    assert.equal(ranges.reserve(AddressSpace.MMIO, 0x60n, 4n, true), 0);
    assert.deepEqual(table(ranges, AddressSpace.IOPORT), [[0x60n, 0x64n, false]]);
    assert.deepEqual(table(ranges, AddressSpace.MMIO), [[0x60n, 0x64n, true]]);
  });

  test('length 0 unreserves the range that starts there, and only that one (else ENOENT)', () => {
    const ranges = new ReservedRanges();
    ranges.reserve(AddressSpace.IOPORT, 0x100n, 0x10n, false);
    ranges.reserve(AddressSpace.IOPORT, 0x200n, 0x10n, false);
    assert.equal(ranges.reserve(AddressSpace.IOPORT, 0x108n, 0n, false), E.ENOENT, 'inside a range is not its start');
    assert.equal(ranges.reserve(AddressSpace.MMIO, 0x100n, 0n, false), E.ENOENT, 'another space');
    assert.equal(ranges.reserve(AddressSpace.IOPORT, 0x100n, 0n, false), 0);
    assert.deepEqual(table(ranges, AddressSpace.IOPORT), [[0x200n, 0x210n, false]]);
    assert.equal(ranges.reserve(AddressSpace.IOPORT, 0x100n, 0n, false), E.ENOENT, 'already gone');
    assert.equal(ranges.reserve(AddressSpace.IOPORT, 0x100n, 0x10n, false), 0, 'free again');
  });

  test('a range may end at the last address but not reach 2^64 (EINVAL); a refusal changes nothing', () => {
    const ranges = new ReservedRanges();
    assert.equal(ranges.reserve(AddressSpace.MMIO, U64_MAX - 0xfn, 0x10n, false), E.EINVAL);
    assert.equal(ranges.reserve(AddressSpace.MMIO, 1n, U64_MAX, false), E.EINVAL);
    assert.equal(ranges.reserve(AddressSpace.MMIO, 1n << 63n, 1n << 63n, false), E.EINVAL);
    assert.deepEqual(table(ranges, AddressSpace.MMIO), []);
    assert.equal(ranges.reserve(AddressSpace.MMIO, U64_MAX - 0xfn, 0xfn, false), 0);
    assert.deepEqual(table(ranges, AddressSpace.MMIO), [[U64_MAX - 0xfn, U64_MAX, false]]);
  });
});

describe('wrapsPastU64', () => {
  test('is true exactly when start + length passes 2^64 - 1', () => {
    assert.equal(wrapsPastU64(0n, U64_MAX), false);
    assert.equal(wrapsPastU64(U64_MAX, 0n), false);
    assert.equal(wrapsPastU64(U64_MAX, 1n), true);
    assert.equal(wrapsPastU64(U64_MAX - 3n, 3n), false);
    assert.equal(wrapsPastU64(U64_MAX - 3n, 4n), true);
  });
});
