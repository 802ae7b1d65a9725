/**
 * Errno values as the protocol carries them (positive numbers), their names
 * for messages, and the one error type that carries an errno. The values are
 * the host's, from node's os.constants.
 */
import { constants } from 'node:os';
import { getSystemErrorMap } from 'node:util';

export const errno = constants.errno;

const names = new Map<number, string>();
const descriptions = new Map<number, string>();
for (const [negative, [name, description]] of getSystemErrorMap()) {
  if (negative >= 0) continue;
  names.set(-negative, name);
  descriptions.set(-negative, description.charAt(0).toUpperCase() + description.slice(1));
}
for (const [name, value] of Object.entries(constants.errno)) if (!names.has(value)) names.set(value, name);

/** 'ENOENT' for 2; 'errno 999' for a value with no name. */
export function errnoName(value: number): string {
  return names.get(value) ?? `errno ${value}`;
}

/** 'No such file or directory' for 2. */
export function errnoDescription(value: number): string {
  return descriptions.get(value) ?? `errno ${value}`;
}

/**
 * An error that carries an errno: what every failed system call of the native
 * addon throws, and what the host and the KVM layer throw when they refuse
 * something before it reaches the kernel. A request handler answers with its
 * `errno`.
 */
export class ErrnoError extends Error {
  /** The positive errno value. */
  readonly errno: number;
  /** Its name, e.g. `EINVAL`. */
  readonly code: string;
  /** The system call that failed (`ioctl` for a KVM ioctl, also one refused before the call); undefined for none. */
  readonly syscall: string | undefined;

  /** `message` says what failed, for a person; `cause` is what led to it, if anything. */
  constructor(errno: number, message: string, options: { syscall?: string | undefined; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.errno = errno;
    this.code = errnoName(errno);
    this.syscall = options.syscall;
  }
}

/**
 * True for an {@link ErrnoError}, also one made by another copy of this
 * module (a process can load plugvisor twice: the library and a bundle), so
 * the check is on the shape, not the class.
 */
export function isErrnoError(e: unknown): e is ErrnoError {
  return (
    e instanceof Error &&
    typeof (e as Partial<ErrnoError>).errno === 'number' &&
    typeof (e as Partial<ErrnoError>).code === 'string'
  );
}
