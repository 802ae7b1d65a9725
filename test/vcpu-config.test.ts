/**
 * The VCPU configuration image (src/host/vcpu-config.ts) against its
 * contract, the layout written down in native/vcpu/config.h: the word counts
 * and bit values are read from that header, the header words' places from
 * its layout comment, so a change on either side that the other did not
 * follow fails here. The native side then takes each image (a real VCPU set,
 * no VCPU started: no KVM needed) and refuses a malformed one.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import path from 'node:path';
import { native } from '../src/native/index.js';
import { PACKAGE_ROOT } from '../src/package-root.js';
import { AddressSpace, type MainRequest_SetCallHint, type MainRequest_SetCallHint_RegHint } from '../src/protocol/gen/plugin.js';
import { ReservedRanges } from '../src/host/ranges.js';
import { encodeVcpuConfig } from '../src/host/vcpu-config.js';

const EINVAL = constants.errno.EINVAL;
const CONFIG_H = readFileSync(path.join(PACKAGE_ROOT, 'native/vcpu/config.h'), 'utf8');

/** A number the header defines (`#define NAME 7`) or enumerates (`NAME = 7`). */
function headerValue(name: string): bigint {
  const match = new RegExp(`(?:#define\\s+${name}\\s+|\\b${name}\\s*=\\s*)(\\d+)`).exec(CONFIG_H);
  assert.ok(match, `native/vcpu/config.h defines no ${name}`);
  return BigInt(match[1]);
}

/** The index of the header word the layout comment describes as `[N] <description>`. */
function headerWord(description: string): number {
  // The description ends where the comment's next column, a parenthesis, a comma or the line does.
  const match = new RegExp(`\\[(\\d+)\\]\\s+${description}(?=\\s{2,}|\\s*[(,]|\\s*\\n)`).exec(CONFIG_H);
  assert.ok(match, `native/vcpu/config.h's layout has no header word "${description}"`);
  return Number(match[1]);
}

const HEADER_WORDS = Number(headerValue('VCPU_CONFIG_HEADER_WORDS'));
const RANGE_WORDS = Number(headerValue('VCPU_CONFIG_RANGE_WORDS'));
const REG_HINT_WORDS = Number(headerValue('VCPU_CONFIG_REG_HINT_WORDS'));
const WORD = {
  ioRanges: headerWord('number of IOPORT ranges'),
  mmioRanges: headerWord('number of MMIO ranges'),
  hintSet: headerWord('1 when a call hint is set'),
  hintSpace: headerWord('hint address space'),
  hintAddress: headerWord('hint address'),
  hintOnWrite: headerWord('1 when the hint is on writes'),
  regHints: headerWord('number of register hints'),
};

function regHint(fields: Partial<MainRequest_SetCallHint_RegHint>): MainRequest_SetCallHint_RegHint {
  return {
    matchRax: false,
    matchRbx: false,
    matchRcx: false,
    matchRdx: false,
    rax: 0n,
    rbx: 0n,
    rcx: 0n,
    rdx: 0n,
    sendSregs: false,
    sendDebugregs: false,
    ...fields,
  };
}

/** Words [at, at + count) of `image`. */
function words(image: BigUint64Array, at: number, count: number): bigint[] {
  return [...image.subarray(at, at + count)];
}

/** Hands `image` to the native VCPU threads' configuration, as the host does; throws if it is refused. */
function publishNatively(image: BigUint64Array): void {
  const [requestRead, requestWrite] = native.pipe2(0);
  const [responseRead, responseWrite] = native.pipe2(0);
  const set = native.createVcpuSet([requestRead], [responseWrite], 0, () => {});
  try {
    set.publishConfig(image);
  } finally {
    set.close();
    for (const fd of [requestRead, requestWrite, responseRead, responseWrite]) native.close(fd);
  }
}

