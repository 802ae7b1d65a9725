/**
 * Errors of the plugin SDK.
 *
 * Every typed SDK call that the host answers with a non-zero errno throws a
 * {@link PluginError} naming the request (in the protocol's snake_case, e.g.
 * `reserve_range`) and the errno. Failures of the transport itself (the host
 * hung up, a send failed, a malformed or mismatched answer) are PluginErrors
 * too, with `transport` set.
 */
import os from 'node:os';
import util from 'node:util';

const codeByErrno = new Map<number, string>();
const descriptionByErrno = new Map<number, string>();

for (const [negative, [name, description]] of util.getSystemErrorMap()) {
  if (negative < 0) {
    codeByErrno.set(-negative, name);
    descriptionByErrno.set(-negative, description);
  }
}
for (const [name, value] of Object.entries(os.constants.errno)) {
  if (!codeByErrno.has(value)) codeByErrno.set(value, name);
}

/** The symbolic name of a positive errno value (`EPERM`), or `E<n>` if unknown. */
export function errnoCode(errno: number): string {
  return codeByErrno.get(errno) ?? `E${errno}`;
}

/** A human description of a positive errno value ("Operation not permitted"). */
export function errnoDescription(errno: number): string {
  const text = descriptionByErrno.get(errno);
  if (text === undefined) return `errno ${errno}`;
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Errno values the SDK itself uses. */
export const Errno = {
  EPERM: os.constants.errno.EPERM,
  ENOENT: os.constants.errno.ENOENT,
  EBADF: os.constants.errno.EBADF,
  EBUSY: os.constants.errno.EBUSY,
  EINVAL: os.constants.errno.EINVAL,
  EPIPE: os.constants.errno.EPIPE,
  ENOTCONN: os.constants.errno.ENOTCONN,
  ECONNRESET: os.constants.errno.ECONNRESET,
  EMSGSIZE: os.constants.errno.EMSGSIZE,
  EPROTO: os.constants.errno.EPROTO,
  ENOTTY: os.constants.errno.ENOTTY,
} as const;

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
    super(`${request} failed: ${detail ?? `${code} (${errnoDescription(errno)})`}`,
      options?.cause === undefined ? undefined : { cause: options.cause });
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
