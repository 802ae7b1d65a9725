/**
 * Unit tests of the plugin SDK that need no host: object ids, the VCPU
 * conversation against a scripted fake host on real pipes, the main
 * connection against a scripted fake host on a real seqpacket pair, and
 * sealed guest memory.
 *
 * The fake hosts answer in advance: the answer is queued on the pipe/socket
 * before the SDK's synchronous call, which then finds it waiting.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { C, native } from '../src/native/index.js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import {
  AddressSpace,
  MainRequest,
  MainResponse,
  VcpuRequest,
  VcpuRequest_StateSet,
  VcpuResponse,
} from '../src/protocol/gen/plugin.js';
import { allocateObjectId, releaseObjectId } from '../src/plugin/object-ids.js';
import { Vcpu } from '../src/plugin/vcpu.js';
import { spinBudgetUs } from '../src/protocol/pipe-reader.js';
import { Connection, GuestMemory, PluginError, RegsView, VmStateSet, type VcpuOptions } from '../src/plugin/index.js';
import { assemble } from './support/asm.js';
import { needsKvm } from './support/kvm.js';
import { examplePlugin, runPluginCli } from './support/run.js';

// ---------------------------------------------------------------------------
// helpers

/** A Vcpu wired to a fake host: `toPlugin` is the host's write end, `fromPlugin` its read end. */
interface FakeVcpu {
  vcpu: Vcpu;
  toPlugin: number;
  fromPlugin: number;
  close(): void;
}

function fakeVcpu(id = 0): FakeVcpu {
  const [requestRead, requestWrite] = native.pipe2(C.O_CLOEXEC);
  const [responseRead, responseWrite] = native.pipe2(C.O_CLOEXEC);
  const vcpu = new Vcpu(id, requestWrite, responseRead, spinBudgetUs());
  return {
    vcpu,
    toPlugin: responseWrite,
    fromPlugin: requestRead,
    close() {
      vcpu.close();
      native.close(requestRead);
      native.close(responseWrite);
    },
  };
}

/** Runs `body` with a {@link fakeVcpu} (VCPU `id`, default 0), closed afterwards however `body` ends. */
function withFakeVcpu(body: (f: FakeVcpu) => void): void;
function withFakeVcpu(id: number, body: (f: FakeVcpu) => void): void;
function withFakeVcpu(...args: [(f: FakeVcpu) => void] | [number, (f: FakeVcpu) => void]): void {
  const [id, body] = args.length === 1 ? [0, args[0]] : args;
  const f = fakeVcpu(id);
  try {
    body(f);
  } finally {
    f.close();
  }
}

function hostSends(fd: number, ...responses: VcpuResponse[]): void {
  // As the host writes them: each with its varint32 length in front.
  const parts = responses.map((r) => VcpuResponse.encode(r, new BinaryWriter().fork()).join().finish());
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  assert.equal(native.write(fd, all, 0, all.length), all.length); // one write: several responses in one read
}

/** Reads one VcpuRequest the plugin wrote (one message per write). */
function hostReceives(fd: number): VcpuRequest {
  const buf = new Uint8Array(0x10000);
  const n = native.read(fd, buf, 0, buf.length);
  return VcpuRequest.decode(buf.subarray(0, n));
}

function nothingPending(fd: number): boolean {
  return native.poll(fd, C.POLLIN, 0) === 0;
}

const waitInit = (): VcpuResponse => ({ errnoValue: 0, message: { $case: 'wait', wait: { exit: { $case: 'init', init: {} } } } });
function waitIo(
  address: bigint,
  isWrite: boolean,
  data: number[],
  extra: Partial<{ noResume: boolean; regs: Uint8Array }> = {},
): VcpuResponse {
  return {
    errnoValue: 0,
    message: {
      $case: 'wait',
      wait: {
        exit: {
          $case: 'io',
          io: {
            space: AddressSpace.IOPORT,
            address,
            isWrite,
            noResume: extra.noResume ?? false,
            data: Buffer.from(data),
            regs: Buffer.from(extra.regs ?? []),
            sregs: Buffer.alloc(0),
            debugregs: Buffer.alloc(0),
          },
        },
      },
    },
  };
}
const stateAnswer = (bytes: Uint8Array): VcpuResponse => ({
  errnoValue: 0,
  message: { $case: 'getState', getState: { state: Buffer.from(bytes) } },
});

