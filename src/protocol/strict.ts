/**
 * Strict decoding of messages from an untrusted peer: the bytes are checked
 * against the message's shape (plugin.proto's descriptor, as generated data:
 * shape.ts) before the generated decoder reads them.
 *
 * Why by hand: ts-proto's generated `decode` is lenient, and so is the
 * BinaryReader of @bufbuild/protobuf under it. The generated loop ends a
 * message at a zero tag or an end-group tag as if it were the end of input
 * (`00` decoded to an empty request, answered ENOTTY); a nested message's
 * declared length is never compared with what its fields take or with the
 * bytes left (`2a 03 00`, a check_extension of 3 bytes with one byte there,
 * decoded and was answered errno 0); a known field with the wrong wire type is
 * skipped as if unknown; a uint32 varint longer than 32 bits is silently
 * truncated (id 2^32 + 5 became 5). The reflective decoder of
 * @bufbuild/protobuf rejects zero tags, but not the rest. Neither library has
 * a strict mode, so this walks the wire format once, against the schema.
 *
 * Well-formed here means: every tag has a field number >= 1 and wire type 0,
 * 1, 2 or 5 (proto3 has no groups, and the protocol none); every varint has at
 * most 10 bytes and fits 64 bits; every length stays inside its enclosing
 * message, and every nested message ends exactly at its declared end; a known
 * field has its type's wire type (or the packed form of a repeated scalar);
 * and a varint fits its field's type (32 bits for uint32/sint32, a
 * sign-extended 32-bit value for int32 and enums). Unknown fields are allowed
 * (that is how a request with no known member reaches ENOTTY).
 */
import type { MessageFns } from './gen/plugin.js';
import { PLUGIN_SHAPES } from './gen/shapes.js';
import { linkShapes, Scalar, type FieldShape, type MessageShape } from './shape.js';

/** A message from a peer that is not well-formed protobuf of its type. */
export class MalformedMessageError extends Error {
  override name = 'MalformedMessageError';
}

// The wire types this checker accepts (3 and 4, the deprecated groups, are malformed).
const VARINT = 0; // the (u/s)int32 and 64 types, bool, enums
const I64 = 1; // fixed64, sfixed64, double
const LEN = 2; // bytes, strings, messages, packed repeated scalars
const I32 = 5; // fixed32, sfixed32, float

/** The schema's messages nest at most a few deep; this only bounds a corrupt descriptor. */
const MAX_DEPTH = 32;

let shapes: ReadonlyMap<string, MessageShape> | undefined;

/** The shape of plugin.proto's message `name` (e.g. 'MainRequest'), from the generated table. */
export function messageShape(name: string): MessageShape {
  shapes ??= linkShapes(PLUGIN_SHAPES);
  const shape = shapes.get(`plugvisor.plugin.${name}`);
  if (shape === undefined) throw new Error(`plugin.proto has no message ${name}`);
  return shape;
}

/** Throws a {@link MalformedMessageError} unless `bytes` is exactly one well-formed `desc` message. */
export function checkWellFormed(desc: MessageShape, bytes: Uint8Array): void {
  checkMessage(desc, bytes, 0, bytes.length, 0);
}

/** Decodes `bytes` with the generated `type` after {@link checkWellFormed}. */
export function decodeStrict<T>(type: MessageFns<T>, desc: MessageShape, bytes: Uint8Array): T {
  checkWellFormed(desc, bytes);
  return type.decode(bytes);
}

function malformed(desc: MessageShape, at: number, what: string): MalformedMessageError {
  return new MalformedMessageError(`${desc.name} at byte ${at}: ${what}`);
}

/** A varint's value and the position after it. */
interface Varint {
  value: bigint;
  end: number;
}

function readVarint(desc: MessageShape, bytes: Uint8Array, pos: number, end: number): Varint {
  let value = 0n;
  for (let i = 0; ; i++) {
    if (pos + i >= end) throw malformed(desc, pos, 'varint runs past the end');
    const byte = bytes[pos + i];
    // The 10th byte holds bit 63 alone: more is over 64 bits, or over 10 bytes.
    if (i === 9 && byte > 1) throw malformed(desc, pos, 'varint longer than 64 bits');
    value |= BigInt(byte & 0x7f) << BigInt(7 * i);
    if ((byte & 0x80) === 0) return { value, end: pos + i + 1 };
  }
}

function checkMessage(desc: MessageShape, bytes: Uint8Array, start: number, end: number, depth: number): void {
  if (depth > MAX_DEPTH) throw malformed(desc, start, 'messages nested too deep');
  let pos = start;
  while (pos < end) {
    const tagAt = pos;
    const tag = readVarint(desc, bytes, pos, end);
    pos = tag.end;
    if (tag.value > 0xffffffffn) throw malformed(desc, tagAt, 'tag does not fit 32 bits');
    const fieldNumber = Number(tag.value >> 3n);
    const wireType = Number(tag.value & 7n);
    if (fieldNumber === 0) throw malformed(desc, tagAt, 'field number 0');
    const field = desc.fields.find((f) => f.number === fieldNumber);
    pos =
      field === undefined
        ? skipUnknown(desc, bytes, pos, end, wireType, tagAt)
        : checkField(desc, field, bytes, pos, end, wireType, tagAt, depth);
  }
}

