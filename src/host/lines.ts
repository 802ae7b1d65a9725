/**
 * The plugin's stderr, cut into lines for the host's log with a bound on
 * their length: a longer line is passed on in pieces of MAX_LINE_CHARS; and
 * with backpressure: while the sink cannot take more (it returned a promise),
 * the pipe is not read, so the plugin blocks on a full pipe instead of the
 * host buffering what it writes (a plugin writing 256 MiB to stderr while the
 * host's own stderr was not read grew the host to 651 MiB).
 *
 * The pipe is read through the addon's fd watcher, not a node stream: a
 * net.Socket for it cost ~2 ms of the host's start-up, on the way from
 * spawning the plugin to answering its first request (bench/README.md,
 * "Profile: where start-up goes").
 *
 * Why not node:readline: it holds a line until its newline comes, so a plugin
 * (untrusted code) writing to stderr without newlines grew the host without
 * bound, and past V8's longest string (~512 MiB) readline threw and the host
 * died (test "a plugin that writes to stderr without newlines ...").
 */
import { StringDecoder } from 'node:string_decoder';
import type { Writable } from 'node:stream';
import { C, native } from '../native/index.js';

export const MAX_LINE_CHARS = 64 * 1024;

/** What one read takes from the pipe. */
const READ_BYTES = 64 * 1024;
/** Reads per wake-up, so that a plugin that never stops writing does not hold the event loop (the watcher fires again). */
const READS_PER_TURN = 16;

/**
 * Where lines go. A sink that cannot take more for now returns a promise
 * that settles when it can; until then no more lines are read. Any other
 * return value is ignored (so `(line) => lines.push(line)` is a sink).
 */
export type LineSink = (line: string) => unknown;

/**
 * Calls `onLine` with each line read from `fd` (without its "\n", nor a "\r"
 * before it), then `onEnd` once the pipe's writers are all gone; what follows
 * the last newline counts as a line. `fd` is the non-blocking read end of a
 * pipe, which this now owns. While a promise returned by `onLine` is pending,
 * the pipe is not read: at most one read's worth is handed on beyond what the
 * sink accepted. Returns `stop`: reads no more, closes `fd`, hands on what it
 * holds and calls `onEnd` (once, whichever comes first).
 */
export function forEachLine(fd: number, onLine: LineSink, onEnd: () => void): () => void {
  const decoder = new StringDecoder('utf8');
  const chunk = Buffer.allocUnsafe(READ_BYTES);
  /** What came after the last newline: never longer than MAX_LINE_CHARS. */
  let pending = '';
  /** Promises of the sink since the last read (the sink is full until they settle). */
  let waits: Promise<unknown>[] = [];
  let ended = false;

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

  const stop = (): void => {
    if (ended) return;
    ended = true;
    watcher.close();
    native.close(fd);
    take(decoder.end());
    if (pending !== '') emit(withoutCr(pending));
    pending = '';
    waits = [];
    onEnd();
  };

  const readSome = (): void => {
    for (let reads = 0; reads < READS_PER_TURN && !ended; reads++) {
      let n: number;
      try {
        n = native.read(fd, chunk, 0, chunk.length);
      } catch {
        n = 0; // a read error ends the pipe like its end does
      }
      if (n < 0) return; // nothing more for now
      if (n === 0) return stop();
      take(decoder.write(chunk.subarray(0, n)));
      if (waits.length > 0) {
        const full = waits;
        waits = [];
        watcher.stop();
        // A sink that fails is as good as drained: its lines are lost either way.
        void Promise.allSettled(full).then(() => {
          if (!ended) watcher.start(C.POLLIN);
        });
        return;
      }
    }
  };

  const watcher = native.createFdWatcher(fd, readSome);
  watcher.start(C.POLLIN);
  return stop;
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