// ---------------------------------------------------------------------------

describe('object ids', () => {
  test('unique within a thread, and destroyed ids are reused', () => {
    const ids = new Set<number>();
    for (let i = 0; i < 1000; i++) ids.add(allocateObjectId());
    assert.equal(ids.size, 1000);
    const [first] = ids;
    releaseObjectId(first);
    assert.equal(allocateObjectId(), first);
    for (const id of ids) assert.ok(id >= 0 && id <= 0xffffffff);
  });

  test('unique across worker threads', async () => {
    const url = new URL('../src/plugin/object-ids.js', import.meta.url).href;
    const code = `
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(url)}).then((m) => {
        const ids = [];
        for (let i = 0; i < 500; i++) ids.push(m.allocateObjectId());
        parentPort.postMessage(ids);
      });`;
    const runWorker = () =>
      new Promise<number[]>((resolve, reject) => {
        const w = new Worker(code, { eval: true });
        w.once('message', resolve);
        w.once('error', reject);
      });
    const lists = await Promise.all([runWorker(), runWorker(), runWorker()]);
    const mine = Array.from({ length: 500 }, () => allocateObjectId());
    const all = new Set([...mine, ...lists.flat()]);
    assert.equal(all.size, 2000);
  });
});

describe('VCPU conversation (fake host on real pipes)', () => {
  test('first wait sends wait; several pushed responses in one read are delivered in order', () => {
    withFakeVcpu(3, (f) => {
      hostSends(f.toPlugin, waitInit());
      assert.deepEqual(f.vcpu.wait(), { kind: 'init' });
      assert.equal(hostReceives(f.fromPlugin).message?.$case, 'wait');
      f.vcpu.resume();
      const resume = hostReceives(f.fromPlugin).message;
      assert.equal(resume?.$case, 'resume');

      // Two async-write notifications and a normal read, in a single write.
      hostSends(
        f.toPlugin,
        waitIo(0x80n, true, [0x11], { noResume: true }),
        waitIo(0x80n, true, [0x22], { noResume: true }),
        waitIo(0x60n, false, [0, 0]),
      );
      const a = f.vcpu.wait();
      assert.ok(a.kind === 'io' && a.noResume && a.data[0] === 0x11);
      f.vcpu.resume(); // no-op for noResume
      const b = f.vcpu.wait(); // allowed without resume after a noResume event
      assert.ok(b.kind === 'io' && b.noResume && b.data[0] === 0x22);
      assert.ok(nothingPending(f.fromPlugin), 'no wait or resume is sent for async notifications');
      const c = f.vcpu.wait();
      assert.ok(c.kind === 'io' && !c.isWrite && c.address === 0x60n && c.data.length === 2);
      c.data.set([0x34, 0x12]);
      f.vcpu.resume();
      const r = hostReceives(f.fromPlugin).message;
      assert.ok(r?.$case === 'resume');
      assert.deepEqual([...r.resume.data], [0x34, 0x12]);
      assert.equal(r.resume.regs.length, 0);
      assert.ok(nothingPending(f.fromPlugin));
    });
  });

  test('pushed waits arriving before an answer are queued, not confused with it', () => {
    withFakeVcpu((f) => {
      hostSends(f.toPlugin, waitInit());
      f.vcpu.wait();
      hostReceives(f.fromPlugin);
      f.vcpu.resume();
      hostReceives(f.fromPlugin);
      // Asking right after resume is refused: the host might read both at once.
      assert.throws(
        () => f.vcpu.getState(VcpuRequest_StateSet.FPU),
        (e: unknown) => e instanceof PluginError && e.code === 'EBUSY',
      );
      assert.ok(nothingPending(f.fromPlugin));
      // The VCPU runs and reports an async write; the plugin then asks for the
      // FPU state: the answer comes at the next stop, after two more waits.
      hostSends(f.toPlugin, waitIo(0x8fn, true, [1], { noResume: true }));
      const running = f.vcpu.wait();
      assert.ok(running.kind === 'io' && running.noResume);
      const fpu = new Uint8Array(C.SIZEOF_KVM_FPU).fill(5);
      hostSends(f.toPlugin, waitIo(0x90n, true, [1], { noResume: true }), waitIo(0x91n, false, [0]), stateAnswer(fpu));
      const got = f.vcpu.getState(VcpuRequest_StateSet.FPU);
      assert.deepEqual([...got], [...fpu]);
      const asked = hostReceives(f.fromPlugin).message;
      assert.ok(asked?.$case === 'getState' && asked.getState.set === VcpuRequest_StateSet.FPU);
      const first = f.vcpu.wait();
      assert.ok(first.kind === 'io' && first.address === 0x90n);
      const second = f.vcpu.wait();
      assert.ok(second.kind === 'io' && second.address === 0x91n);
      assert.ok(nothingPending(f.fromPlugin), 'queued waits are not asked for again');
    });
  });

  test('host errors become PluginErrors; wrong answers are protocol errors', () => {
    withFakeVcpu((f) => {
      hostSends(f.toPlugin, { errnoValue: 71, message: { $case: 'getState', getState: { state: Buffer.alloc(0) } } });
      assert.throws(
        () => f.vcpu.getState(VcpuRequest_StateSet.FPU),
        (e: unknown) =>
          e instanceof PluginError &&
          e.errno === 71 &&
          e.code === 'EPROTO' &&
          e.request === 'get_state' &&
          e.message === 'get_state failed: EPROTO (Protocol error)',
      );
      hostReceives(f.fromPlugin);
      hostSends(f.toPlugin, { errnoValue: 0, message: { $case: 'setMsrs', setMsrs: {} } });
      assert.throws(
        () => f.vcpu.getMsrs([0x10]),
        (e: unknown) => e instanceof PluginError && e.transport && e.code === 'EPROTO',
      );
    });
  });

  test('regs: from the io event, deferred sets returned by get and sent with resume', () => {
    withFakeVcpu((f) => {
      hostSends(f.toPlugin, waitInit());
      f.vcpu.wait();
      hostReceives(f.fromPlugin);

      // No event regs: get is a round trip.
      const hostRegs = new RegsView();
      hostRegs.rip = 0xfff0n;
      hostSends(f.toPlugin, stateAnswer(hostRegs.bytes));
      assert.equal(new RegsView(f.vcpu.getRegs()).rip, 0xfff0n);
      const asked = hostReceives(f.fromPlugin).message;
      assert.ok(asked?.$case === 'getState' && asked.getState.set === VcpuRequest_StateSet.REGS);

      // A set is deferred (nothing is sent) and a later get returns it.
      const mine = new RegsView();
      mine.rip = 0x1000n;
      mine.rax = 2n;
      f.vcpu.setRegs(mine.bytes);
      mine.rip = 0xdeadn; // the SDK kept a copy
      assert.ok(nothingPending(f.fromPlugin));
      assert.equal(new RegsView(f.vcpu.getRegs()).rip, 0x1000n);
      assert.throws(
        () => f.vcpu.setRegs(new Uint8Array(3)),
        (e: unknown) => e instanceof PluginError && e.code === 'EINVAL',
      );
      f.vcpu.resume();
      const resume = hostReceives(f.fromPlugin).message;
      assert.ok(resume?.$case === 'resume');
      const sent = new RegsView(new Uint8Array(resume.resume.regs));
      assert.equal(sent.rip, 0x1000n);
      assert.equal(sent.rax, 2n);
      assert.equal(resume.resume.sregs.length, 0);

      // Regs that come with an io event (call hint) answer get without a round trip.
      const hinted = new RegsView();
      hinted.rcx = 42n;
      hostSends(f.toPlugin, waitIo(0x3f8n, true, [0x41], { regs: hinted.bytes }));
      const ev = f.vcpu.wait();
      assert.ok(ev.kind === 'io' && ev.regs !== undefined);
      assert.equal(new RegsView(f.vcpu.getRegs()).rcx, 42n);
      assert.ok(nothingPending(f.fromPlugin));
      f.vcpu.resume();
      const plain = hostReceives(f.fromPlugin).message;
      assert.ok(plain?.$case === 'resume' && plain.resume.regs.length === 0 && plain.resume.data.length === 0);
    });
  });

  test('hypercall result travels as 8 little-endian bytes; paused events carry user', () => {
    withFakeVcpu((f) => {
      hostSends(f.toPlugin, {
        errnoValue: 0,
        message: { $case: 'wait', wait: { exit: { $case: 'hypervCall', hypervCall: { input: 5n, params0: 6n, params1: 7n } } } },
      });
      const ev = f.vcpu.wait();
      hostReceives(f.fromPlugin);
      assert.ok(ev.kind === 'hypervCall');
      assert.deepEqual(ev.params, [6n, 7n]);
      ev.result = 0x0102030405060708n;
      f.vcpu.resume();
      const r = hostReceives(f.fromPlugin).message;
      assert.ok(r?.$case === 'resume');
      assert.deepEqual([...r.resume.data], [8, 7, 6, 5, 4, 3, 2, 1]);
      hostSends(f.toPlugin, {
        errnoValue: 0,
        message: { $case: 'wait', wait: { exit: { $case: 'user', user: { user: 99n } } } },
      });
      assert.deepEqual(f.vcpu.wait(), { kind: 'paused', user: 99n });
      assert.throws(() => f.vcpu.wait(), /resume\(\) first/);
    });
  });

  test('host hang-up is a clear transport error', () => {
    const f = fakeVcpu();
    native.close(f.toPlugin);
    try {
      assert.throws(
        () => f.vcpu.wait(),
        (e: unknown) => e instanceof PluginError && e.transport && /closed the VCPU pipe/.test(e.message),
      );
    } finally {
      f.vcpu.close();
      native.close(f.fromPlugin);
    }
  });
});

