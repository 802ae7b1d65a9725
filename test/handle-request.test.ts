/**
 * PluginProcess.handleRequest, the one place every MainRequest is answered,
 * without KVM: the VM and the system KVM handle are fakes that record what
 * the host asks of them (the only fakes; descriptors, memfds, mappings, the
 * reserved ranges and the native VCPU set that takes the published
 * configuration are real). What is checked is what a plugin would see on the
 * wire (errno, member, descriptors) and what the host did to the VM for it.
 * The same requests against real KVM: protocol-vm.test.ts, host.test.ts.
 */
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { C, native } from '../src/native/index.js';
import { createLog } from '../src/host/log.js';
import { PluginProcess } from '../src/host/process.js';
import { AddressSpace, MainRequest, MainRequest_StateSet, MainResponse } from '../src/protocol/gen/plugin.js';

const E = constants.errno;

/** What the host was built with, whatever the KVM layer names them. */
type HostKvm = ConstructorParameters<typeof PluginProcess>[0];
type HostVm = ConstructorParameters<typeof PluginProcess>[1];
type Reply = ReturnType<PluginProcess['handleRequest']>;

interface Call {
  method: string;
  args: unknown[];
}

/**
 * A VM that records every call and answers with fixed state; `fail` makes a
 * method throw instead (an errno error from a real system call, or any error).
 */
class FakeVm {
  readonly calls: Call[] = [];
  readonly fail = new Map<string, () => never>();
  /** The state get_state returns, by method. */
  readonly state = {
    pic: Uint8Array.from({ length: C.SIZEOF_KVM_PIC_STATE }, (_, i) => i),
    pit: new Uint8Array(C.SIZEOF_KVM_PIT_STATE2).fill(7),
  };

  private record(method: string, ...args: unknown[]): void {
    this.calls.push({ method, args });
    this.fail.get(method)?.();
  }

  /** The calls of `method`, by their arguments. */
  of(method: string): unknown[][] {
    return this.calls.filter((c) => c.method === method).map((c) => c.args);
  }

  checkExtension(cap: number): number {
    this.record('checkExtension', cap);
    return cap === C.KVM_CAP_IRQCHIP ? 1 : 0;
  }
  setUserMemoryRegion(region: Parameters<HostVm['setUserMemoryRegion']>[0]): void {
    this.record('setUserMemoryRegion', region);
  }
  ioeventfd(registration: Parameters<HostVm['ioeventfd']>[0]): void {
    this.record('ioeventfd', registration);
  }
  irqfd(registration: Parameters<HostVm['irqfd']>[0]): void {
    this.record('irqfd', registration);
  }
  setIrqLine(irq: number, level: boolean): void {
    this.record('setIrqLine', irq, level);
  }
  setGsiRouting(routes: Parameters<HostVm['setGsiRouting']>[0]): void {
    this.record('setGsiRouting', routes);
  }
  getIrqchip(chip: number): Uint8Array {
    this.record('getIrqchip', chip);
    return this.state.pic;
  }
  setIrqchip(chip: number, bytes: Uint8Array): void {
    this.record('setIrqchip', chip, [...bytes]);
  }
  getPit2(): Uint8Array {
    this.record('getPit2');
    return this.state.pit;
  }
  setPit2(bytes: Uint8Array): void {
    this.record('setPit2', bytes.length);
  }
  getClock(): Uint8Array {
    this.record('getClock');
    return new Uint8Array(C.SIZEOF_KVM_CLOCK_DATA);
  }
  setClock(bytes: Uint8Array): void {
    this.record('setClock', bytes.length);
  }
  setIdentityMapAddr(address: bigint): void {
    this.record('setIdentityMapAddr', address);
  }
  getDirtyLog(slot: number, pages: number): Uint8Array {
    this.record('getDirtyLog', slot, pages);
    return Uint8Array.of(0b1001, 0x80).subarray(0, Math.ceil(pages / 8));
  }
}

/** The system KVM handle: the queries the main connection forwards. */
const fakeKvm = {
  supportedCpuid: () => [
    { function: 0, index: 0, flags: 0, eax: 0xd, ebx: 0x756e_6547, ecx: 0x6c65_746e, edx: 0x4965_6e69 },
    { function: 7, index: 1, flags: C.KVM_CPUID_FLAG_SIGNIFCANT_INDEX, eax: 1, ebx: 2, ecx: 3, edx: 4 },
  ],
  emulatedCpuid: () => [{ function: 1, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 1 << 22, edx: 0 }],
  msrIndexList: () => [0x10, 0x174],
};

