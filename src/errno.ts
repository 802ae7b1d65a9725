/**
 * Errno values as the protocol carries them (positive numbers), and their
 * names for messages. The values are the host's, from node's os.constants.
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

/** An error that answers a request with a specific errno. */
export class RequestError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(`${message} (${errnoName(errno)})`);
    this.name = 'RequestError';
  }
}