describe('main connection (fake host on a real seqpacket pair)', () => {
  function pair(): { conn: Connection; host: number } {
    const [plugin, host] = native.seqpacketPair(true);
    return { conn: Connection.fromFd(plugin), host };
  }
  function answer(host: number, response: MainResponse, fds: number[] = []): void {
    const bytes = MainResponse.encode(response).finish();
    native.sendmsg(host, bytes, bytes.length, fds);
  }
  function received(host: number): { request: MainRequest; fds: number[] } {
    const buf = new Uint8Array(4096);
    const m = native.recvmsg(host, buf, 4)!;
    return { request: MainRequest.decode(buf.subarray(0, m.bytes)), fds: m.fds };
  }

  test('typed calls encode the request and throw PluginError on errno', () => {
    const { conn, host } = pair();
    try {
      answer(host, { errnoValue: 0, message: { $case: 'reserveRange', reserveRange: {} } });
      conn.reserveRange(AddressSpace.IOPORT, 0x3f8n, 1n, { asyncWrite: true });
      const { request } = received(host);
      assert.deepEqual(request.message, {
        $case: 'reserveRange',
        reserveRange: { space: AddressSpace.IOPORT, start: 0x3f8n, length: 1n, asyncWrite: true },
      });

      answer(host, { errnoValue: 1, message: { $case: 'reserveRange', reserveRange: {} } });
      assert.throws(
        () => conn.reserveRange(AddressSpace.MMIO, 0n, 0x10n),
        (e: unknown) =>
          e instanceof PluginError &&
          e.errno === 1 &&
          e.code === 'EPERM' &&
          !e.transport &&
          e.message === 'reserve_range failed: EPERM (Operation not permitted)',
      );
      received(host);

      // The raw request never throws on errno.
      answer(host, { errnoValue: 25, message: undefined });
      const raw = conn.request({ message: { $case: 'start', start: {} } });
      assert.equal(raw.response.errnoValue, 25);
      received(host);

      answer(host, { errnoValue: 0, message: { $case: 'getState', getState: { state: Buffer.from([1, 2, 3]) } } });
      assert.deepEqual([...conn.getVmState(VmStateSet.PIT)], [1, 2, 3]);
      assert.deepEqual(received(host).request.message, { $case: 'getState', getState: { set: VmStateSet.PIT } });
    } finally {
      conn.close();
      native.close(host);
    }
  });

  test('descriptors come back with answers; create uses fresh ids; destroy closes owned fds', () => {
    const { conn, host } = pair();
    const efd = native.eventfd(0, C.EFD_CLOEXEC);
    try {
      answer(host, { errnoValue: 0, message: { $case: 'getShutdownEventfd', getShutdownEventfd: {} } }, [efd]);
      const shutdown = conn.getShutdownEventfd();
      native.eventfdWrite(shutdown, 3);
      assert.equal(Number(native.eventfdRead(efd)), 3, 'the received fd is the host eventfd');
      native.close(shutdown);
      received(host);

      answer(host, { errnoValue: 0, message: { $case: 'create', create: {} } }, [efd]);
      const io = conn.createIoEvent(AddressSpace.IOPORT, 0x70n, 1, 0x5an);
      const create = received(host).request.message;
      assert.ok(create?.$case === 'create' && create.create.kind?.$case === 'ioEvent');
      assert.equal(create.create.id, io.id);
      assert.deepEqual(create.create.kind.ioEvent, { space: AddressSpace.IOPORT, address: 0x70n, length: 1, datamatch: 0x5an });

      answer(host, { errnoValue: 0, message: { $case: 'destroy', destroy: {} } });
      io.destroy();
      assert.deepEqual(received(host).request.message, { $case: 'destroy', destroy: { id: io.id } });
      assert.throws(() => native.fcntl(io.fd, C.F_GETFD, 0), 'the handle closed its eventfd');
      assert.throws(() => io.destroy(), PluginError);

      // A missing fd on an answer that needs one is a protocol error.
      answer(host, { errnoValue: 0, message: { $case: 'newConnection', newConnection: {} } });
      assert.throws(
        () => conn.newConnection(),
        (e: unknown) => e instanceof PluginError && e.code === 'EPROTO',
      );
      received(host);
    } finally {
      native.close(efd);
      conn.close();
      native.close(host);
    }
  });

  test('get_vcpus hands out pipe pairs, cached', () => {
    const { conn, host } = pair();
    const [r1, w1] = native.pipe2(C.O_CLOEXEC);
    const [r2, w2] = native.pipe2(C.O_CLOEXEC);
    try {
      answer(host, { errnoValue: 0, message: { $case: 'getVcpus', getVcpus: {} } }, [w1, r2]);
      const vcpus = conn.getVcpus();
      assert.equal(vcpus.length, 1);
      assert.equal(conn.getVcpus(), vcpus);
      assert.equal(conn.getVcpu(0).id, 0);
      assert.throws(
        () => conn.getVcpu(1),
        (e: unknown) => e instanceof PluginError && e.code === 'ENOENT',
      );
      received(host);
      // The VCPU writes its first wait on the request pipe (w1's copy).
      hostSends(w2, waitInit());
      assert.equal(vcpus[0].wait().kind, 'init');
      assert.equal(hostReceives(r1).message?.$case, 'wait');
    } finally {
      conn.close();
      for (const fd of [r1, w1, r2, w2]) native.close(fd);
      native.close(host);
    }
  });

  test("threadPerVcpu: VCPU reads spin (non-blocking fds) only with fewer VCPUs than cores, as the host's", () => {
    // A VCPU that spins reads its response pipe non-blocking (PipeReader);
    // one that sleeps in read(2), as crosvm, keeps it blocking.
    const cores = availableParallelism();
    const on = spinBudgetUs() > 0; // PLUGVISOR_SPIN_US=0 turns every spin off
    const spins = (count: number, options?: VcpuOptions): boolean[] => {
      const { conn, host } = pair();
      const pipes = Array.from({ length: count }, () => [...native.pipe2(C.O_CLOEXEC), ...native.pipe2(C.O_CLOEXEC)]);
      try {
        // Per VCPU: the request pipe's write end, then the response pipe's read end.
        answer(
          host,
          { errnoValue: 0, message: { $case: 'getVcpus', getVcpus: {} } },
          pipes.flatMap(([, w1, r2]) => [w1, r2]),
        );
        assert.equal(conn.getVcpus(options).length, count);
        received(host);
        // O_NONBLOCK belongs to the open file, which the plugin's copy shares with r2.
        return pipes.map(([, , r2]) => (native.fcntl(r2, C.F_GETFL, 0) & C.O_NONBLOCK) !== 0);
      } finally {
        conn.close();
        for (const fd of pipes.flat()) native.close(fd);
        native.close(host);
      }
    };
    assert.deepEqual(spins(cores), Array(cores).fill(on), 'one thread serving every VCPU spins');
    assert.deepEqual(
      spins(cores, { threadPerVcpu: true }),
      Array(cores).fill(false),
      'a thread per VCPU, as many as cores: no spin',
    );
    if (cores > 1)
      assert.deepEqual(spins(cores - 1, { threadPerVcpu: true }), Array(cores - 1).fill(on), 'fewer VCPUs than cores: spin');
  });

  test('a host that hung up gives a clear transport error', () => {
    const { conn, host } = pair();
    native.close(host);
    try {
      assert.throws(
        () => conn.start(),
        (e: unknown) =>
          e instanceof PluginError && e.transport && e.request === 'start' && /hung up|closed the connection/.test(e.message),
      );
    } finally {
      conn.close();
    }
  });

  test('connect() explains a missing or invalid CROSVM_SOCKET', () => {
    const saved = process.env['CROSVM_SOCKET'];
    try {
      delete process.env['CROSVM_SOCKET'];
      assert.throws(
        () => Connection.connect(),
        (e: unknown) => e instanceof PluginError && e.code === 'ENOTCONN' && /CROSVM_SOCKET/.test(e.message),
      );
      process.env['CROSVM_SOCKET'] = 'five';
      assert.throws(
        () => Connection.connect(),
        (e: unknown) => e instanceof PluginError && e.code === 'EINVAL',
      );
      process.env['CROSVM_SOCKET'] = '-3';
      assert.throws(
        () => Connection.connect(),
        (e: unknown) => e instanceof PluginError && e.code === 'EINVAL',
      );
    } finally {
      if (saved === undefined) delete process.env['CROSVM_SOCKET'];
      else process.env['CROSVM_SOCKET'] = saved;
    }
  });
});

