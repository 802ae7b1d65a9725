/**
 * The program's output streams: bytes are collected and handed on a line
 * (or 4 KiB) at a time, so a program printing through COM1 — one exit per
 * byte — does not also cost a system call per byte, while a line still
 * shows as soon as it is complete.
 */
import { writeSync } from 'node:fs';

/** Where a stream's bytes go. */
export type OutputSink = (bytes: Uint8Array) => void;

const FLUSH_AT = 4096;
const NEWLINE = 0x0a;

export class OutputBuffer {
  private readonly buffer = new Uint8Array(FLUSH_AT);
  private length = 0;

  constructor(private readonly sink: OutputSink) {}

  byte(value: number): void {
    this.buffer[this.length++] = value;
    if (value === NEWLINE || this.length === FLUSH_AT) this.flush();
  }

  bytes(data: Uint8Array): void {
    this.flush();
    if (data.length > 0) this.sink(data);
  }

  flush(): void {
    if (this.length === 0) return;
    const chunk = this.buffer.slice(0, this.length);
    this.length = 0;
    this.sink(chunk);
  }
}

/**
 * A sink that writes to a file descriptor of this process, waiting out
 * EAGAIN: the plugin's stdout is often a pipe that a node process (the
 * host, or whoever reads plugvisor's output) has made non-blocking.
 */
export function fdSink(fd: number): OutputSink {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  return (bytes) => {
    let done = 0;
    while (done < bytes.length) {
      try {
        done += writeSync(fd, bytes, done, bytes.length - done);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        Atomics.wait(pause, 0, 0, 1);
      }
    }
  };
}
