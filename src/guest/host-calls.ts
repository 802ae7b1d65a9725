/**
 * Host calls: a program calls a TypeScript function of its plugin (ABI in
 * abi.ts: `out 0xf8, eax` with the number in RAX, arguments in RDI, RSI,
 * RDX, RCX, R8, R9, the result back in RAX). The call hint on the port makes
 * the host send the registers with the exit, so a call costs one exit and no
 * extra request; the result goes back with the resume.
 *
 * A function sees the program's memory through a {@link ProgramMemory}:
 * pointers the program passes are checked against the memory that belongs
 * to the program (never the ring-0 system area), so a bad pointer is a clear
 * {@link HostCallError}, not a read of the page tables.
 */
import { PAGE_SIZE, USER_BASE } from './abi.js';
import { Page, type PageMap } from './paging.js';

/** What a host function gets. */
export interface HostCall {
  /** The function number (RAX). */
  readonly number: number;
  /** RDI, RSI, RDX, RCX, R8, R9 as unsigned 64-bit values. */
  readonly args: readonly [bigint, bigint, bigint, bigint, bigint, bigint];
  /** The program's memory. */
  readonly memory: ProgramMemory;
}

/**
 * A host function: returns the value for RAX (a bigint is taken modulo
 * 2^64, a number must be an integer; nothing means 0). Throwing stops the
 * program (runProgram throws a HostCallError that says which call failed).
 */
export type HostFunction = (call: HostCall) => bigint | number | void;

/** A host call the plugin cannot serve: unknown number, bad pointer, or a function that threw. */
export class HostCallError extends Error {
  override name = 'HostCallError';
}

/**
 * Bounds-checked access to the program's memory (addresses are the
 * program's pointers: guest virtual = physical). Only pages the program may
 * itself access are reachable, and writes need pages it may write.
 */
export class ProgramMemory {
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly pages: PageMap,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** A live view of [address, address + length): writes go to the program's memory. */
  slice(address: bigint | number, length: bigint | number, options: { writable?: boolean } = {}): Uint8Array {
    const start = this.check(address, length, options.writable ?? false);
    return this.bytes.subarray(start, start + Number(length));
  }

  /** A copy of [address, address + length). */
  read(address: bigint | number, length: bigint | number): Uint8Array {
    return new Uint8Array(this.slice(address, length));
  }

  /** Copies `data` to `address`. */
  write(address: bigint | number, data: Uint8Array): void {
    this.slice(address, data.length, { writable: true }).set(data);
  }

  /** UTF-8 text of [address, address + length). */
  readString(address: bigint | number, length: bigint | number): string {
    return new TextDecoder().decode(this.slice(address, length));
  }

  /** A NUL-terminated UTF-8 string of at most `maxLength` bytes before the NUL. */
  readCString(address: bigint | number, maxLength = 4096): string {
    const start = this.check(address, 1, false);
    for (let end = start; end < start + maxLength + 1; end++) {
      this.check(end, 1, false);
      if (this.bytes[end] === 0) return new TextDecoder().decode(this.bytes.subarray(start, end));
    }
    throw new HostCallError(`no NUL within ${maxLength} bytes of the string at 0x${start.toString(16)}`);
  }

  readU64(address: bigint | number): bigint {
    return this.view.getBigUint64(this.check(address, 8, false), true);
  }

  writeU64(address: bigint | number, value: bigint): void {
    this.view.setBigUint64(this.check(address, 8, true), BigInt.asUintN(64, value), true);
  }

  /** The offset of [address, address + length), after checking every page it touches. */
  private check(address: bigint | number, length: bigint | number, writable: boolean): number {
    const start = BigInt(address);
    const size = BigInt(length);
    const range = `0x${start.toString(16)}..0x${(start + size).toString(16)}`;
    if (size < 0n) throw new HostCallError(`negative length ${size}`);
    if (start < BigInt(USER_BASE) || start + size > BigInt(this.bytes.length)) {
      throw new HostCallError(`the range ${range} is not the program's memory`);
    }
    const first = Number(start);
    const need = Page.PRESENT | Page.USER | (writable ? Page.WRITABLE : 0);
    for (let page = Math.floor(first / PAGE_SIZE) * PAGE_SIZE; page < first + Number(size); page += PAGE_SIZE) {
      if ((this.pages.flagsAt(page) & need) !== need) {
        throw new HostCallError(
          `the range ${range} is not ${writable ? 'writable' : 'readable'} by the program (page 0x${page.toString(16)})`,
        );
      }
    }
    return first;
  }
}

/** `value` as the 64-bit pattern for RAX. */
export function resultBits(value: bigint | number | void, what: string): bigint {
  if (value === undefined) return 0n;
  if (typeof value === 'bigint') return BigInt.asUintN(64, value);
  if (!Number.isSafeInteger(value))
    throw new HostCallError(`${what} returned ${value}, not an integer (return a bigint for 64-bit values)`);
  return BigInt.asUintN(64, BigInt(value));
}
