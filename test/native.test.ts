/**
 * Tests of the native addon (native/plugvisor.c) against the real kernel.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { setTimeout as delay } from 'node:timers/promises';
import { readdirSync } from 'node:fs';

import {
  C,
  CONSTANT_NAMES,
  ErrnoError,
  LAYOUT_FIELDS,
  isErrnoError,
  native,
  type ConstantName,
  type LayoutName,
} from '../src/native/index.js';
import { needsKvm } from './support/kvm.js';

const indexUrl = new URL('../src/native/index.js', import.meta.url).href;

function expectErrno(fn: () => unknown, code: string, errno: number, syscall: string): ErrnoError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(isErrnoError(caught), `expected an errno error, got ${String(caught)}`);
  assert.ok(caught instanceof ErrnoError, 'the addon throws the one errno-carrying class');
  assert.equal(caught.code, code);
  assert.equal(caught.errno, errno);
  assert.equal(caught.syscall, syscall);
  return caught;
}

/** Waits (without a fixed sleep) until `cond` holds, failing after `timeoutMs`. */
async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(1);
  }
}

/** Runs an ES module snippet in a child node with `native` and `C` in scope. */
function runChild(body: string, extraArgs: string[] = []) {
  const source = `import { native, C } from ${JSON.stringify(indexUrl)};\n${body}`;
  return spawnSync(process.execPath, [...extraArgs, '--input-type=module', '-e', source], {
    encoding: 'utf8',
    timeout: 20_000,
  });
}

/** Starts a worker running a CommonJS snippet with `native`, `C`, `parentPort` in scope. */
function startWorker(body: string): Worker {
  const source = `
    const { parentPort } = require('node:worker_threads');
    import(${JSON.stringify(indexUrl)}).then(({ native, C }) => {
      ${body}
    });`;
  return new Worker(source, { eval: true });
}