describe('GuestMemory', () => {
  test('is a sealed memfd whose bytes are the file', () => {
    const mem = GuestMemory.create(0x2000, 'sdk-test');
    try {
      const seals = native.fcntl(mem.fd, C.F_GET_SEALS, 0);
      assert.ok(seals & C.F_SEAL_SHRINK, 'F_SEAL_SHRINK');
      assert.ok(seals & C.F_SEAL_GROW, 'F_SEAL_GROW');
      assert.equal(seals & C.F_SEAL_WRITE, 0, 'still writable');
      assert.equal(native.fstatSize(mem.fd), 0x2000);
      assert.throws(() => native.ftruncate(mem.fd, 0x1000), 'cannot shrink');
      assert.equal(mem.bytes.length, 0x2000);
      mem.bytes.set([0xde, 0xad, 0xbe, 0xef], 0x10);
      const back = new Uint8Array(0x20);
      assert.equal(native.read(mem.fd, back, 0, back.length), back.length);
      assert.deepEqual([...back.subarray(0x10, 0x14)], [0xde, 0xad, 0xbe, 0xef]);
      assert.deepEqual([...back.subarray(0, 0x10)], new Array(0x10).fill(0));
    } finally {
      mem.close();
    }
    assert.ok(mem.closed);
    assert.throws(() => mem.bytes, /closed/);
    mem.close(); // idempotent
  });

  test('rejects bad sizes', () => {
    assert.throws(() => GuestMemory.create(0), RangeError);
    assert.throws(() => GuestMemory.create(1.5), RangeError);
  });
});

