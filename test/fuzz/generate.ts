/**
 * What the fuzz plugin sends: messages built from the real message shapes
 * (plugin.proto's descriptors, encoded by the generated code the host
 * decodes with), byte-level mutations of them, and messages that are
 * malformed by construction. All of it is drawn from a seeded generator, so a
 * seed replays a run's inputs.
 */
import type { DescField, DescMessage } from '@bufbuild/protobuf';
import { ScalarType } from '@bufbuild/protobuf';

/** A small, fast, seedable PRNG (mulberry32): the same seed gives the same inputs. */
export class Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e3779b9;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 2 ** 32 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }

  u64(): bigint {
    return (BigInt(this.u32()) << 32n) | BigInt(this.u32());
  }

  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** A length that is usually small and sometimes large: [0, max]. */
  length(max: number): number {
    const roll = this.below(10);
    if (roll < 6) return this.below(Math.min(max, 8) + 1);
    if (roll < 9) return this.below(Math.min(max, 128) + 1);
    return this.below(max + 1);
  }
}

const U32_EDGES = [0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, 0x3f8, 0xffff, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const U64_EDGES = [
  0n,
  1n,
  0x1000n,
  0xfff0n,
  0x10000n,
  0xfee00000n,
  0xfffbd000n,
  1n << 32n,
  (1n << 63n) - 1n,
  1n << 63n,
  (1n << 64n) - 0x1000n,
  (1n << 64n) - 1n,
];
const I32_EDGES = [0, 1, -1, 2, 3, 4, 5, 7, 8, 99, 0x7fffffff, -0x80000000];

/** Options for {@link randomMessage}. */
export interface ShapeOptions {
  /** Largest element count of a repeated field. */
  maxRepeated: number;
  /** Largest bytes field. */
  maxBytes: number;
  /** For messages with a oneof, the member to fill (by field name); otherwise one at random. */
  member?: string;
}

/**
 * A random message of type `desc` as a plain object in the generated code's
 * shape (lowerCamelCase fields, oneofs as `{ $case, [case]: value }`,
 * 64-bit integers as bigint), to be passed through the generated
 * `fromPartial` and `encode`. Values lean to edges: 0, 1, maxima, 2^63.
 */
export function randomMessage(random: Random, desc: DescMessage, options: ShapeOptions, depth = 0): Record<string, unknown> {
  const message: Record<string, unknown> = {};
  for (const oneof of desc.oneofs) {
    if (options.member === undefined && random.chance(0.05)) continue; // no member at all
    const field =
      options.member !== undefined && depth === 0
        ? (oneof.fields.find((f) => f.localName === options.member) ?? random.pick(oneof.fields))
        : random.pick(oneof.fields);
    message[oneof.localName] = { $case: field.localName, [field.localName]: randomValue(random, field, options, depth) };
  }
  for (const field of desc.fields) {
    if (field.oneof !== undefined || random.chance(0.2)) continue;
    message[field.localName] = randomValue(random, field, options, depth);
  }
  return message;
}

function randomValue(random: Random, field: DescField, options: ShapeOptions, depth: number): unknown {
  const nested = { ...options, member: undefined };
  switch (field.fieldKind) {
    case 'message':
      return randomMessage(random, field.message, nested, depth + 1);
    case 'enum':
      return random.chance(0.8) ? random.pick(field.enum.values).number : random.pick(I32_EDGES);
    case 'scalar':
      return randomScalar(random, field.scalar, options);
    case 'list': {
      const count = random.length(options.maxRepeated);
      const items: unknown[] = [];
      for (let i = 0; i < count; i++) {
        if (field.listKind === 'message') items.push(randomMessage(random, field.message, nested, depth + 1));
        else if (field.listKind === 'enum') items.push(random.pick(field.enum.values).number);
        else items.push(randomScalar(random, field.scalar, options));
      }
      return items;
    }
    case 'map':
      return {};
  }
}

function randomScalar(random: Random, scalar: ScalarType, options: ShapeOptions): unknown {
  switch (scalar) {
    case ScalarType.BOOL:
      return random.chance(0.5);
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return random.chance(0.6) ? random.pick(U32_EDGES) : random.u32();
    case ScalarType.INT32:
    case ScalarType.SINT32:
    case ScalarType.SFIXED32:
      return random.chance(0.6) ? random.pick(I32_EDGES) : random.u32() | 0;
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return random.chance(0.6) ? random.pick(U64_EDGES) : random.u64();
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return BigInt.asIntN(64, random.chance(0.6) ? random.pick(U64_EDGES) : random.u64());
    case ScalarType.BYTES:
      // The generated code's bytes are Buffers (env=node).
      return Buffer.from(random.bytes(random.length(options.maxBytes)));
    case ScalarType.STRING:
      return 'fuzz';
    case ScalarType.FLOAT:
    case ScalarType.DOUBLE:
      return random.u32() / 7;
  }
}

/** A varint's bytes (for building wire-level damage by hand). */
export function varint(value: bigint | number): number[] {
  let v = BigInt(value);
  const out: number[] = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) byte |= 0x80;
    out.push(byte);
  } while (v > 0n);
  return out;
}

