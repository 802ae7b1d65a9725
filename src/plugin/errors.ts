/**
 * Errors of the plugin SDK.
 *
 * Every typed SDK call that the host answers with a non-zero errno throws a
 * {@link PluginError} naming the request (in the protocol's snake_case, e.g.
 * `reserve_range`) and the errno. Failures of the transport itself (the host
 * hung up, a send failed, a malformed or mismatched answer) are PluginErrors
 * too, with `transport` set.
 */
import { errno as Errno, errnoDescription, errnoName, isErrnoError } from '../errno.js';

/** The symbolic name of a positive errno value (`EPERM`). */
export const errnoCode = errnoName;
export { errnoDescription };

/** A request the host refused (its errno), or a failure of the connection itself (`transport`). */
export class PluginError extends Error {
  /** The positive errno value (what the host put on the wire, or the local cause). */
  readonly errno: number;
  /** Its symbolic name, e.g. `EPERM`. */
  readonly code: string;
  /** The request that failed, in the protocol's snake_case (`reserve_range`, `get_state`, ...). */
  readonly request: string;
  /** True when the failure is the connection's (hang-up, bad framing), not the host's answer. */
  readonly transport: boolean;

  /**
   * @param detail replaces the default "CODE (description)" text after the
   *   request name.
   */
  constructor(request: string, errno: number, detail?: string, options?: { transport?: boolean; cause?: unknown }) {
    const code = errnoCode(errno);
    super(
      `${request} failed: ${detail ?? `${code} (${errnoDescription(errno)})`}`,
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = 'PluginError';
    this.errno = errno;
    this.code = code;
    this.request = request;
    this.transport = options?.transport ?? false;
  }
}

/** `reserveRange` → `reserve_range`: protocol names of oneof members. */
export function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** A failed system call on one of the SDK's sockets or pipes, as a transport PluginError (`what` says which). */
export function transportError(request: string, e: unknown, what: string): PluginError {
  const errno = isErrnoError(e) ? e.errno : Errno.EPIPE;
  const detail =
    errno === Errno.EPIPE || errno === Errno.ECONNRESET
      ? `${what}: the host hung up`
      : `${what}: ${e instanceof Error ? e.message : String(e)}`;
  return new PluginError(request, errno, detail, { transport: true, cause: e });
}