function nextMessage<T>(worker: Worker): Promise<T> {
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

function exited(worker: Worker): Promise<number> {
  return new Promise((resolve) => worker.once('exit', resolve));
}

const RW = () => C.PROT_READ | C.PROT_WRITE;

test('constants: every name is a finite integer, and nothing else is exported', () => {
  const keys = Object.keys(native.constants).sort();
  assert.deepEqual(keys, [...CONSTANT_NAMES].sort());
  for (const name of CONSTANT_NAMES) {
    const value = native.constants[name];
    assert.equal(typeof value, 'number', name);
    assert.ok(Number.isSafeInteger(value) && value >= 0, `${name} = ${value}`);
  }
  assert.ok(Object.isFrozen(native.constants));
});

/** Constants whose values the kernel's ABI fixes on x86-64. */
const KNOWN_VALUES: Partial<Record<ConstantName, number>> = {
  SIZEOF_KVM_REGS: 144,
  SIZEOF_KVM_SEGMENT: 24,
  SIZEOF_KVM_MSR_ENTRY: 16,
  SIZEOF_KVM_CPUID_ENTRY2: 40,
  SIZEOF_KVM_USERSPACE_MEMORY_REGION: 32,
  SIZEOF_KVM_LAPIC_STATE: 1024,
  // kvm_run: 8 bytes of inputs, exit_reason at 8, the exit union at 32.
  KVM_RUN_REQUEST_INTERRUPT_WINDOW: 0,
  KVM_RUN_IMMEDIATE_EXIT: 1,
  KVM_RUN_EXIT_REASON: 8,
  KVM_RUN_IO_DIRECTION: 32,
  KVM_RUN_MMIO_PHYS_ADDR: 32,
  KVM_RUN_MMIO_DATA: 40,
  KVM_EXIT_IO: 2,
  KVM_EXIT_HLT: 5,
};

test('constants: plausible values', () => {
  const names = Object.keys(KNOWN_VALUES) as ConstantName[];
  assert.deepEqual(Object.fromEntries(names.map((name) => [name, C[name]])), KNOWN_VALUES);
  assert.ok(C.SIZEOF_KVM_RUN > 256);
  assert.ok(C.PAGE_SIZE >= 4096 && (C.PAGE_SIZE & (C.PAGE_SIZE - 1)) === 0);
  assert.ok(C.SIGRTMIN >= 32 && C.SIGRTMIN < 64);
  // Fields of kvm_run's exit union that follow one another.
  assert.equal(C.KVM_RUN_IO_PORT, C.KVM_RUN_IO_SIZE + 1);
  assert.equal(C.KVM_RUN_IO_DATA_OFFSET, C.KVM_RUN_IO_COUNT + 4);
  assert.equal(C.KVM_RUN_HYPERV_SYNIC_CONTROL, C.KVM_RUN_HYPERV_SYNIC_MSR + 8);
  // ioctl numbers carry the KVM magic 0xAE and exceed 2^31 when they read data.
  assert.equal((C.KVM_RUN >>> 8) & 0xff, 0xae);
  assert.ok(C.KVM_GET_REGS > 2 ** 31);
});

test('layouts: every struct and field TypeScript names, and nothing else, each field inside its struct', () => {
  assert.deepEqual(Object.keys(native.layouts).sort(), Object.keys(LAYOUT_FIELDS).sort());
  assert.ok(Object.isFrozen(native.layouts));
  for (const name of Object.keys(LAYOUT_FIELDS) as LayoutName[]) {
    const layout: Readonly<Record<string, number>> = native.layouts[name];
    const fields: readonly string[] = LAYOUT_FIELDS[name];
    assert.deepEqual(Object.keys(layout).sort(), [...fields, 'size'].sort(), name);
    assert.ok(Object.isFrozen(layout), name);
    assert.ok(Number.isSafeInteger(layout['size']) && layout['size'] > 0, `${name}.size`);
    // A flexible array member (entries, indices) starts at the very end.
    for (const field of fields) {
      const offset = layout[field];
      assert.ok(Number.isSafeInteger(offset) && offset >= 0 && offset <= layout['size'], `${name}.${field} = ${offset}`);
    }
    const sizeofName = `SIZEOF_${name.toUpperCase()}` as keyof typeof C;
    if (sizeofName in C) assert.equal(layout['size'], C[sizeofName], `${name}.size and ${sizeofName}`);
  }
});

test('layouts: the x86-64 layouts of <linux/kvm.h>, field by field', () => {
  // What the structs are on x86-64: a layout entry naming the wrong member of
  // its struct (in native/layouts.c) shows up here.
  const regs = Object.fromEntries(LAYOUT_FIELDS.kvm_regs.map((name, i) => [name, i * 8]));
  const expected: { [N in LayoutName]: Record<string, number> } = {
    kvm_userspace_memory_region: { slot: 0, flags: 4, guestPhysAddr: 8, memorySize: 16, userspaceAddr: 24, size: 32 },
    kvm_ioeventfd: { datamatch: 0, addr: 8, len: 16, fd: 20, flags: 24, size: 64 },
    kvm_irqfd: { fd: 0, gsi: 4, flags: 8, resamplefd: 12, size: 32 },
    kvm_irq_level: { irq: 0, level: 4, size: 8 },
    kvm_irq_routing: { nr: 0, entries: 8, size: 8 },
    kvm_irq_routing_entry: {
      gsi: 0,
      type: 4,
      irqchipIrqchip: 16,
      irqchipPin: 20,
      msiAddressLo: 16,
      msiAddressHi: 20,
      msiData: 24,
      size: 48,
    },
    kvm_cpuid2: { nent: 0, entries: 8, size: 8 },
    kvm_cpuid_entry2: { function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24, size: 40 },
    kvm_msrs: { nmsrs: 0, entries: 8, size: 8 },
    kvm_msr_entry: { index: 0, data: 8, size: 16 },
    kvm_msr_list: { nmsrs: 0, indices: 4, size: 4 },
    kvm_dirty_log: { slot: 0, dirtyBitmap: 8, size: 16 },
    kvm_enable_cap: { cap: 0, flags: 4, args: 8, pad: 40, size: 104 },
    kvm_irqchip: { chipId: 0, chip: 8, size: 520 },
    kvm_pit_config: { flags: 0, size: 64 },
    kvm_pic_state: { imr: 2, irqBase: 5, initState: 9, autoEoi: 10, init4: 13, size: 16 },
    kvm_segment: {
      base: 0,
      limit: 8,
      selector: 12,
      type: 14,
      present: 15,
      dpl: 16,
      db: 17,
      s: 18,
      l: 19,
      g: 20,
      avl: 21,
      unusable: 22,
      size: 24,
    },
    kvm_dtable: { base: 0, limit: 8, size: 16 },
    kvm_sregs: {
      cs: 0,
      ds: 24,
      es: 48,
      fs: 72,
      gs: 96,
      ss: 120,
      tr: 144,
      ldt: 168,
      gdt: 192,
      idt: 208,
      cr0: 224,
      cr2: 232,
      cr3: 240,
      cr4: 248,
      cr8: 256,
      efer: 264,
      apicBase: 272,
      size: 312,
    },
    kvm_regs: { ...regs, size: 144 },
    kvm_debugregs: { db: 0, dr6: 32, dr7: 40, flags: 48, size: 128 },
  };
  for (const name of Object.keys(expected) as LayoutName[]) assert.deepEqual({ ...native.layouts[name] }, expected[name], name);
});

test('errors carry errno, code and syscall', () => {
  const e = expectErrno(() => native.close(-1), 'EBADF', 9, 'close');
  assert.match(e.message, /^close: Bad file descriptor$/);
  expectErrno(() => native.open('/nonexistent/plugvisor', C.O_RDONLY), 'ENOENT', 2, 'open');
  const io = expectErrno(() => native.ioctl(-1, C.KVM_RUN, 0), 'EBADF', 9, 'ioctl');
  assert.match(io.message, /^ioctl KVM_RUN: /);
  const unknown = expectErrno(() => native.ioctl(-1, 0x1234, 0n), 'EBADF', 9, 'ioctl');
  assert.match(unknown.message, /^ioctl\(0x1234\): /);
});

test('bad arguments throw TypeErrors / RangeErrors', () => {
  const anyNative = native as unknown as Record<string, (...args: unknown[]) => unknown>;
  assert.throws(() => anyNative.close('3'), { name: 'TypeError', message: 'fd must be an integer' });
  assert.throws(() => anyNative.close(1.5), TypeError);
  assert.throws(() => anyNative.close(), TypeError);
  assert.throws(() => anyNative.read(0, 'abc', 0, 1), { name: 'TypeError', message: 'buf must be a Uint8Array' });
  assert.throws(() => native.read(0, new Uint8Array(4), 2, 3), RangeError);
  assert.throws(() => anyNative.ioctl(0, 2 ** 33, 0), RangeError);
  assert.throws(() => anyNative.createFdWatcher(0, 'nope'), TypeError);
  assert.throws(() => native.arrayBufferAt(0n, 1), RangeError);
});

test('ifreqIoctl: struct ifreq in and out, interface errors name the ioctl, bad arguments are refused', () => {
  // struct ifreq is a 16-byte name and a union (of sockaddrs, flags, ...) at offset 0 of what is passed.
  assert.equal(C.IFNAMSIZ, 16);
  assert.ok(C.SIZEOF_IFREQ_IFRU >= 16);
  assert.deepEqual([C.IFREQ_FLAGS, C.IFREQ_ADDR, C.IFREQ_NETMASK, C.IFREQ_HWADDR], [0, 0, 0, 0]);
  assert.deepEqual([C.SOCKADDR_FAMILY, C.SOCKADDR_DATA, C.SOCKADDR_IN_ADDR], [0, 2, 4]);
  assert.equal((C.TUNSETIFF >>> 8) & 0xff, 'T'.charCodeAt(0));
  const socket = native.socket(C.AF_INET, C.SOCK_DGRAM | C.SOCK_CLOEXEC, 0);
  const efd = native.eventfd(0, C.EFD_CLOEXEC);
  try {
    assert.ok(native.fcntl(socket, C.F_GETFD, 0) & C.FD_CLOEXEC);
    // No interface of this name exists anywhere: nothing is touched.
    const data = new Uint8Array(C.SIZEOF_IFREQ_IFRU);
    const e = expectErrno(() => native.ifreqIoctl(socket, C.SIOCGIFFLAGS, 'pvnosuch0', data), 'ENODEV', 19, 'ioctl');
    assert.match(e.message, /^ioctl SIOCGIFFLAGS: No such device$/);
    assert.throws(() => native.ifreqIoctl(efd, C.TUNGETIFF, '', data), /^Error: ioctl TUNGETIFF: /);
    assert.throws(() => native.ifreqIoctl(socket, C.SIOCGIFFLAGS, 'x'.repeat(16), data), { name: 'RangeError' });
    assert.throws(() => native.ifreqIoctl(socket, C.SIOCGIFFLAGS, 'lo', new Uint8Array(C.SIZEOF_IFREQ_IFRU + 1)), {
      name: 'RangeError',
    });
  } finally {
    native.close(efd);
    native.close(socket);
  }
});

test('pipe2, read, write and EAGAIN on a non-blocking pipe', () => {
  const [r, w] = native.pipe2(C.O_CLOEXEC | C.O_NONBLOCK);
  try {
    assert.ok(native.fcntl(r, C.F_GETFD, 0) & C.FD_CLOEXEC);
    assert.ok(native.fcntl(w, C.F_GETFL, 0) & C.O_NONBLOCK);
    const buf = new Uint8Array(16);
    assert.equal(native.read(r, buf, 0, 16), -1);
    assert.equal(native.write(w, new TextEncoder().encode('xhello'), 1, 5), 5);
    assert.equal(native.poll(r, C.POLLIN, 1000), C.POLLIN);
    assert.equal(native.read(r, buf, 3, 10), 5);
    assert.equal(new TextDecoder().decode(buf.subarray(3, 8)), 'hello');
    assert.equal(native.poll(r, C.POLLIN, 0), 0);
    assert.equal(native.read(r, buf, 0, 16), -1);
    // Fill the pipe until write reports EAGAIN.
    const size = native.fcntl(w, C.F_GETPIPE_SZ, 0);
    const chunk = new Uint8Array(size);
    let total = 0;
    for (;;) {
      const n = native.write(w, chunk, 0, chunk.length);
      if (n === -1) break;
      total += n;
    }
    assert.equal(total, size);
    native.close(r);
    expectErrno(() => native.write(w, chunk, 0, 1), 'EPIPE', 32, 'write');
  } finally {
    try {
      native.close(r);
    } catch {
      /* closed above */
    }
    native.close(w);
  }
});

test('eventfd read and write, including 64-bit counters', () => {
  const fd = native.eventfd(3, C.EFD_CLOEXEC | C.EFD_NONBLOCK);
  try {
    assert.equal(native.eventfdRead(fd), 3);
    assert.equal(native.eventfdRead(fd), -1);
    native.eventfdWrite(fd, 5);
    native.eventfdWrite(fd, 7);
    assert.equal(native.eventfdRead(fd), 12);
    (native.eventfdWrite as (fd: number, v: number | bigint) => void)(fd, 2n ** 60n);
    assert.equal(native.eventfdRead(fd), 2n ** 60n);
  } finally {
    native.close(fd);
  }
});

test('seqpacket: sendmsg/recvmsg pass an eventfd that works on the other side', () => {
  const [a, b] = native.seqpacketPair(true);
  const efd = native.eventfd(0, C.EFD_CLOEXEC | C.EFD_NONBLOCK);
  const received: number[] = [];
  try {
    assert.ok(native.fcntl(a, C.F_GETFD, 0) & C.FD_CLOEXEC);
    const payload = new Uint8Array([1, 2, 3, 4, 5]);
    assert.equal(native.sendmsg(a, payload, 4, [efd]), 4);
    const buf = new Uint8Array(64);
    const msg = native.recvmsg(b, buf, 32);
    assert.ok(msg);
    received.push(...msg.fds);
    assert.equal(msg.bytes, 4);
    assert.equal(msg.truncated, false);
    assert.deepEqual([...buf.subarray(0, 4)], [1, 2, 3, 4]);
    assert.equal(msg.fds.length, 1);
    const theirs = msg.fds[0];
    assert.notEqual(theirs, efd);
    assert.ok(native.fcntl(theirs, C.F_GETFD, 0) & C.FD_CLOEXEC, 'received fds are close-on-exec');
    native.eventfdWrite(theirs, 42);
    assert.equal(native.eventfdRead(efd), 42);

    // Messages without fds, and a reply the other way.
    assert.equal(native.sendmsg(b, payload, 5, []), 5);
    const back = native.recvmsg(a, buf, 0);
    assert.deepEqual(back, { bytes: 5, fds: [], truncated: false });

    // Non-blocking receive with nothing queued.
    native.fcntl(b, C.F_SETFL, native.fcntl(b, C.F_GETFL, 0) | C.O_NONBLOCK);
    assert.equal(native.recvmsg(b, buf, 4), null);

    // Up to the kernel's SCM_MAX_FD (253) fds go in one message (get_vcpus sends 128 for 64 VCPUs); more is refused.
    assert.equal(native.sendmsg(a, payload, 1, new Array(253).fill(efd)), 1);
    const many = native.recvmsg(b, buf, 253)!;
    received.push(...many.fds);
    assert.equal(many.fds.length, 253);
    assert.equal(many.truncated, false);
    expectErrno(() => native.sendmsg(a, payload, 1, new Array(254).fill(efd)), 'EINVAL', 22, 'sendmsg');

    // Peer hang-up reads as 0 bytes.
    native.close(a);
    assert.deepEqual(native.recvmsg(b, buf, 4), { bytes: 0, fds: [], truncated: false });
  } finally {
    for (const fd of received) native.close(fd);
    try {
      native.close(a);
    } catch {
      /* closed above */
    }
    native.close(b);
    native.close(efd);
  }
});

test('recvmsg reports truncation and still returns the fds that arrived', () => {
  const [a, b] = native.seqpacketPair(true);
  const e1 = native.eventfd(0, C.EFD_CLOEXEC);
  const e2 = native.eventfd(0, C.EFD_CLOEXEC);
  try {
    const big = new Uint8Array(100).fill(7);
    native.sendmsg(a, big, 100, [e1, e2]);
    const small = new Uint8Array(10);
    const msg = native.recvmsg(b, small, 1);
    assert.ok(msg);
    assert.equal(msg.truncated, true);
    assert.equal(msg.bytes, 10);
    assert.equal(msg.fds.length, 1);
    for (const fd of msg.fds) native.close(fd);

    // Fds sent to a receiver that accepts none are dropped, and flagged.
    native.sendmsg(a, big, 1, [e1]);
    const none = native.recvmsg(b, small, 0);
    assert.deepEqual(none, { bytes: 1, fds: [], truncated: true });
  } finally {
    native.close(a);
    native.close(b);
    native.close(e1);
    native.close(e2);
  }
});

test('memfd: size, seals', () => {
  const fd = native.memfdCreate('plugvisor-test', C.MFD_CLOEXEC | C.MFD_ALLOW_SEALING);
  try {
    native.ftruncate(fd, 3 * C.PAGE_SIZE);
    assert.equal(native.fstatSize(fd), 3 * C.PAGE_SIZE);
    assert.equal(native.fcntl(fd, C.F_GET_SEALS, 0), 0);
    native.fcntl(fd, C.F_ADD_SEALS, C.F_SEAL_SHRINK);
    assert.equal(native.fcntl(fd, C.F_GET_SEALS, 0), C.F_SEAL_SHRINK);
    expectErrno(() => native.ftruncate(fd, C.PAGE_SIZE), 'EPERM', 1, 'ftruncate');
    native.ftruncate(fd, 4 * C.PAGE_SIZE); // growing is still allowed
    assert.equal(native.fstatSize(fd), 4 * C.PAGE_SIZE);
  } finally {
    native.close(fd);
  }
});

test('mmap a memfd: arrayBufferAt sees write(2), and addressOf', () => {
  const fd = native.memfdCreate('plugvisor-map', C.MFD_CLOEXEC);
  const length = 2 * C.PAGE_SIZE;
  native.ftruncate(fd, length);
  const address = native.mmap(length, RW(), C.MAP_SHARED, fd, 0);
  try {
    assert.equal(typeof address, 'bigint');
    assert.equal(address % BigInt(C.PAGE_SIZE), 0n);
    const view = new Uint8Array(native.arrayBufferAt(address, length));
    assert.equal(view.byteLength, length);
    assert.equal(view[C.PAGE_SIZE + 1], 0);
    // write(2) at an offset: memfd writes go through the file position.
    const pad = new Uint8Array(C.PAGE_SIZE + 1);
    native.write(fd, pad, 0, pad.length);
    native.write(fd, new Uint8Array([0xab, 0xcd]), 0, 2);
    assert.equal(view[C.PAGE_SIZE + 1], 0xab);
    assert.equal(view[C.PAGE_SIZE + 2], 0xcd);
    // Two views of the same mapping share bytes.
    const again = new Uint8Array(native.arrayBufferAt(address + BigInt(C.PAGE_SIZE), C.PAGE_SIZE));
    assert.equal(again[1], 0xab);
    again[0] = 0x5a;
    assert.equal(view[C.PAGE_SIZE], 0x5a);
    assert.equal(native.addressOf(view), address);
    assert.equal(native.addressOf(view.subarray(10)), address + 10n);
    // An ordinary buffer has a stable, non-null address.
    const plain = new Uint8Array(64);
    assert.ok(native.addressOf(plain) > 0n);
  } finally {
    native.munmap(address, length);
    native.close(fd);
  }
  expectErrno(() => native.mmap(C.PAGE_SIZE, C.PROT_READ, C.MAP_SHARED, -1, 0), 'EBADF', 9, 'mmap');
});

test('fd watcher fires on readable on the main thread, then closes', async () => {
  const [r, w] = native.pipe2(C.O_CLOEXEC | C.O_NONBLOCK);
  const seen: number[] = [];
  const watcher = native.createFdWatcher(r, (revents) => {
    seen.push(revents);
    const buf = new Uint8Array(8);
    while (native.read(r, buf, 0, 8) > 0) {
      /* drain */
    }
  });
  try {
    watcher.start(C.POLLIN);
    native.write(w, new Uint8Array([1]), 0, 1);
    await waitFor(() => seen.length > 0, 'the watcher callback');
    assert.ok(seen[0] & C.POLLIN);
    watcher.stop();
    native.write(w, new Uint8Array([2]), 0, 1);
    assert.equal(native.poll(r, C.POLLIN, 1000), C.POLLIN);
    await delay(20); // a stopped watcher stays quiet
    assert.equal(seen.length, 1);
    watcher.start(C.POLLIN);
    await waitFor(() => seen.length > 1, 'the restarted watcher');
    // Hang-up of the write end shows up as readable (EOF).
    native.close(w);
    await waitFor(() => seen.length > 2, 'the hang-up');
  } finally {
    watcher.close();
    watcher.close(); // idempotent
    watcher.stop(); // harmless after close
  }
  assert.throws(() => watcher.start(C.POLLIN), /closed/);
  native.close(r);
});

/** Everything readable from `fd` until EOF (blocking reads). */
function readAll(fd: number): string {
  const chunks: Buffer[] = [];
  const buf = new Uint8Array(4096);
  for (let n; (n = native.read(fd, buf, 0, buf.length)) > 0;) chunks.push(Buffer.from(buf.subarray(0, n)));
  return Buffer.concat(chunks).toString();
}

/** Waits for a spawned child to end (its pidfd polls readable) and reaps it. */
function reap(child: { pid: number; pidfd: number }): ReturnType<typeof native.waitpid> {
  assert.equal(native.poll(child.pidfd, C.POLLIN, 10_000), C.POLLIN, 'the pidfd says the child ended');
  native.close(child.pidfd);
  return native.waitpid(child.pid);
}

test('spawn: each source lands on its target, even one that sits on another target or on its own (close-on-exec) number', () => {
  // Three pipes whose write ends trade places in the child (every source is
  // also the number of another target, the case the addon's copies are
  // for), and a fourth whose write end keeps its number: all close-on-exec.
  const pipes = [0, 1, 2, 3].map(() => native.pipe2(C.O_CLOEXEC));
  const writeEnds = pipes.map(([, w]) => w);
  const fds = Array.from({ length: Math.max(...writeEnds) + 1 }, (_, i) => i);
  const targetOf = (i: number): number => (i === 3 ? writeEnds[3] : writeEnds[(i + 1) % 3]);
  for (let i = 0; i < 4; i++) fds[targetOf(i)] = writeEnds[i];
  const script = writeEnds.map((fd) => `require('node:fs').writeSync(${fd}, 'to ${fd}');`).join('');
  const child = native.spawn(process.execPath, [process.execPath, '-e', script], [], fds, false);
  for (const [, w] of pipes) native.close(w);
  assert.deepEqual(reap(child), { code: 0 });
  for (let i = 0; i < 4; i++) {
    assert.equal(readAll(pipes[i][0]), `to ${targetOf(i)}`, `pipe ${i} got what the child wrote to its target`);
    native.close(pipes[i][0]);
  }
});

test('spawn: default signal actions, nothing blocked, a new session on request, PATH lookup, the environment given', () => {
  for (const newSession of [true, false]) {
    const [r, w] = native.pipe2(C.O_CLOEXEC);
    // cat itself is the child (no shell between), so /proc/self is the spawned process.
    const child = native.spawn(
      'cat',
      ['cat', '/proc/self/stat', '/proc/self/status', '/proc/self/environ'],
      ['ONLY=this'],
      [0, w],
      newSession,
    );
    native.close(w);
    assert.deepEqual(reap(child), { code: 0 });
    const out = readAll(r);
    native.close(r);
    // node ignores SIGPIPE, and an ignored signal would stay ignored across the exec.
    assert.match(out, /^SigIgn:\s+0+$/m);
    assert.match(out, /^SigBlk:\s+0+$/m);
    const stat = out.slice(0, out.indexOf('\n'));
    const session = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]); // field 6, after pid (comm) state ppid pgrp
    if (newSession) assert.equal(session, child.pid, 'the child leads its own session');
    else assert.notEqual(session, child.pid);
    assert.ok(out.endsWith('ONLY=this\0'), 'the environment is exactly envp');
  }
});

