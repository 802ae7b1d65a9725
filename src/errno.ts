/**
 * Errno values as the protocol carries them (positive numbers), and their
 * names for messages. The values are the host's, from node's os.constants.
 */
import { constants } from 'node:os';

export const errno = constants.errno;

const names = new Map<number, string>(Object.entries(constants.errno).map(([name, value]) => [value, name]));

/** 'ENOENT' for 2; 'errno 999' for a value with no name. */
export function errnoName(value: number): string {
  return names.get(value) ?? `errno ${value}`;
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