let vm: FakeVm;
let host: PluginProcess;
let logged: string[];
/** Descriptors the replies handed out, closed after each test as the host's send would. */
let handedOut: number[];

beforeEach(() => {
  vm = new FakeVm();
  logged = [];
  handedOut = [];
  const log = createLog((level, message) => logged.push(`${level}: ${message}`));
  const events = { onStarted: () => {}, onVcpuExit: () => {}, onPluginExit: () => {} };
  host = new PluginProcess(fakeKvm as unknown as HostKvm, vm as unknown as HostVm, 2, log, () => {}, events);
});

afterEach(() => {
  host.close();
  for (const fd of handedOut) native.close(fd);
});

/** Sends `message` as a plugin would, with descriptors `fds`; the reply's errno and member. */
function ask(message: MainRequest['message'], fds: readonly number[] = []): Reply & { errno: number; member: string | null } {
  const reply = host.handleRequest({ message }, fds);
  handedOut.push(...reply.closeAfterSend);
  return { ...reply, errno: reply.response.errnoValue, member: reply.response.message?.$case ?? null };
}

/** A reply as the plugin reads it: [errno, member]. */
function wire(reply: { errno: number; member: string | null }): [number, string | null] {
  return [reply.errno, reply.member];
}

/** A memfd of `size` bytes, sealed against shrinking unless `sealed` is false. */
function memfd(size: number, sealed = true): number {
  const fd = native.memfdCreate('handle-request', C.MFD_CLOEXEC | C.MFD_ALLOW_SEALING);
  native.ftruncate(fd, size);
  if (sealed) native.fcntl(fd, C.F_ADD_SEALS, C.F_SEAL_SHRINK);
  handedOut.push(fd);
  return fd;
}

function createMemory(
  id: number,
  start: bigint,
  length: bigint,
  fd: number | undefined,
  flags: { readOnly?: boolean; dirtyLog?: boolean } = {},
) {
  const memory = { offset: 0n, start, length, readOnly: flags.readOnly ?? false, dirtyLog: flags.dirtyLog ?? false };
  return ask({ $case: 'create', create: { id, kind: { $case: 'memory', memory } } }, fd === undefined ? [] : [fd]);
}

function reserve(space: AddressSpace, start: bigint, length: bigint) {
  return ask({ $case: 'reserveRange', reserveRange: { space, start, length, asyncWrite: false } });
}

