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

/** Writes `plugvisor: warning: ...` lines to stderr; info lines only when verbose. */
export function stderrSink(verbose: boolean): LogSink {
  return (level, message) => {
    if (level === 'info' && !verbose) return;
    const tag = level === 'info' ? '' : `${level === 'warn' ? 'warning' : 'error'}: `;
    process.stderr.write(`plugvisor: ${tag}${message}\n`);
  };
}
