/**
 * The plugin's stderr, cut into lines for the host's log with a bound on
 * their length: a longer line is passed on in pieces of MAX_LINE_CHARS.
 *
 * Why not node:readline: it holds a line until its newline comes, so a plugin
 * (untrusted code) writing to stderr without newlines grew the host without
 * bound, and past V8's longest string (~512 MiB) readline threw and the host
 * died (test "a plugin that writes to stderr without newlines ...").
 */
import { StringDecoder } from 'node:string_decoder';
import type { Readable } from 'node:stream';

export const MAX_LINE_CHARS = 64 * 1024;

/**
 * Calls `onLine` with each line of `input` (without its "\n", nor a "\r"
 * before it), then `onEnd` once the stream is closed; what follows the last
 * newline counts as a line.
 */
export function forEachLine(input: Readable, onLine: (line: string) => void, onEnd: () => void): void {
  const decoder = new StringDecoder('utf8');
  /** What came after the last newline: never longer than MAX_LINE_CHARS. */
  let pending = '';

  const take = (text: string): void => {
    const buffered = pending + text;
    let start = 0;
    for (;;) {
      const newline = buffered.indexOf('\n', start);
      const end = newline < 0 ? buffered.length : newline;
      if (end - start > MAX_LINE_CHARS) {
        onLine(buffered.slice(start, start + MAX_LINE_CHARS));
        start += MAX_LINE_CHARS;
      } else if (newline >= 0) {
        onLine(withoutCr(buffered.slice(start, newline)));
        start = newline + 1;
      } else {
        break;
      }
    }
    pending = buffered.slice(start);
  };

  input.on('data', (chunk: Buffer) => take(decoder.write(chunk)));
  // A read error ends the stream like its end does ('close' follows).
  input.on('error', () => {});
  input.once('close', () => {
    take(decoder.end());
    if (pending !== '') onLine(withoutCr(pending));
    pending = '';
    onEnd();
  });
}

function withoutCr(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}