function concat(...parts: (Uint8Array | number[])[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * Byte-level damage of unknown effect: the result may or may not still be a
 * well-formed message (a flipped bit can land in a value). The host must
 * answer it or drop the connection, nothing else.
 */
export function mutate(random: Random, input: Uint8Array): Uint8Array {
  let bytes: Uint8Array = input.slice();
  const rounds = 1 + random.below(4);
  for (let r = 0; r < rounds; r++) {
    const at = random.below(bytes.length + 1);
    switch (random.below(8)) {
      case 0: // flip a bit
        if (bytes.length > 0) bytes[random.below(bytes.length)] ^= 1 << random.below(8);
        break;
      case 1: // set a byte to an edge value
        if (bytes.length > 0) bytes[random.below(bytes.length)] = random.pick([0x00, 0x01, 0x7f, 0x80, 0xff, 0x08, 0x0a, 0x12]);
        break;
      case 2: // insert random bytes
        bytes = concat(bytes.subarray(0, at), random.bytes(1 + random.below(8)), bytes.subarray(at));
        break;
      case 3: // delete a range
        bytes = concat(bytes.subarray(0, at), bytes.subarray(Math.min(bytes.length, at + 1 + random.below(8))));
        break;
      case 4: // duplicate a range
        bytes = concat(bytes.subarray(0, at), bytes.subarray(at, at + random.below(16)), bytes.subarray(at));
        break;
      case 5: // a huge varint (10 bytes, all 64 bits set) in place of a byte
        bytes = concat(
          bytes.subarray(0, at),
          [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
          bytes.subarray(at + 1),
        );
        break;
      case 6: // truncate
        bytes = bytes.subarray(0, at);
        break;
      case 7: // an unknown field appended
        bytes = concat(
          bytes,
          varint(((50 + random.below(1000)) << 3) | random.pick([0, 1, 2, 5])),
          random.bytes(random.below(10)),
        );
        break;
    }
  }
  return bytes;
}

/**
 * Damage that makes any message malformed under the host's strict rules
 * (src/protocol/strict.ts), whatever `input` was: the host must drop the
 * connection. `input` is a well-formed message of at most 4096 bytes.
 */
export function breakMessage(random: Random, input: Uint8Array): { bytes: Uint8Array; how: string } {
  switch (random.below(7)) {
    case 0:
      return { bytes: concat(input, [0x00]), how: 'zero tag appended' };
    case 1:
      return {
        bytes: concat(input, [random.pick([0x0e, 0x0f, 0x0b, 0x0c, 0x9b, 0x03])]),
        how: 'invalid or group wire type appended',
      };
    case 2: {
      const claimed = 11 + random.below(5000);
      return {
        bytes: concat(input, varint((77 << 3) | 2), varint(claimed), random.bytes(random.below(10))),
        how: 'length past the end',
      };
    }
    case 3:
      return {
        bytes: concat(input, varint((77 << 3) | 0), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        how: '11-byte varint',
      };
    case 4:
      return { bytes: concat(input, varint((77 << 3) | 0), [0x80, 0x80]), how: 'varint cut off' };
    case 5:
      return { bytes: concat(input, varint((77 << 3) | 1), random.bytes(random.below(8))), how: 'fixed64 cut off' };
    default:
      // A zero tag inside a nested message, its length kept consistent: the
      // generated decoder read this as the end of the inner message.
      return { bytes: concat(varint((1 << 3) | 2), varint(3), [0x08, 0x01, 0x00]), how: 'zero tag inside create' };
  }
}
