/**
 * forEachLine (src/host/lines.ts), which cuts the plugin's stderr into the
 * host's log lines: pure logic, fed through a PassThrough stream.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { MAX_LINE_CHARS, forEachLine } from '../src/host/lines.js';

/** The lines forEachLine makes of `chunks`, written one by one. */
function linesOf(...chunks: (string | Buffer)[]): Promise<string[]> {
  const input = new PassThrough();
  const lines: string[] = [];
  const ended = new Promise<string[]>((resolve) => forEachLine(input, (line) => lines.push(line), () => resolve(lines)));
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
    assert.deepEqual(lines.map((l) => l.length), [MAX_LINE_CHARS, MAX_LINE_CHARS, 7, 4]);
    assert.equal(lines.slice(0, 3).join(''), long);
    assert.equal(lines[3], 'next');
  });

  test('nothing written: no line, and the end is reported', async () => {
    assert.deepEqual(await linesOf(), []);
  });
});
