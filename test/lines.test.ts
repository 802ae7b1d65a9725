/**
 * forEachLine (src/host/lines.ts), which cuts the plugin's stderr into the
 * host's log lines: pure logic, fed through a PassThrough stream; and the
 * bounds on what the host holds for a slow stderr (its backpressure, and the
 * host log's limit in src/host/log.ts).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough, Writable } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { MAX_LINE_CHARS, forEachLine, writeWithBackpressure } from '../src/host/lines.js';
import { MAX_PENDING_LOG_BYTES, stderrSink } from '../src/host/log.js';

/** The lines forEachLine makes of `chunks`, written one by one. */
function linesOf(...chunks: (string | Buffer)[]): Promise<string[]> {
  const input = new PassThrough();
  const lines: string[] = [];
  const ended = new Promise<string[]>((resolve) =>
    forEachLine(
      input,
      (line) => void lines.push(line),
      () => resolve(lines),
    ),
  );
  for (const chunk of chunks) input.write(chunk);
  input.end();
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
    // In small chunks, so that the bound applies while the line is still open.
    const chunks = long.match(/.{1,1000}/gs)!;
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

  test('while the sink returns a pending promise nothing more is read, and the writer sees backpressure', async () => {
    const input = new PassThrough({ highWaterMark: 1024 });
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const lines: string[] = [];
    forEachLine(
      input,
      (line) => {
        lines.push(line);
        return lines.length === 1 ? held : undefined;
      },
      () => {},
    );
    input.write('first\nsecond\n');
    await tick();
    assert.deepEqual(lines, ['first', 'second'], 'the chunk under way is handed on whole');
    let refused = false;
    for (let i = 0; i < 1000; i++) refused = !input.write('more\n') || refused;
    await tick();
    assert.equal(lines.length, 2, 'nothing is read while the sink is full');
    assert.equal(refused, true, 'the writer is told to wait (as the plugin blocks on its pipe)');
    release();
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(lines.length, 1002);
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
