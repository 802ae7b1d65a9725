/**
 * Reserved address ranges: the IO ports and MMIO addresses whose accesses the
 * plugin handles, with the protocol's rules for reserving them. The main
 * thread owns the one {@link ReservedRanges}; after each change the host
 * publishes them to the native VCPU threads (vcpu-config.ts), which look
 * addresses up on every IO/MMIO exit.
 */
import { errno } from '../errno.js';
import { AddressSpace } from '../protocol/gen/plugin.js';

/** The protocol's address spaces, less the generated UNRECOGNIZED (a request naming another space gets EINVAL). */
export type KnownAddressSpace = Exclude<AddressSpace, AddressSpace.UNRECOGNIZED>;

export interface Reservation {
  start: bigint;
  /** Exclusive end, start + length (at most 2^64). */
  end: bigint;
  asyncWrite: boolean;
}

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
  /** Per address space, sorted by start and never overlapping. */
  private readonly table: Record<KnownAddressSpace, Reservation[]> = { [AddressSpace.IOPORT]: [], [AddressSpace.MMIO]: [] };

  /**
   * Reserves [start, start + length), or with length 0 unreserves the range
   * that starts at `start`. Returns 0 or the errno of the protocol's rules.
   */
  reserve(space: KnownAddressSpace, start: bigint, length: bigint, asyncWrite: boolean): number {
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

  /** The reservations of `space`, sorted by start. */
  of(space: KnownAddressSpace): readonly Reservation[] {
    return this.table[space];
  }
}
