/**
 * Reserved address ranges: the IO ports and MMIO addresses whose accesses the
 * plugin handles. The main thread owns the authoritative {@link ReservedRanges};
 * VCPU threads receive {@link RangeTable} snapshots (plain data, cheap to clone
 * into a worker) and look addresses up on every IO/MMIO exit.
 */
import { errno } from '../errno.js';

export const IOPORT = 0;
export const MMIO = 1;
export type Space = typeof IOPORT | typeof MMIO;

export interface Reservation {
  start: bigint;
  /** Exclusive end, start + length. */
  end: bigint;
  asyncWrite: boolean;
}

/** Sorted, non-overlapping reservations per address space, indexed by space. */
export type RangeTable = [Reservation[], Reservation[]];

const U64_MAX = (1n << 64n) - 1n;

/**
 * True when [start, start + length) does not fit in 64-bit addresses: when
 * start + length overflows a u64, as the protocol counts (so a range may end
 * at the last address, 2^64 - 1, but not reach 2^64). The values are exact
 * bigints (protobuf u64 fields decode unsigned), so the sum never wraps here.
 */
export function wrapsPastU64(start: bigint, length: bigint): boolean {
  return start + length > U64_MAX;
}

export class ReservedRanges {
  private readonly table: RangeTable = [[], []];

  /**
   * Reserves [start, start + length), or with length 0 unreserves the range
   * that starts at `start`. Returns 0 or the errno of the protocol's rules.
   */
  reserve(space: Space, start: bigint, length: bigint, asyncWrite: boolean): number {
    const ranges = this.table[space];
    if (length === 0n) {
      const index = ranges.findIndex((r) => r.start === start);
      if (index < 0) return errno.ENOENT;
      ranges.splice(index, 1);
      return 0;
    }
    if (wrapsPastU64(start, length)) return errno.EINVAL;
    const end = start + length;
    // The protocol's overlap rule: the new start may not lie inside an
    // existing range, and the new range may not cover an existing start.
    for (const r of ranges) {
      if (start >= r.start && start < r.end) return errno.EPERM;
      if (r.start >= start && r.start < end) return errno.EPERM;
    }
    const index = ranges.findIndex((r) => r.start > start);
    ranges.splice(index < 0 ? ranges.length : index, 0, { start, end, asyncWrite });
    return 0;
  }

  /** A copy for another thread. */
  snapshot(): RangeTable {
    return [this.table[0].map((r) => ({ ...r })), this.table[1].map((r) => ({ ...r }))];
  }
}

/** The reservation containing `address`, by binary search over the sorted ranges. */
export function lookupRange(ranges: readonly Reservation[], address: bigint): Reservation | undefined {
  let low = 0;
  let high = ranges.length - 1;
  while (low <= high) {
    const mid = (low + high) >>> 1;
    const r = ranges[mid]!;
    if (address < r.start) high = mid - 1;
    else if (address >= r.end) low = mid + 1;
    else return r;
  }
  return undefined;
}
