/**
 * The strict wire check (src/protocol/strict.ts) that stands before the
 * generated decoder on the main connection: what it refuses, what it must
 * keep accepting (everything a correct encoder writes), and the member names
 * it reports for requests too large to read.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { MainRequest, VcpuRequest, VcpuResponse } from '../src/protocol/gen/plugin.js';
import { checkWellFormed, leadingMessageField, MalformedMessageError, messageShape } from '../src/protocol/strict.js';
import type { MessageShape } from '../src/protocol/shape.js';
import { messageDescriptor } from './support/descriptor.js';

const MAIN = messageShape('MainRequest');
const hex = (text: string): Uint8Array => Buffer.from(text.replace(/ /g, ''), 'hex');

function refused(bytes: Uint8Array, desc = MAIN): string {
  try {
    checkWellFormed(desc, bytes);
  } catch (e) {
    assert.ok(e instanceof MalformedMessageError, String(e));
    return e.message;
  }
  assert.fail(`accepted ${Buffer.from(bytes).toString('hex')}`);
}

describe('the strict wire check', () => {
  test('refuses what the generated decoder let through', () => {
    // The generated decoder's verdicts, for the record: these are the leniencies.
    assert.equal(MainRequest.decode(hex('00')).message, undefined, 'a zero tag ended the message');
    assert.equal(MainRequest.decode(hex('2a 03 00')).message?.$case, 'checkExtension', 'a length past the end was read');
    assert.match(refused(hex('00')), /field number 0/);
    assert.match(refused(hex('2a 03 00')), /length 3 passes the end/);
    assert.match(refused(hex('2a 02 00 00')), /CheckExtension .*field number 0/);
    assert.match(refused(hex('2a 01 08 01')), /runs past the end/);
    assert.match(refused(hex('08 00')), /field create with wire type 0/);
    assert.match(refused(hex('0b 0c')), /wire type 3/);
    assert.match(refused(hex('2a 00 0c')), /wire type 4/);
    assert.match(refused(hex('0e')), /wire type 6/);
    assert.match(refused(hex('2a 0b 08 ffffffffffffffffff 01')), /does not fit its type/);
    assert.match(refused(hex('2a 0b 08 ffffffffffffffffff 02')), /longer than 64 bits/);
    assert.match(refused(hex('2a 0c 08 80808080808080808080 00')), /longer than 64 bits/);
    assert.match(refused(hex('ffffffffff 1f')), /varint runs past the end|tag does not fit/);
    // An unknown field whose payload passes the end.
    assert.match(refused(hex('9a 03 05 00')), /passes the end/);
  });

  test('accepts every member a correct encoder writes, unknown fields, and both forms of repeated numbers', () => {
    for (const field of MAIN.fields) {
      const bytes = MainRequest.encode(
        MainRequest.fromPartial({ message: { $case: field.localName, [field.localName]: {} } as MainRequest['message'] }),
      ).finish();
      checkWellFormed(MAIN, bytes);
      // The member names the host reports for a request cut short are the generated cases.
      assert.equal(leadingMessageField(MAIN, bytes)?.number, field.number, field.localName);
    }
    const full = MainRequest.encode({
      message: {
        $case: 'setCallHint',
        setCallHint: {
          space: 1,
          address: (1n << 64n) - 1n,
          onWrite: true,
          hints: [
            {
              matchRax: true,
              matchRbx: false,
              matchRcx: true,
              matchRdx: false,
              rax: 1n,
              rbx: 2n,
              rcx: (1n << 64n) - 1n,
              rdx: 0n,
              sendSregs: true,
              sendDebugregs: true,
            },
          ],
        },
      },
    }).finish();
    checkWellFormed(MAIN, full);
    // Only an unknown field (50): valid protobuf, answered ENOTTY by the host.
    checkWellFormed(MAIN, hex('90 03 01'));
    // A negative enum (StateSet -1) is a 10-byte varint: a valid int32.
    checkWellFormed(MAIN, hex('6a 0b 08 ffffffffffffffffff 01'));

    const vcpuRequest = messageShape('VcpuRequest');
    const indices = Array.from({ length: 300 }, (_, i) => i * 1000);
    const packed = VcpuRequest.encode({ message: { $case: 'getMsrs', getMsrs: { entryIndices: indices } } }).finish();
    checkWellFormed(vcpuRequest, packed);
    // The same indices unpacked (one tag each), as some encoders write them.
    const inner = new BinaryWriter();
    for (const index of indices) inner.uint32(8).uint32(index);
    const innerBytes = inner.finish();
    const unpacked = new BinaryWriter()
      .uint32((5 << 3) | 2)
      .bytes(innerBytes)
      .finish();
    checkWellFormed(vcpuRequest, unpacked);
    assert.deepEqual(VcpuRequest.decode(unpacked), VcpuRequest.decode(packed));
    // A packed payload whose last varint is cut off.
    assert.match(refused(hex('2a 03 0a 01 80'), vcpuRequest), /runs past the end/);

    const wait = VcpuResponse.encode({
      errnoValue: -5,
      message: { $case: 'wait', wait: { exit: { $case: 'user', user: { user: 7n } } } },
    }).finish();
    checkWellFormed(messageShape('VcpuResponse'), wait);
  });

  test('a request cut short is named only by a leading member tag', () => {
    assert.equal(leadingMessageField(MAIN, hex('62 ff 3f 0a'))?.localName, 'setIrqRouting');
    assert.equal(leadingMessageField(MAIN, hex('08 01')), undefined, 'a varint is no member');
    assert.equal(leadingMessageField(MAIN, hex('90 03 01')), undefined, 'an unknown field is no member');
    assert.equal(leadingMessageField(MAIN, hex('')), undefined);
  });

  test("the host's generated shapes say what plugin.proto's descriptor says, for every message", () => {
    const names = ['MainRequest', 'MainResponse', 'VcpuRequest', 'VcpuResponse', 'CpuidEntry', 'VcpuResponse.Wait.Io'];
    const summary = (m: MessageShape, depth = 0): unknown => ({
      name: m.name,
      fields: m.fields.map((f) => ({
        number: f.number,
        name: f.name,
        localName: f.localName,
        fieldKind: f.fieldKind,
        listKind: f.listKind,
        scalar: f.scalar,
        message: f.message === undefined ? undefined : depth < 3 ? summary(f.message, depth + 1) : f.message.name,
      })),
    });
    for (const name of names) assert.deepEqual(summary(messageShape(name)), summary(messageDescriptor(name)), name);
  });
});