/** The end of a length-delimited payload starting at `pos` (after checking it fits). */
function payloadEnd(desc: MessageShape, bytes: Uint8Array, pos: number, end: number): { start: number; end: number } {
  const length = readVarint(desc, bytes, pos, end);
  if (length.value > BigInt(end - length.end)) throw malformed(desc, pos, `length ${length.value} passes the end of its message`);
  return { start: length.end, end: length.end + Number(length.value) };
}

function fixedEnd(desc: MessageShape, pos: number, end: number, size: number): number {
  if (pos + size > end) throw malformed(desc, pos, `${size}-byte value runs past the end`);
  return pos + size;
}

function skipUnknown(desc: MessageShape, bytes: Uint8Array, pos: number, end: number, wireType: number, tagAt: number): number {
  switch (wireType) {
    case VARINT:
      return readVarint(desc, bytes, pos, end).end;
    case I64:
      return fixedEnd(desc, pos, end, 8);
    case LEN:
      return payloadEnd(desc, bytes, pos, end).end;
    case I32:
      return fixedEnd(desc, pos, end, 4);
    default:
      throw malformed(desc, tagAt, `wire type ${wireType}`);
  }
}

function checkField(
  desc: MessageShape,
  field: FieldShape,
  bytes: Uint8Array,
  pos: number,
  end: number,
  wireType: number,
  tagAt: number,
  depth: number,
): number {
  const wrong = (): MalformedMessageError => malformed(desc, tagAt, `field ${field.name} with wire type ${wireType}`);
  const kind = field.fieldKind === 'list' ? field.listKind : field.fieldKind;
  if (kind === 'message') {
    if (wireType !== LEN || field.message === undefined) throw wrong();
    const payload = payloadEnd(desc, bytes, pos, end);
    checkMessage(field.message, bytes, payload.start, payload.end, depth + 1);
    return payload.end;
  }
  if (kind === 'map') throw wrong(); // plugin.proto has no maps
  const scalar = kind === 'enum' ? Scalar.INT32 : field.scalar!;
  const expected = scalarWireType(scalar);
  if (wireType === expected) return checkScalar(desc, field, scalar, bytes, pos, end, tagAt);
  // A repeated number may come packed: one payload of elements back to back.
  if (field.fieldKind === 'list' && wireType === LEN && expected !== LEN) {
    const payload = payloadEnd(desc, bytes, pos, end);
    for (let at = payload.start; at < payload.end;) at = checkScalar(desc, field, scalar, bytes, at, payload.end, at);
    return payload.end;
  }
  throw wrong();
}

function scalarWireType(scalar: number): number {
  switch (scalar) {
    case Scalar.DOUBLE:
    case Scalar.FIXED64:
    case Scalar.SFIXED64:
      return I64;
    case Scalar.FLOAT:
    case Scalar.FIXED32:
    case Scalar.SFIXED32:
      return I32;
    case Scalar.STRING:
    case Scalar.BYTES:
      return LEN;
    default:
      return VARINT;
  }
}

const INT32_NEGATIVE_MIN = (1n << 64n) - (1n << 31n);

/** Checks one value of `scalar` at `pos`; returns the position after it. */
function checkScalar(
  desc: MessageShape,
  field: FieldShape,
  scalar: number,
  bytes: Uint8Array,
  pos: number,
  end: number,
  at: number,
): number {
  switch (scalarWireType(scalar)) {
    case I64:
      return fixedEnd(desc, pos, end, 8);
    case I32:
      return fixedEnd(desc, pos, end, 4);
    case LEN: {
      const payload = payloadEnd(desc, bytes, pos, end);
      if (scalar === Scalar.STRING) {
        try {
          new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(payload.start, payload.end));
        } catch {
          throw malformed(desc, at, `field ${field.name} is not UTF-8`);
        }
      }
      return payload.end;
    }
  }
  const { value, end: after } = readVarint(desc, bytes, pos, end);
  const fits =
    scalar === Scalar.UINT32 || scalar === Scalar.SINT32
      ? value <= 0xffffffffn
      : scalar === Scalar.INT32
        ? value <= 0x7fffffffn || value >= INT32_NEGATIVE_MIN
        : true;
  if (!fits) throw malformed(desc, at, `field ${field.name}: ${value} does not fit its type`);
  return after;
}

/**
 * The known message field whose tag starts `bytes`, if any: what a request
 * cut short (too large to read whole) was asking for, so that it can still be
 * answered with its member. Only the tag is read.
 */
export function leadingMessageField(desc: MessageShape, bytes: Uint8Array): FieldShape | undefined {
  let tag;
  try {
    tag = readVarint(desc, bytes, 0, bytes.length);
  } catch {
    return undefined;
  }
  if ((tag.value & 7n) !== BigInt(LEN)) return undefined;
  const field = desc.fields.find((f) => BigInt(f.number) === tag.value >> 3n);
  return field?.fieldKind === 'message' ? field : undefined;
}
