/**
 * The host's log: one line per event, with a level. Where the lines go is the
 * caller's choice (stderr by default); VCPU threads forward theirs to the main
 * thread so that a library user sees every line through one sink.
 */
/** How much a log line matters: `info` lines are shown only with --verbose. */
export type LogLevel = 'info' | 'warn' | 'error';
/** Receives each line of the host's log (one event, no trailing newline). */
export type LogSink = (level: LogLevel, message: string) => void;

export interface Log {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export function createLog(sink: LogSink): Log {
  return {
    info: (message) => sink('info', message),
    warn: (message) => sink('warn', message),
    error: (message) => sink('error', message),
  };
}

/**
 * How much of the host's own log may wait for a slow stderr. The host cannot
 * wait for it (its one main thread serves the plugin), and a plugin can make
 * it log fast (a warning per malformed request): past this, lines are
 * dropped and counted instead of piling up in memory.
 */
export const MAX_PENDING_LOG_BYTES = 1024 * 1024;

/**
 * Writes `plugvisor: warning: ...` lines to `output` (stderr); info lines
 * only when verbose. While more than MAX_PENDING_LOG_BYTES wait to be
 * written, lines are dropped; the next line written says how many.
 * process.stderr is only touched at the first line: making it loads node's
 * net and stream modules, ~2 ms of a start-up that may log nothing.
 */
export function stderrSink(verbose: boolean, stream?: NodeJS.WritableStream & { writableLength: number }): LogSink {
  let dropped = 0;
  return (level, message) => {
    if (level === 'info' && !verbose) return;
    const output = (stream ??= process.stderr);
    if (output.writableLength > MAX_PENDING_LOG_BYTES) {
      dropped++;
      return;
    }
    if (dropped > 0) {
      output.write(`plugvisor: warning: ${dropped} log line(s) dropped: stderr was not keeping up\n`);
      dropped = 0;
    }
    const tag = level === 'info' ? '' : `${level === 'warn' ? 'warning' : 'error'}: `;
    output.write(`plugvisor: ${tag}${message}\n`);
  };
}