test('spawn: a failed exec throws with the errno; waitpid says running, exited or signaled; no fd is left', () => {
  const before = readdirSync('/proc/self/fd').length;
  const error = expectErrno(() => native.spawn('/nonexistent/plugin', ['x'], [], [], false), 'ENOENT', 2, 'posix_spawnp');
  assert.match(error.message, /cannot execute \/nonexistent\/plugin: No such file or directory/);
  assert.throws(() => native.spawn('sleep', ['sleep', 1 as unknown as string], [], [], false), /argv must be a string/);
  assert.throws(() => native.spawn('sleep', ['sleep'], [], [1.5], false), /fds\[i\] must be an integer/);
  assert.throws(() => native.spawn('sleep', ['sleep'], [], [-1], false), /fds\[i\] must be an integer in \[0, /);
  assert.throws(() => native.spawn('sleep', ['sleep'], ['A=\0'], [], false), /envp must be a string without NUL/);

  const sleeper = native.spawn('sleep', ['sleep', '30'], [], [], false);
  assert.equal(native.waitpid(sleeper.pid), null, 'still running');
  process.kill(sleeper.pid, 'SIGKILL');
  assert.deepEqual(reap(sleeper), { signal: 9 });
  assert.deepEqual(reap(native.spawn('sh', ['sh', '-c', 'exit 7'], [], [], false)), { code: 7 });
  expectErrno(() => native.waitpid(sleeper.pid), 'ECHILD', 10, 'waitpid');
  assert.equal(readdirSync('/proc/self/fd').length, before);
});

test('fd watcher: an active watcher keeps the loop alive, a stopped one does not', () => {
  const alive = runChild(`
    const [r, w] = native.pipe2(C.O_CLOEXEC | C.O_NONBLOCK);
    const watcher = native.createFdWatcher(r, (revents) => {
      console.log('fired', revents);
      watcher.close();
    });
    watcher.start(C.POLLIN);
    setTimeout(() => native.write(w, new Uint8Array([1]), 0, 1), 50).unref();
  `);
  assert.equal(alive.status, 0, alive.stderr);
  assert.match(alive.stdout, /^fired 1$/m);

  const stopped = runChild(`
    const [r] = native.pipe2(C.O_CLOEXEC);
    const watcher = native.createFdWatcher(r, () => {});
    watcher.start(C.POLLIN);
    watcher.stop();
    console.log('done');
  `);
  assert.equal(stopped.signal, null, 'a stopped watcher must not keep the process alive');
  assert.equal(stopped.status, 0, stopped.stderr);

  // Stopped watchers that are dropped unclosed are reclaimed by GC without harm.
  const dropped = runChild(
    `
    for (let i = 0; i < 50; i++) {
      const [r, w] = native.pipe2(C.O_CLOEXEC);
      const watcher = native.createFdWatcher(r, () => watcher.stop());
      watcher.start(C.POLLIN);
      watcher.stop();
      native.close(w);
    }
    for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((res) => setImmediate(res)); }
    console.log('ok');
  `,
    ['--expose-gc'],
  );
  assert.equal(dropped.status, 0, dropped.stderr);
  assert.match(dropped.stdout, /ok/);
});

test('fd watcher works in a worker thread, and a worker may exit with one active', async () => {
  const worker = startWorker(`
    const [r, w] = native.pipe2(C.O_CLOEXEC | C.O_NONBLOCK);
    const watcher = native.createFdWatcher(r, (revents) => {
      const buf = new Uint8Array(8);
      const n = native.read(r, buf, 0, 8);
      watcher.close();
      native.close(r);
      native.close(w);
      parentPort.postMessage({ revents, n });
    });
    watcher.start(C.POLLIN);
    native.write(w, new Uint8Array([9, 9, 9]), 0, 3);
  `);
  const done = exited(worker);
  const result = await nextMessage<{ revents: number; n: number }>(worker);
  assert.deepEqual(result, { revents: C.POLLIN, n: 3 });
  assert.equal(await done, 0, 'the worker exits once its watcher is closed');

  // Terminating a worker whose watcher is still active must not abort the process.
  const busy = startWorker(`
    const [r] = native.pipe2(C.O_CLOEXEC | C.O_NONBLOCK);
    const watcher = native.createFdWatcher(r, () => {});
    watcher.start(C.POLLIN);
    parentPort.postMessage('ready');
  `);
  const busyExit = exited(busy);
  assert.equal(await nextMessage(busy), 'ready');
  await busy.terminate();
  assert.equal(await busyExit, 1);
});

test('kick: the handler sets immediate_exit in the target of the kicked thread', async () => {
  native.installKickHandler();
  native.installKickHandler(); // once per process; repeat calls are harmless

  // On this thread: a kick to ourselves lands before tgkill returns.
  const page = native.mmap(C.PAGE_SIZE, RW(), C.MAP_PRIVATE | C.MAP_ANONYMOUS, -1, 0);
  const view = new Uint8Array(native.arrayBufferAt(page, C.PAGE_SIZE));
  try {
    native.setKickTarget(page);
    native.kick(native.gettid());
    assert.equal(view[C.KVM_RUN_IMMEDIATE_EXIT], 1);
    view[C.KVM_RUN_IMMEDIATE_EXIT] = 0;
    native.setKickTarget(0n);
    native.kick(native.gettid()); // no target: nothing happens
    assert.equal(view[C.KVM_RUN_IMMEDIATE_EXIT], 0);
    assert.equal(
      view.reduce((a, b) => a + b, 0),
      0,
      'only immediate_exit is touched',
    );
  } finally {
    native.setKickTarget(0n);
    native.munmap(page, C.PAGE_SIZE);
  }

  expectErrno(() => native.kick(2 ** 31 - 1), 'ESRCH', 3, 'tgkill');

  // In a worker: the worker registers its (fake) kvm_run, this thread kicks it.
  const worker = startWorker(`
    const page = native.mmap(C.PAGE_SIZE, C.PROT_READ | C.PROT_WRITE, C.MAP_PRIVATE | C.MAP_ANONYMOUS, -1, 0);
    native.setKickTarget(page);
    parentPort.once('message', () => {
      const view = new Uint8Array(native.arrayBufferAt(page, C.PAGE_SIZE));
      const seen = view[C.KVM_RUN_IMMEDIATE_EXIT];
      native.setKickTarget(0n);
      native.munmap(page, C.PAGE_SIZE);
      parentPort.postMessage(seen);
    });
    parentPort.postMessage({ tid: native.gettid(), page });
  `);
  const done = exited(worker);
  const { tid, page: workerPage } = await nextMessage<{ tid: number; page: bigint }>(worker);
  assert.notEqual(tid, native.gettid());
  const workerView = new Uint8Array(native.arrayBufferAt(workerPage, C.PAGE_SIZE));
  assert.equal(workerView[C.KVM_RUN_IMMEDIATE_EXIT], 0);
  native.kick(tid);
  await waitFor(() => workerView[C.KVM_RUN_IMMEDIATE_EXIT] === 1, 'immediate_exit in the worker');
  const seenByWorker = nextMessage<number>(worker);
  worker.postMessage('check');
  assert.equal(await seenByWorker, 1);
  assert.equal(await done, 0);
});

test('KVM: API version, VCPU state via ioctlBuffer, and a kicked KVM_RUN throws EINTR', needsKvm, () => {
  const kvm = native.open('/dev/kvm', C.O_RDWR | C.O_CLOEXEC);
  const fds: number[] = [];
  try {
    assert.equal(native.ioctl(kvm, C.KVM_GET_API_VERSION, 0), 12);
    assert.equal(native.ioctl(kvm, C.KVM_CHECK_EXTENSION, C.KVM_CAP_IMMEDIATE_EXIT), 1);
    const mmapSize = native.ioctl(kvm, C.KVM_GET_VCPU_MMAP_SIZE, 0);
    assert.ok(mmapSize >= C.SIZEOF_KVM_RUN);

    const vm = native.ioctl(kvm, C.KVM_CREATE_VM, 0);
    fds.push(vm);
    const vcpu = native.ioctl(vm, C.KVM_CREATE_VCPU, 0);
    fds.push(vcpu);

    const regs = new Uint8Array(C.SIZEOF_KVM_REGS);
    assert.equal(native.ioctlBuffer(vcpu, C.KVM_GET_REGS, regs), 0);
    const r = new DataView(regs.buffer);
    assert.equal(r.getBigUint64(native.layouts.kvm_regs.rip, true), 0xfff0n);
    assert.equal(r.getBigUint64(native.layouts.kvm_regs.rflags, true), 2n);

    const sregs = new Uint8Array(C.SIZEOF_KVM_SREGS);
    native.ioctlBuffer(vcpu, C.KVM_GET_SREGS, sregs);
    const s = new DataView(sregs.buffer);
    assert.equal(s.getUint16(native.layouts.kvm_sregs.cs + native.layouts.kvm_segment.selector, true), 0xf000);
    assert.equal(s.getBigUint64(native.layouts.kvm_sregs.cs + native.layouts.kvm_segment.base, true), 0xffff0000n);

    const run = native.mmap(mmapSize, RW(), C.MAP_SHARED, vcpu, 0);
    try {
      const view = new Uint8Array(native.arrayBufferAt(run, mmapSize));
      native.installKickHandler();
      native.setKickTarget(run);
      native.kick(native.gettid());
      assert.equal(view[C.KVM_RUN_IMMEDIATE_EXIT], 1);
      const e = expectErrno(() => native.ioctl(vcpu, C.KVM_RUN, 0), 'EINTR', 4, 'ioctl');
      assert.equal(e.message, 'ioctl KVM_RUN: Interrupted system call');
    } finally {
      native.setKickTarget(0n);
      native.munmap(run, mmapSize);
    }
  } finally {
    for (const fd of fds.reverse()) native.close(fd);
    native.close(kvm);
  }
});