// ---------------------------------------------------------------------------
// Against the real host (skipped without /dev/kvm).

const SDK_URL = new URL('../src/plugin/index.js', import.meta.url).href;
const NATIVE_URL = new URL('../src/native/index.js', import.meta.url).href;
const TEST_PLUGIN_URL = new URL('./support/test-plugin.js', import.meta.url).href;

// The guest of the end-to-end SDK plugin below (real mode, loaded at 0x1000).
const E2E_GUEST = `
bits 16
org 0x1000
  mov dx, 0x80
  mov al, 0x11
  out dx, al          ; async write #1 (no stop)
  mov al, 0x22
  out dx, al          ; async write #2 (no stop)
  mov dx, 0x60
  in al, dx           ; stop: the plugin answers 0x5a
  mov bl, al
  mov dx, 0x61
  out dx, al          ; matches the call hint (rbx = 0x5a): regs + sregs come along
  mov ax, cx          ; cx was set by the plugin (deferred setRegs)
  mov dx, 0x62
  out dx, ax
  mov al, [0x3000]    ; MMIO read: the plugin answers 0x42 through resume(data)
  mov [0x2000], al    ; dirties the logged page
  mov dx, 0x63
  out dx, al
spin:
  jmp spin            ; until paused
`;

// A plugin exercising the SDK against the host. Every check is an assertion:
// any failure makes the plugin exit non-zero with the reason on stderr.
const E2E_PLUGIN = `#!/usr/bin/env node
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { Worker } from 'node:worker_threads';
import { AddressSpace, Connection, GuestMemory, PluginError, RegsView, VcpuStateSet, VmStateSet, kvmConstants }
  from ${JSON.stringify(SDK_URL)};
import { native } from ${JSON.stringify(NATIVE_URL)};
import { setUpRealMode } from ${JSON.stringify(TEST_PLUGIN_URL)};

const C = kvmConstants();
const code = Buffer.from(process.argv[2], 'hex');
const conn = Connection.connect();
const isErr = (code) => (e) => e instanceof PluginError && e.code === code;

// Global requests and their errors.
assert.equal(conn.checkExtension(C.KVM_CAP_IRQCHIP), true);
assert.ok(conn.getSupportedCpuid().length > 0);
assert.ok(conn.getMsrIndexList().length > 0);
assert.equal(conn.getVmState(VmStateSet.CLOCK).length, C.SIZEOF_KVM_CLOCK_DATA);
conn.reserveRange(AddressSpace.IOPORT, 0x60n, 4n);
assert.throws(() => conn.reserveRange(AddressSpace.IOPORT, 0x61n, 1n),
  (e) => isErr('EPERM')(e) && e.message === 'reserve_range failed: EPERM (Operation not permitted)');
assert.throws(() => conn.unreserveRange(AddressSpace.IOPORT, 0x99n), isErr('ENOENT'));
assert.throws(() => conn.destroy(0xabcdef), isErr('ENOENT'));
conn.reserveRange(AddressSpace.IOPORT, 0x80n, 1n, { asyncWrite: true });
conn.reserveRange(AddressSpace.MMIO, 0x3000n, 0x1000n);

// Memory: code at 0x1000, a dirty-logged page at 0x2000; an unsealed memfd is refused.
const text = GuestMemory.create(0x1000);
text.bytes.set(code);
conn.createMemory(text, { start: 0x1000n });
const page = GuestMemory.create(0x1000);
const logged = conn.createMemory(page, { start: 0x2000n, dirtyLog: true });
const unsealed = native.memfdCreate('unsealed', C.MFD_CLOEXEC);
native.ftruncate(unsealed, 0x1000);
assert.throws(() => conn.createMemory({ fd: unsealed }, { start: 0x8000n, length: 0x1000n }), isErr('EPERM'));

// Ids stay unique across threads: a worker with its own connection creates an
// object while ours is alive.
const mine = conn.createIoEvent(AddressSpace.IOPORT, 0x71n, 0);
const second = conn.newConnection();
const workerId = await new Promise((resolve, reject) => {
  const w = new Worker(\`
    const { parentPort, workerData } = require('node:worker_threads');
    import(workerData.url).then(({ Connection, AddressSpace }) => {
      const c = Connection.fromFd(workerData.fd);
      const ev = c.createIoEvent(AddressSpace.IOPORT, 0x70n, 1, 7n);
      parentPort.postMessage(ev.id);
      ev.destroy();
    });\`, { eval: true, workerData: { fd: second.fd, url: ${JSON.stringify(SDK_URL)} } });
  w.once('message', resolve);
  w.once('error', reject);
});
assert.notEqual(workerId, mine.id);
mine.destroy();

conn.setCallHint({ space: AddressSpace.IOPORT, address: 0x61n, onWrite: true, details: [
  { matchRbx: true, rbx: 0x99n, sendDebugregs: true },
  { matchRbx: true, rbx: 0x5an, sendSregs: true },
] });

const vcpu = conn.getVcpu(0);
assert.throws(() => conn.getVcpu(1), isErr('ENOENT'));
conn.start();
assert.throws(() => conn.start(), isErr('EINVAL'));

let ev = vcpu.wait();
assert.equal(ev.kind, 'init');
setUpRealMode(vcpu); // sets (deferred) sregs and regs: rip 0x1000
assert.equal(new RegsView(vcpu.getRegs()).rip, 0x1000n, 'a get returns the deferred set');
vcpu.resume();
assert.throws(() => vcpu.getState(VcpuStateSet.FPU), isErr('EBUSY'), 'no request before the VCPU reported');

ev = vcpu.wait();
assert.ok(ev.kind === 'io' && ev.noResume && ev.isWrite && ev.address === 0x80n && ev.data[0] === 0x11, inspect(ev));
vcpu.resume(); // no-op
// Asked while the VCPU runs: the answer comes at its next stop, after the
// pushed waits (async write #2 and the read), which are queued for wait().
assert.equal(vcpu.getState(VcpuStateSet.FPU).length, C.SIZEOF_KVM_FPU);
ev = vcpu.wait();
assert.ok(ev.kind === 'io' && ev.noResume && ev.data[0] === 0x22);
ev = vcpu.wait();
assert.ok(ev.kind === 'io' && !ev.isWrite && !ev.noResume && ev.address === 0x60n && ev.data.length === 1);
ev.data[0] = 0x5a;
vcpu.resume();

ev = vcpu.wait();
assert.ok(ev.kind === 'io' && ev.isWrite && ev.address === 0x61n && ev.data[0] === 0x5a);
assert.ok(ev.regs && ev.sregs && !ev.debugregs, 'the second hint detail matched');
assert.equal(new RegsView(vcpu.getRegs()).rbx, 0x5an);
const next = new RegsView(vcpu.getRegs());
next.rcx = 0x1234n;
vcpu.setRegs(next.bytes);
vcpu.resume();

ev = vcpu.wait();
assert.ok(ev.kind === 'io' && ev.address === 0x62n && ev.data.length === 2);
assert.deepEqual([...ev.data], [0x34, 0x12]);
assert.equal(ev.regs, undefined, 'no hint on 0x62');
vcpu.resume();

ev = vcpu.wait();
assert.ok(ev.kind === 'io' && ev.space === AddressSpace.MMIO && ev.address === 0x3000n && !ev.isWrite && ev.data.length === 1);
vcpu.resume(Uint8Array.of(0x42));

ev = vcpu.wait();
assert.ok(ev.kind === 'io' && ev.address === 0x63n && ev.data[0] === 0x42);
assert.equal(page.bytes[0], 0x42, 'the guest wrote plugin memory');
assert.equal(logged.dirtyLog()[0] & 1, 1, 'page 0 is dirty');
vcpu.resume();

conn.pauseVcpus(1n, 77n);
ev = vcpu.wait();
assert.deepEqual(ev, { kind: 'paused', user: 77n });
process.stdout.write('sdk-e2e ok\\n');
process.exit(0);
`;

describe('against the host', needsKvm, () => {
  test('the adder demo prints the sum', async () => {
    const result = await runPluginCli(examplePlugin('adder'));
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, '9\nguest computed 2 + 7 = 9\n');
  });

  test('an SDK plugin: errors, memory, dirty log, ids across threads, queued async writes, hints, deferred regs, MMIO, pause', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'plugvisor-sdk-'));
    try {
      const plugin = path.join(dir, 'sdk-e2e.mjs');
      writeFileSync(plugin, E2E_PLUGIN);
      chmodSync(plugin, 0o755);
      const guest = Buffer.from(assemble(E2E_GUEST)).toString('hex');
      const result = await runPluginCli(plugin, { args: [guest] });
      assert.equal(result.code, 0, `stdout: ${result.stdout}\nstderr: ${result.stderr}`);
      assert.match(result.stdout, /sdk-e2e ok/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
