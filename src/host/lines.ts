/**
 * The plugin's stderr, cut into lines for the host's log with a bound on
 * their length: a longer line is passed on in pieces of MAX_LINE_CHARS; and
 * with backpressure: while the sink cannot take more (it returned a promise),
 * the stream is not read, so the plugin blocks on a full pipe instead of the
 * host buffering what it writes (a plugin writing 256 MiB to stderr while the
 * host's own stderr was not read grew the host to 651 MiB).
 *
 * Why not node:readline: it holds a line until its newline comes, so a plugin
 * (untrusted code) writing to stderr without newlines grew the host without
 * bound, and past V8's longest string (~512 MiB) readline threw and the host
 * died (test "a plugin that writes to stderr without newlines ...").
 */
import { StringDecoder } from 'node:string_decoder';
import type { Readable, Writable } from 'node:stream';

export const MAX_LINE_CHARS = 64 * 1024;

/**
 * Where lines go. A sink that cannot take more for now returns a promise
 * that settles when it can; until then no more lines are read. Any other
 * return value is ignored (so `(line) => lines.push(line)` is a sink).
 */
export type LineSink = (line: string) => unknown;

/**
 * Calls `onLine` with each line of `input` (without its "\n", nor a "\r"
 * before it), then `onEnd` once the stream is closed; what follows the last
 * newline counts as a line. While a promise returned by `onLine` is pending,
 * `input` is paused: at most one chunk of the stream is handed on beyond
 * what the sink accepted.
 */
export function forEachLine(input: Readable, onLine: LineSink, onEnd: () => void): void {
  const decoder = new StringDecoder('utf8');
  /** What came after the last newline: never longer than MAX_LINE_CHARS. */
  let pending = '';
  /** Promises of the sink since the last chunk (the sink is full until they settle). */
  let waits: Promise<unknown>[] = [];

  const emit = (line: string): void => {
    const wait = onLine(line);
    if (wait instanceof Promise) waits.push(wait);
  };

  const take = (text: string): void => {
    const buffered = pending + text;
    let start = 0;
    for (;;) {
      const newline = buffered.indexOf('\n', start);
      const end = newline < 0 ? buffered.length : newline;
      if (end - start > MAX_LINE_CHARS) {
        emit(buffered.slice(start, start + MAX_LINE_CHARS));
        start += MAX_LINE_CHARS;
      } else if (newline >= 0) {
        emit(withoutCr(buffered.slice(start, newline)));
        start = newline + 1;
      } else {
        break;
      }
    }
    pending = buffered.slice(start);
  };

  input.on('data', (chunk: Buffer) => {
    take(decoder.write(chunk));
    if (waits.length === 0) return;
    const full = waits;
    waits = [];
    input.pause();
    // A sink that fails is as good as drained: its lines are lost either way.
    void Promise.allSettled(full).then(() => input.resume());
  });
  // A read error ends the stream like its end does ('close' follows).
  input.on('error', () => {});
  input.once('close', () => {
    take(decoder.end());
    if (pending !== '') emit(withoutCr(pending));
    pending = '';
    waits = [];
    onEnd();
  });
}

/**
 * Writes `text` to `output`; when the stream's buffer is full, returns a
 * promise that settles once it drained (or the stream is gone): the
 * {@link LineSink} way to say "no more for now".
 */
export function writeWithBackpressure(output: Writable, text: string): Promise<void> | undefined {
  if (output.write(text) || output.destroyed) return undefined;
  return new Promise((resolve) => {
    const done = (): void => {
      output.off('drain', done).off('close', done).off('error', done);
      resolve();
    };
    output.on('drain', done).on('close', done).on('error', done);
  });
}

function withoutCr(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}