describe('handleRequest', () => {
  test('a request with no member: ENOTTY, and no member back', () => {
    assert.deepEqual(wire(ask(undefined)), [E.ENOTTY, null]);
  });

  test("reserve_range: the protocol's rules, answered with the member; the native VCPUs take each new table", () => {
    assert.deepEqual(wire(reserve(AddressSpace.IOPORT, 0x60n, 4n)), [0, 'reserveRange']);
    assert.deepEqual(wire(reserve(AddressSpace.IOPORT, 0x62n, 1n)), [E.EPERM, 'reserveRange'], 'inside the first');
    assert.equal(reserve(AddressSpace.MMIO, 0x60n, 4n).errno, 0, 'another space');
    assert.equal(reserve(AddressSpace.IOPORT, 0x61n, 0n).errno, E.ENOENT, 'unreserving what does not start there');
    assert.equal(reserve(AddressSpace.IOPORT, 0x60n, 0n).errno, 0);
    assert.equal(reserve(7 as AddressSpace, 0x60n, 4n).errno, E.EINVAL, 'an unknown space');
    assert.equal(reserve(AddressSpace.MMIO, (1n << 64n) - 1n, 1n).errno, E.EINVAL, 'past 2^64 - 1');
    assert.deepEqual(logged, []);
  });

  test('create memory: the memfd is checked, mapped and installed in the next free slot; destroy removes it', () => {
    assert.equal(createMemory(1, 0x10000n, 0x1000n, undefined).errno, E.EBADF, 'no memfd');
    assert.equal(createMemory(1, 0x10000n, 0x1000n, memfd(0x1000, false)).errno, E.EPERM, 'not sealed');
    assert.equal(createMemory(1, 0x10000n, 0x2000n, memfd(0x1000)).errno, E.EINVAL, 'past the end of the memfd');
    assert.deepEqual(vm.of('setUserMemoryRegion'), [], 'nothing refused reached the VM');

    const first = createMemory(1, 0x10000n, 0x2000n, memfd(0x2000), { readOnly: true });
    assert.deepEqual(wire(first), [0, 'create']);
    assert.deepEqual(first.fds, []);
    assert.equal(createMemory(1, 0x40000n, 0x1000n, memfd(0x1000)).errno, E.EEXIST, 'the id is taken');
    assert.equal(createMemory(2, 0x11000n, 0x2000n, memfd(0x2000)).errno, E.ENOSPC, 'overlaps slot 0');
    assert.equal(createMemory(2, 0x12000n, 0x1000n, memfd(0x1000), { dirtyLog: true }).errno, 0, 'adjacent');
    const installed = vm.of('setUserMemoryRegion').map(([r]) => r as Parameters<HostVm['setUserMemoryRegion']>[0]);
    assert.deepEqual(
      installed.map((r) => [r.slot, r.flags, r.guestPhysAddr, r.memorySize]),
      [
        [0, C.KVM_MEM_READONLY, 0x10000n, 0x2000n],
        [1, C.KVM_MEM_LOG_DIRTY_PAGES, 0x12000n, 0x1000n],
      ],
    );
    assert.ok(
      installed.every((r) => r.userspaceAddr !== 0n),
      'backed by a mapping',
    );

    assert.deepEqual(wire(ask({ $case: 'destroy', destroy: { id: 1 } })), [0, 'destroy']);
    assert.deepEqual(wire(ask({ $case: 'destroy', destroy: { id: 1 } })), [E.ENOENT, 'destroy'], 'already destroyed');
    const removed = vm.of('setUserMemoryRegion').at(-1)![0] as Parameters<HostVm['setUserMemoryRegion']>[0];
    assert.deepEqual([removed.slot, removed.memorySize], [0, 0n]);
    assert.equal(createMemory(3, 0x20000n, 0x1000n, memfd(0x1000)).errno, 0);
    assert.equal((vm.of('setUserMemoryRegion').at(-1)![0] as { slot: number }).slot, 0, 'slot 0 is free again');
  });

  test('dirty_log: the bitmap of a dirty-logged slot, by its page count; ENOENT for any other id', () => {
    createMemory(1, 0x10000n, 0x9000n, memfd(0x9000), { dirtyLog: true });
    createMemory(2, 0x20000n, 0x1000n, memfd(0x1000));
    const log = ask({ $case: 'dirtyLog', dirtyLog: { id: 1 } });
    assert.equal(log.errno, 0);
    assert.ok(log.response.message?.$case === 'dirtyLog');
    assert.deepEqual([...log.response.message.dirtyLog.bitmap], [0b1001, 0x80]);
    assert.deepEqual(vm.of('getDirtyLog'), [[0, 9]]);
    assert.deepEqual(wire(ask({ $case: 'dirtyLog', dirtyLog: { id: 2 } })), [E.ENOENT, 'dirtyLog'], 'not dirty-logged');
    assert.equal(ask({ $case: 'dirtyLog', dirtyLog: { id: 99 } }).errno, E.ENOENT);
  });

  test('create io_event / irq_event: registered with the VM, their eventfds handed to the plugin', () => {
    const ioEvent = (id: number, space: AddressSpace, length: number) =>
      ask({
        $case: 'create',
        create: { id, kind: { $case: 'ioEvent', ioEvent: { space, address: 0x300n, length, datamatch: 0x5an } } },
      });
    assert.equal(ioEvent(1, AddressSpace.IOPORT, 3).errno, E.EINVAL, 'length 3');
    assert.equal(ioEvent(1, 9 as AddressSpace, 1).errno, E.EINVAL, 'unknown space');
    const port = ioEvent(1, AddressSpace.IOPORT, 1);
    const any = ioEvent(2, AddressSpace.MMIO, 0);
    assert.deepEqual([port.errno, port.fds.length, any.errno, any.fds.length], [0, 1, 0, 1]);
    assert.deepEqual(vm.of('ioeventfd'), [
      [{ fd: port.fds[0], address: 0x300n, length: 1, pio: true, datamatch: 0x5an }],
      [{ fd: any.fds[0], address: 0x300n, length: 0, pio: false }], // length 0: no datamatch
    ]);

    const irq = ask({ $case: 'create', create: { id: 3, kind: { $case: 'irqEvent', irqEvent: { irqId: 5, resample: true } } } });
    assert.equal(irq.errno, 0);
    assert.equal(irq.fds.length, 2);
    assert.deepEqual(vm.of('irqfd'), [[{ fd: irq.fds[0], gsi: 5, resampleFd: irq.fds[1] }]]);
    assert.equal(ask({ $case: 'create', create: { id: 4, kind: undefined } }).errno, E.EINVAL, 'no kind');

    assert.equal(ask({ $case: 'destroy', destroy: { id: 1 } }).errno, 0);
    assert.deepEqual(vm.of('ioeventfd').at(-1), [
      { fd: port.fds[0], address: 0x300n, length: 1, pio: true, datamatch: 0x5an, deassign: true },
    ]);
  });

  test('a kernel error carries its errno to the plugin; any other failure is EINVAL and logged', () => {
    vm.fail.set('setIrqLine', () => {
      native.close(-1); // a real system call's error: EBADF
      throw new Error('unreachable');
    });
    assert.deepEqual(wire(ask({ $case: 'setIrq', setIrq: { irqId: 4, active: true } })), [E.EBADF, 'setIrq']);
    assert.deepEqual(logged, []);

    vm.fail.set('setIdentityMapAddr', () => {
      throw new TypeError('a bug');
    });
    assert.deepEqual(wire(ask({ $case: 'setIdentityMapAddr', setIdentityMapAddr: { address: 0xfffbc000 } })), [
      E.EINVAL,
      'setIdentityMapAddr',
    ]);
    assert.equal(logged.length, 1);
    assert.match(logged[0], /^error: request setIdentityMapAddr failed unexpectedly: TypeError: a bug/);
    assert.deepEqual(vm.of('setIdentityMapAddr'), [[0xfffbc000n]]);
  });

  test('set_irq_routing: each route handed to the VM; a route without a kind is EINVAL and nothing is set', () => {
    const routes = [
      { irqId: 30, route: { $case: 'irqchip' as const, irqchip: { irqchip: 0, pin: 3 } } },
      { irqId: 31, route: { $case: 'msi' as const, msi: { address: 0xfee00000n, data: 0x50 } } },
    ];
    assert.equal(
      ask({ $case: 'setIrqRouting', setIrqRouting: { routes: [...routes, { irqId: 32, route: undefined }] } }).errno,
      E.EINVAL,
    );
    assert.deepEqual(vm.of('setGsiRouting'), []);
    assert.equal(ask({ $case: 'setIrqRouting', setIrqRouting: { routes } }).errno, 0);
    assert.deepEqual(vm.of('setGsiRouting'), [
      [
        [
          { gsi: 30, kind: 'irqchip', irqchip: 0, pin: 3 },
          { gsi: 31, kind: 'msi', address: 0xfee00000n, data: 0x50 },
        ],
      ],
    ]);
    assert.equal(ask({ $case: 'setIrq', setIrq: { irqId: 30, active: true } }).errno, 0);
    assert.deepEqual(vm.of('setIrqLine'), [[30, true]]);
  });

  test("get_state / set_state: each set to its kernel call, exactly the kernel struct's size, else EINVAL", () => {
    const get = ask({ $case: 'getState', getState: { set: MainRequest_StateSet.PIC1 } });
    assert.ok(get.response.message?.$case === 'getState');
    assert.deepEqual([...get.response.message.getState.state], [...vm.state.pic]);
    const pit = ask({ $case: 'getState', getState: { set: MainRequest_StateSet.PIT } });
    assert.ok(pit.response.message?.$case === 'getState');
    assert.deepEqual([...pit.response.message.getState.state], [...vm.state.pit]);

    const state = Buffer.alloc(C.SIZEOF_KVM_PIC_STATE, 0xa5);
    assert.equal(
      ask({ $case: 'setState', setState: { set: MainRequest_StateSet.PIC1, state: state.subarray(1) } }).errno,
      E.EINVAL,
    );
    assert.equal(ask({ $case: 'setState', setState: { set: 99 as MainRequest_StateSet, state } }).errno, E.EINVAL);
    assert.deepEqual(wire(ask({ $case: 'getState', getState: { set: 99 as MainRequest_StateSet } })), [E.EINVAL, 'getState']);
    assert.deepEqual(vm.of('setIrqchip'), [], 'nothing refused reached the VM');
    assert.equal(ask({ $case: 'setState', setState: { set: MainRequest_StateSet.PIC1, state } }).errno, 0);
    assert.equal(
      ask({ $case: 'setState', setState: { set: MainRequest_StateSet.CLOCK, state: Buffer.alloc(C.SIZEOF_KVM_CLOCK_DATA) } })
        .errno,
      0,
    );
    assert.deepEqual(vm.of('getIrqchip'), [[C.KVM_IRQCHIP_PIC_SLAVE]]);
    assert.deepEqual(vm.of('setIrqchip'), [[C.KVM_IRQCHIP_PIC_SLAVE, [...state]]]);
    assert.deepEqual(vm.of('setClock'), [[C.SIZEOF_KVM_CLOCK_DATA]]);
  });

  test('queries: check_extension from the VM, CPUID (with has_index) and MSRs from KVM', () => {
    const has = (extension: number) => {
      const reply = ask({ $case: 'checkExtension', checkExtension: { extension } });
      return reply.response.message?.$case === 'checkExtension' ? reply.response.message.checkExtension.hasExtension : undefined;
    };
    assert.deepEqual([has(C.KVM_CAP_IRQCHIP), has(0xfffff)], [true, false]);
    const cpuid = ask({ $case: 'getSupportedCpuid', getSupportedCpuid: {} });
    assert.ok(cpuid.response.message?.$case === 'getSupportedCpuid');
    assert.deepEqual(cpuid.response.message.getSupportedCpuid.entries, [
      { function: 0, hasIndex: false, index: 0, eax: 0xd, ebx: 0x756e_6547, ecx: 0x6c65_746e, edx: 0x4965_6e69 },
      { function: 7, hasIndex: true, index: 1, eax: 1, ebx: 2, ecx: 3, edx: 4 },
    ]);
    const emulated = ask({ $case: 'getEmulatedCpuid', getEmulatedCpuid: {} });
    assert.ok(emulated.response.message?.$case === 'getEmulatedCpuid');
    assert.equal(emulated.response.message.getEmulatedCpuid.entries[0]?.ecx, 1 << 22);
    const msrs = ask({ $case: 'getMsrIndexList', getMsrIndexList: {} });
    assert.ok(msrs.response.message?.$case === 'getMsrIndexList');
    assert.deepEqual(msrs.response.message.getMsrIndexList.indices, [0x10, 0x174]);
    assert.deepEqual(wire(ask({ $case: 'getNetConfig', getNetConfig: {} })), [E.ENODATA, 'getNetConfig'], 'no tap');
  });

  test('descriptors: the VCPU pipes, the shutdown eventfd and new connections', async () => {
    const vcpus = ask({ $case: 'getVcpus', getVcpus: {} });
    assert.equal(vcpus.fds.length, 4, 'two ends per VCPU');
    assert.deepEqual(ask({ $case: 'getVcpus', getVcpus: {} }).fds, vcpus.fds, 'the same ends every time');
    assert.deepEqual(vcpus.closeAfterSend, [], 'the host keeps them');
    const shutdown = ask({ $case: 'getShutdownEventfd', getShutdownEventfd: {} });
    assert.equal(shutdown.fds.length, 1);
    assert.ok(!vcpus.fds.includes(shutdown.fds[0]));

    const connection = ask({ $case: 'newConnection', newConnection: {} });
    assert.equal(connection.errno, 0);
    assert.equal(connection.fds.length, 1);
    assert.deepEqual(connection.closeAfterSend, connection.fds, "the plugin's end is the plugin's alone");
    // The host serves the other end from its event loop: a request there is answered.
    const pluginEnd = connection.fds[0];
    const request = MainRequest.encode({
      message: { $case: 'checkExtension', checkExtension: { extension: C.KVM_CAP_IRQCHIP } },
    }).finish();
    native.sendmsg(pluginEnd, request, request.length, []);
    for (let tries = 0; (native.poll(pluginEnd, C.POLLIN, 0) & C.POLLIN) === 0; tries++) {
      assert.ok(tries < 500, 'no answer on the new connection');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const buffer = new Uint8Array(4096);
    const answer = native.recvmsg(pluginEnd, buffer, 0);
    assert.ok(answer !== null);
    assert.deepEqual(MainResponse.decode(buffer.subarray(0, answer.bytes)), {
      errnoValue: 0,
      message: { $case: 'checkExtension', checkExtension: { hasExtension: true } },
    });
  });

  test('set_call_hint: an unknown space is EINVAL, also when clearing', () => {
    const hint = (space: AddressSpace, address: bigint) =>
      ask({ $case: 'setCallHint', setCallHint: { space, address, onWrite: true, hints: [] } }).errno;
    assert.equal(hint(AddressSpace.IOPORT, 0x61n), 0);
    assert.equal(hint(AddressSpace.MMIO, 0n), 0);
    assert.equal(hint(5 as AddressSpace, 0n), E.EINVAL);
    assert.equal(hint(5 as AddressSpace, 0x61n), E.EINVAL);
  });
});