describe('the VCPU configuration image (native/vcpu/config.h)', () => {
  test('the layout comment names seven distinct header words within the header', () => {
    const places = Object.values(WORD);
    assert.equal(new Set(places).size, places.length);
    assert.ok(
      places.every((w) => w >= 0 && w < HEADER_WORDS),
      `header words ${places.join(', ')} of ${HEADER_WORDS}`,
    );
  });

  test('nothing reserved, no hint: a header of zeros', () => {
    const image = encodeVcpuConfig(new ReservedRanges(), null);
    assert.deepEqual([...image], new Array<bigint>(HEADER_WORDS).fill(0n));
    publishNatively(image);
  });

  test('ranges: IOPORT ones, then MMIO ones, each sorted, as first address, last address, async flag', () => {
    const ranges = new ReservedRanges();
    ranges.reserve(AddressSpace.MMIO, 0xfee0_0000n, 0x1000n, false);
    ranges.reserve(AddressSpace.IOPORT, 0x3f8n, 8n, true);
    ranges.reserve(AddressSpace.IOPORT, 0x60n, 1n, false);
    ranges.reserve(AddressSpace.MMIO, (1n << 64n) - 0x10n, 0xfn, false); // ends at the last address
    const image = encodeVcpuConfig(ranges, null);
    assert.equal(image.length, HEADER_WORDS + 4 * RANGE_WORDS);
    assert.equal(image[WORD.ioRanges], 2n);
    assert.equal(image[WORD.mmioRanges], 2n);
    assert.equal(image[WORD.hintSet], 0n);
    assert.equal(image[WORD.regHints], 0n);
    assert.deepEqual(words(image, HEADER_WORDS, 4 * RANGE_WORDS), [
      0x60n,
      0x60n,
      0n,
      0x3f8n,
      0x3ffn,
      1n,
      0xfee0_0000n,
      0xfee0_0fffn,
      0n,
      (1n << 64n) - 0x10n,
      (1n << 64n) - 2n,
      0n,
    ]);
    publishNatively(image);
  });

  test("the call hint and its register hints, in the plugin's order, with the header's bit values", () => {
    const hint: MainRequest_SetCallHint = {
      space: AddressSpace.MMIO,
      address: 0xd000_0010n,
      onWrite: true,
      hints: [
        regHint({ matchRax: true, rax: 0x1111n, sendSregs: true }),
        regHint({ matchRbx: true, matchRdx: true, rbx: 0x22n, rdx: 0x44n, rcx: 0x33n, sendDebugregs: true }),
        regHint({ matchRcx: true, rcx: 0x33n, sendSregs: true, sendDebugregs: true }),
      ],
    };
    const ranges = new ReservedRanges();
    ranges.reserve(AddressSpace.IOPORT, 0x10n, 1n, false);
    const image = encodeVcpuConfig(ranges, hint);
    assert.equal(image.length, HEADER_WORDS + RANGE_WORDS + 3 * REG_HINT_WORDS);
    assert.equal(image[WORD.hintSet], 1n);
    assert.equal(image[WORD.hintSpace], headerValue('VCPU_SPACE_MMIO'));
    assert.equal(image[WORD.hintAddress], 0xd000_0010n);
    assert.equal(image[WORD.hintOnWrite], 1n);
    assert.equal(image[WORD.regHints], 3n);
    const match = (name: string): bigint => headerValue(`VCPU_HINT_MATCH_${name}`);
    const send = (name: string): bigint => headerValue(`VCPU_HINT_SEND_${name}`);
    // Each: match bits, rax, rbx, rcx, rdx, send bits.
    assert.deepEqual(words(image, HEADER_WORDS + RANGE_WORDS, 3 * REG_HINT_WORDS), [
      match('RAX'),
      0x1111n,
      0n,
      0n,
      0n,
      send('SREGS'),
      match('RBX') | match('RDX'),
      0n,
      0x22n,
      0x33n,
      0x44n,
      send('DEBUGREGS'),
      match('RCX'),
      0n,
      0n,
      0x33n,
      0n,
      send('SREGS') | send('DEBUGREGS'),
    ]);
    publishNatively(image);
  });

  test('a hint on reads, in IOPORT space, with no register hints', () => {
    const image = encodeVcpuConfig(new ReservedRanges(), {
      space: AddressSpace.IOPORT,
      address: 0x61n,
      onWrite: false,
      hints: [],
    });
    assert.equal(image.length, HEADER_WORDS);
    assert.equal(image[WORD.hintSet], 1n);
    assert.equal(image[WORD.hintSpace], headerValue('VCPU_SPACE_IOPORT'));
    assert.equal(image[WORD.hintAddress], 0x61n);
    assert.equal(image[WORD.hintOnWrite], 0n);
    publishNatively(image);
  });

  test('the native side refuses an image that breaks the layout', () => {
    const ranges = new ReservedRanges();
    ranges.reserve(AddressSpace.IOPORT, 0x10n, 0x10n, false);
    ranges.reserve(AddressSpace.IOPORT, 0x20n, 0x10n, false);
    const image = encodeVcpuConfig(ranges, null);
    publishNatively(image);
    const overlapping = image.slice();
    overlapping[HEADER_WORDS + RANGE_WORDS] = 0x15n; // the second range starts inside the first
    assert.throws(
      () => publishNatively(overlapping),
      (e: Error & { errno?: number }) => e.errno === EINVAL,
    );
    assert.throws(
      () => publishNatively(image.subarray(0, image.length - 1)),
      (e: Error & { errno?: number }) => e.errno === EINVAL,
    );
  });
});
