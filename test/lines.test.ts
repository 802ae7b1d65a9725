/**
 * forEachLine (src/host/lines.ts), which cuts the plugin's stderr into the
 * host's log lines, fed through a real pipe as the plugin's stderr is; and
 * the bounds on what the host holds for a slow stderr (its backpressure, and
 * the host log's limit in src/host/log.ts).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { C, isErrnoError, native } from '../src/native/index.js';
import { MAX_LINE_CHARS, forEachLine, writeWithBackpressure } from '../src/host/lines.js';
import { MAX_PENDING_LOG_BYTES, stderrSink } from '../src/host/log.js';

/** A pipe as the host makes for a plugin's stderr: [non-blocking read end, write end]. */
function stderrPipe(): [number, number] {
  const [read, write] = native.pipe2(C.O_CLOEXEC);
  native.fcntl(read, C.F_SETFL, C.O_NONBLOCK);
  return [read, write];
}

function writeAll(fd: number, chunk: string | Buffer): void {
  const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
  assert.equal(native.write(fd, bytes, 0, bytes.length), bytes.length);
}

/** The lines forEachLine makes of `chunks`, written one by one, each after the previous was read. */
async function linesOf(...chunks: (string | Buffer)[]): Promise<string[]> {
  const [read, write] = stderrPipe();
  const lines: string[] = [];
  const ended = new Promise<string[]>((resolve) =>
    forEachLine(
      read,
      (line) => void lines.push(line),
      () => resolve(lines),
    ),
  );
  for (const chunk of chunks) {
    writeAll(write, chunk);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  native.close(write);
  return ended;
}

describe('forEachLine', () => {
  test('lines across chunks, CRLF, an empty line, and a last line without a newline', async () => {
    assert.deepEqual(await linesOf('one\ntw', 'o\r\n\nthr', 'ee'), ['one', 'two', '', 'three']);
  });

  test('a UTF-8 character split between two chunks stays whole', async () => {
    const bytes = Buffer.from('é€\n');
    assert.deepEqual(await linesOf(bytes.subarray(0, 1), bytes.subarray(1, 3), bytes.subarray(3)), ['é€']);
  });

  test('a line longer than MAX_LINE_CHARS comes in pieces of that size, in order', async () => {
    const long = 'a'.repeat(MAX_LINE_CHARS) + 'b'.repeat(MAX_LINE_CHARS) + 'c'.repeat(7);
    // In chunks, so that the bound applies while the line is still open.
    const chunks = long.match(/.{1,20000}/gs)!;
    const lines = await linesOf(...chunks, '\nnext\n');
    assert.deepEqual(
      lines.map((l) => l.length),
      [MAX_LINE_CHARS, MAX_LINE_CHARS, 7, 4],
    );
    assert.equal(lines.slice(0, 3).join(''), long);
    assert.equal(lines[3], 'next');
  });

  test('nothing written: no line, and the end is reported', async () => {
    assert.deepEqual(await linesOf(), []);
  });

  test('while the sink returns a pending promise nothing more is read, and the writer is blocked', async () => {
    const [read, write] = stderrPipe();
    native.fcntl(write, C.F_SETFL, C.O_NONBLOCK); // so that a full pipe shows as a refused write
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const lines: string[] = [];
    let ended = false;
    forEachLine(
      read,
      (line) => {
        lines.push(line);
        return lines.length === 1 ? held : undefined;
      },
      () => (ended = true),
    );
    writeAll(write, 'first\nsecond\n');
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(lines, ['first', 'second'], 'the read under way is handed on whole');
    const more = Buffer.from('more\n');
    let written = 0;
    while (native.write(write, more, 0, more.length) === more.length) written++;
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(lines.length, 2, 'nothing is read while the sink is full');
    assert.ok(written > 0, 'the pipe took nothing');
    release();
    native.close(write);
    const deadline = Date.now() + 5_000;
    while (!ended && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(ended, true, 'the end of the pipe was not reported');
    assert.equal(lines.length, 2 + written, 'every line written while the pipe was full is read afterwards');
  });

  test('stop: what was read is handed on, the end is reported once, and the pipe is closed', async () => {
    const [read, write] = stderrPipe();
    const lines: string[] = [];
    let ends = 0;
    const stop = forEachLine(
      read,
      (line) => void lines.push(line),
      () => ends++,
    );
    writeAll(write, 'whole\nhalf');
    await new Promise((resolve) => setTimeout(resolve, 20));
    stop();
    stop();
    assert.deepEqual(lines, ['whole', 'half']);
    assert.equal(ends, 1);
    // The read end is gone: writing to the pipe now breaks it (EPIPE; node ignores SIGPIPE).
    assert.throws(
      () => native.write(write, Buffer.from('x'), 0, 1),
      (e: unknown) => isErrnoError(e) && e.code === 'EPIPE',
    );
    native.close(write);
  });
});

/** A stream that takes writes but completes none until drain() (a stderr nobody reads). */
function stuckStream(): { stream: Writable; written: string[]; drain: () => void } {
  const written: string[] = [];
  const callbacks: (() => void)[] = [];
  const stream = new Writable({
    highWaterMark: 1024,
    write(chunk: Buffer, _encoding, callback) {
      written.push(chunk.toString());
      callbacks.push(callback);
    },
  });
  return {
    stream,
    written,
    drain: () => {
      // Completing one write starts the next buffered one, which adds its callback here.
      while (callbacks.length > 0) callbacks.shift()!();
    },
  };
}

describe('slow stderr', () => {
  test('writeWithBackpressure returns a promise while the stream is full, settled by its drain', async () => {
    const { stream, drain } = stuckStream();
    assert.equal(writeWithBackpressure(stream, 'short\n'), undefined);
    const wait = writeWithBackpressure(stream, 'x'.repeat(2000));
    assert.ok(wait instanceof Promise);
    let settled = false;
    void wait.then(() => (settled = true));
    await tick();
    assert.equal(settled, false);
    drain();
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(settled, true);
  });

  test('the host log drops lines past MAX_PENDING_LOG_BYTES, then says how many', async () => {
    const { stream, written, drain } = stuckStream();
    const sink = stderrSink(false, stream);
    const line = 'w'.repeat(1000);
    const lines = Math.ceil(MAX_PENDING_LOG_BYTES / 1000) + 500;
    for (let i = 0; i < lines; i++) sink('warn', line);
    assert.ok(stream.writableLength < MAX_PENDING_LOG_BYTES + 2000, `${stream.writableLength} bytes held`);
    sink('info', 'not verbose: never written');
    drain();
    await tick();
    const kept = written.length;
    assert.ok(kept < lines - 400, `${kept} of ${lines} lines were held`);
    sink('error', 'after the drain');
    drain();
    assert.match(written.at(-2)!, new RegExp(`^plugvisor: warning: ${lines - kept} log line\\(s\\) dropped`));
    assert.equal(written.at(-1), 'plugvisor: error: after the drain\n');
  });
});
