/**
 * What the native VCPU threads need to dispatch exits, the reserved ranges
 * and the call hint, as the image they read (its layout is the contract in
 * native/vcpu/config.h): a header of 7 words, 3 words per range, 6 per
 * register hint. The host publishes a whole new image after every change.
 */
import { AddressSpace, type MainRequest_SetCallHint } from '../protocol/gen/plugin.js';
import type { ReservedRanges } from './ranges.js';

const HEADER_WORDS = 7;
const RANGE_WORDS = 3;
const REG_HINT_WORDS = 6;

export function encodeVcpuConfig(ranges: ReservedRanges, hint: MainRequest_SetCallHint | null): BigUint64Array {
  const io = ranges.of(AddressSpace.IOPORT);
  const mmio = ranges.of(AddressSpace.MMIO);
  const regHints = hint?.hints ?? [];
  const image = new BigUint64Array(HEADER_WORDS + RANGE_WORDS * (io.length + mmio.length) + REG_HINT_WORDS * regHints.length);
  image[0] = BigInt(io.length);
  image[1] = BigInt(mmio.length);
  if (hint !== null) {
    image[2] = 1n;
    image[3] = BigInt(hint.space);
    image[4] = hint.address;
    image[5] = hint.onWrite ? 1n : 0n;
  }
  image[6] = BigInt(regHints.length);
  let at = HEADER_WORDS;
  for (const r of [...io, ...mmio]) {
    image[at++] = r.start;
    image[at++] = r.end - 1n; // the last address: a range may end at 2^64
    image[at++] = r.asyncWrite ? 1n : 0n;
  }
  for (const h of regHints) {
    image[at++] = BigInt((h.matchRax ? 1 : 0) | (h.matchRbx ? 2 : 0) | (h.matchRcx ? 4 : 0) | (h.matchRdx ? 8 : 0));
    image[at++] = h.rax;
    image[at++] = h.rbx;
    image[at++] = h.rcx;
    image[at++] = h.rdx;
    image[at++] = BigInt((h.sendSregs ? 1 : 0) | (h.sendDebugregs ? 2 : 0));
  }
  return image;
}
