/**
 * Guest memory owned by the plugin: a sealed memfd mapped shared into the
 * plugin, so the plugin reads and writes guest RAM directly through `bytes`
 * while the host maps the same file into the VM (Connection.createMemory).
 */
import { native } from '../native/index.js';

/**
 * Guest RAM the plugin owns: a sealed memfd, mapped in the plugin at
 * {@link GuestMemory.bytes}; {@link Connection.createMemory} puts it in the VM.
 */
export class GuestMemory {
  /** The memfd (owned by this object; the host gets its own copy when the memory is registered). */
  readonly fd: number;
  /** Size in bytes. */
  readonly size: number;
  private view: Uint8Array<ArrayBuffer>;
  private address: bigint;

  private constructor(fd: number, size: number, address: bigint) {
    this.fd = fd;
    this.size = size;
    this.address = address;
    this.view = new Uint8Array(native.arrayBufferAt(address, size));
  }

  /**
   * A new zero-filled memfd of `size` bytes (a positive multiple of the page
   * size is what KVM accepts), sealed against shrinking and growing (the host
   * refuses memory it could lose under its mapping), mapped read-write shared.
   */
  static create(size: number, name = 'plugvisor-guest-memory'): GuestMemory {
    if (!Number.isSafeInteger(size) || size <= 0)
      throw new RangeError(`guest memory size must be a positive integer, not ${size}`);
    const C = native.constants;
    const fd = native.memfdCreate(name, C.MFD_CLOEXEC | C.MFD_ALLOW_SEALING);
    try {
      native.ftruncate(fd, size);
      native.fcntl(fd, C.F_ADD_SEALS, C.F_SEAL_SHRINK | C.F_SEAL_GROW);
      const address = native.mmap(size, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED, fd, 0);
      return new GuestMemory(fd, size, address);
    } catch (e) {
      native.close(fd);
      throw e;
    }
  }

  /**
   * The live view of the memory (writes are seen by the guest and vice
   * versa). Views taken from it must not be used after {@link close}: they
   * would touch unmapped memory (the addon's buffers cannot be detached
   * without copying them).
   */
  get bytes(): Uint8Array {
    if (this.address === 0n) throw new Error('GuestMemory is closed');
    return this.view;
  }

  /** True once {@link close} ran. */
  get closed(): boolean {
    return this.address === 0n;
  }

  /** Unmaps the memory and closes the memfd. Idempotent. */
  close(): void {
    if (this.address === 0n) return;
    const address = this.address;
    this.address = 0n;
    this.view = new Uint8Array(0);
    native.munmap(address, this.size);
    native.close(this.fd);
  }
}
