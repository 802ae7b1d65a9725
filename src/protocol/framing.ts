/**
 * Framing of the two transports of the protocol:
 *  - main connections: one protobuf message per seqpacket message, no prefix
 *    (the socket keeps message boundaries; see the host and SDK connections);
 *  - VCPU host->plugin pipe: each VcpuResponse is length-delimited (a varint32
 *    byte count, then the bytes), and one read may return several of them.
 * The plugin->host pipe carries one VcpuRequest per write, no prefix.
 */
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import type { MessageFns } from './gen/plugin.js';

/**
 * One writer per thread (each worker has its own module instance), reused for
 * every message: making a BinaryWriter costs more than encoding a small
 * message, and the SDK encodes one per VCPU exit. finish() leaves it empty again.
 */
const writer = new BinaryWriter();

/** Encodes `message` (with the generated `type`, e.g. MainRequest) to fresh bytes. */
export function encodeMessage<T>(type: MessageFns<T>, message: T): Uint8Array {
  return type.encode(message, writer).finish();
}

/**
 * Splits a byte stream of length-delimited messages. Bytes are appended with
 * {@link push}; {@link next} returns each complete message's bytes in order,
 * or undefined when the next one is not complete yet.
 */
export class DelimitedStream {
  private buffer = new Uint8Array(0);
  private start = 0;
  private end = 0;

  /** Appends `length` bytes of `chunk` (copied). */
  push(chunk: Uint8Array, length = chunk.length): void {
    if (this.end + length > this.buffer.length) {
      const pending = this.end - this.start;
      const grown = new Uint8Array(Math.max(this.buffer.length, 2 * (pending + length), 4096));
      grown.set(this.buffer.subarray(this.start, this.end));
      this.buffer = grown;
      this.start = 0;
      this.end = pending;
    }
    this.buffer.set(chunk.subarray(0, length), this.end);
    this.end += length;
  }

  /** True when no bytes are buffered. */
  get empty(): boolean {
    return this.start === this.end;
  }

  /**
   * The next complete message (a view valid until the next push), or
   * undefined if more bytes are needed. Throws on a malformed length.
   */
  next(): Uint8Array | undefined {
    let length = 0;
    let shift = 0;
    let pos = this.start;
    for (;;) {
      if (pos >= this.end) return undefined;
      const byte = this.buffer[pos++];
      if (shift === 28 && byte > 0x0f) throw new RangeError('invalid varint32 message length');
      length += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) break;
      shift += 7;
    }
    if (this.end - pos < length) return undefined;
    this.start = pos + length;
    if (this.start === this.end) this.start = this.end = 0;
    return this.buffer.subarray(pos, pos + length);
  }
}
