#!/usr/bin/env node
/**
 * Test plugin: robustness of the main connection's handlers. Sends requests
 * with out-of-range or malformed fields and records what came back on the
 * wire ({ errno, member }); sends undecodable and oversized messages on
 * side connections (which the host must drop, alone); then proves the host
 * still serves the main connection and runs a guest to completion.
 *
 * Prints one JSON line; the test asserts on it.
 */
import { assemble } from '../support/asm.js';
import type { ProtoRobustReport, WireAnswer } from '../support/reports.js';
import { check, createCodeMemory, expectReport, finish, pluginMain, startVcpu0, wireAnswer } from '../support/test-plugin.js';
import { C, native } from '../../src/native/index.js';
import { MainRequest as MainRequestCodec } from '../../src/protocol/gen/plugin.js';
import { AddressSpace, Connection, type MainRequest } from '../../src/plugin/index.js';

const U64_MAX = (1n << 64n) - 1n;
const REPORT_PORT = 0x10n;

pluginMain(() => {
  const conn = Connection.connect();
  const results: Record<string, WireAnswer> = {};
  let nextId = 1000;

  const send = (name: string, request: MainRequest, fds: number[] = []): number[] => {
    const { response, fds: received } = conn.request(request, fds);
    results[name] = wireAnswer(response);
    return received;
  };
  const discard = (fds: number[]): void => fds.forEach((fd) => native.close(fd));
  type Kind = NonNullable<Extract<NonNullable<MainRequest['message']>, { $case: 'create' }>['create']['kind']>;
  const create = (name: string, kind: Kind | undefined, fds: number[] = []): number => {
    const id = nextId++;
    discard(send(name, { message: { $case: 'create', create: { id, kind } } }, fds));
    return id;
  };
  const ioEvent = (space: number, address: bigint, length: number, datamatch = 0n): Kind => ({
    $case: 'ioEvent',
    ioEvent: { space, address, length, datamatch },
  });
  const memory = (offset: bigint, start: bigint, length: bigint): Kind => ({
    $case: 'memory',
    memory: { offset, start, length, readOnly: false, dirtyLog: false },
  });
  const reserve = (space: number, start: bigint, length: bigint): MainRequest => ({
    message: { $case: 'reserveRange', reserveRange: { space, start, length, asyncWrite: false } },
  });
  const sealedMemfd = (size: number): number => {
    const fd = native.memfdCreate('proto-robust', C.MFD_CLOEXEC | C.MFD_ALLOW_SEALING);
    native.ftruncate(fd, size);
    native.fcntl(fd, C.F_ADD_SEALS, C.F_SEAL_SHRINK);
    return fd;
  };

  // ---- create: io_event ----
  create('ioEventLength3', ioEvent(AddressSpace.IOPORT, 0x300n, 3));
  create('ioEventUnknownSpace', ioEvent(7, 0x300n, 0));
  const firstIoEvent = create('ioEventFirst', ioEvent(AddressSpace.IOPORT, 0x300n, 1, 1n));
  create('ioEventSameRegistration', ioEvent(AddressSpace.IOPORT, 0x300n, 1, 1n));
  create('createWithoutKind', undefined);
  create('ioEventWraps', ioEvent(AddressSpace.MMIO, U64_MAX - 3n, 8));
  discard(send('destroyFirstIoEvent', { message: { $case: 'destroy', destroy: { id: firstIoEvent } } }));

  // ---- create: irq_event ----
  const hugeGsi = create('irqEventHugeGsi', { $case: 'irqEvent', irqEvent: { irqId: 0xffffffff, resample: true } });
  if (results['irqEventHugeGsi'].errno === 0) {
    discard(send('destroyIrqEventHugeGsi', { message: { $case: 'destroy', destroy: { id: hugeGsi } } }));
  }

  // ---- create: memory ----
  const memfd = sealedMemfd(0x4000);
  create('memoryUnalignedStart', memory(0n, 0x10800n, 0x1000n), [memfd]);
  create('memoryUnalignedLength', memory(0n, 0x10000n, 0x800n), [memfd]);
  create('memoryUnalignedOffset', memory(0x800n, 0x10000n, 0x1000n), [memfd]);
  create('memoryZeroLength', memory(0n, 0x10000n, 0n), [memfd]);
  create('memoryOffsetOverflow', memory(U64_MAX - 0xfffn, 0x10000n, 0x2000n), [memfd]);
  create('memoryStartOverflow', memory(0n, U64_MAX - 0xfffn, 0x2000n), [memfd]);
  create('memoryEndIsTop', memory(0n, U64_MAX - 0xfffn, 0x1000n), [memfd]);
  const notMemfd = native.eventfd(0, C.EFD_CLOEXEC);
  create('memoryNotMemfd', memory(0n, 0x10000n, 0x1000n), [notMemfd]);
  native.close(notMemfd);
  create('memoryFirst', memory(0n, 0x40000n, 0x2000n), [memfd]);
  create('memoryOverlapping', memory(0n, 0x41000n, 0x2000n), [memfd]);
  create('memoryContaining', memory(0n, 0x3f000n, 0x4000n), [memfd]);
  create('memoryAdjacent', memory(0n, 0x42000n, 0x1000n), [memfd]);

  // ---- set_irq_routing / set_irq ----
  const routing = (
    routes: { irqId: number; route: { $case: 'irqchip'; irqchip: { irqchip: number; pin: number } } | undefined }[],
  ): MainRequest => ({ message: { $case: 'setIrqRouting', setIrqRouting: { routes } } });
  discard(
    send(
      'routeWithoutKind',
      routing([
        { irqId: 3, route: { $case: 'irqchip', irqchip: { irqchip: 0, pin: 3 } } },
        { irqId: 4, route: undefined },
      ]),
    ),
  );
  discard(send('routeUnknownIrqchip', routing([{ irqId: 3, route: { $case: 'irqchip', irqchip: { irqchip: 7, pin: 3 } } }])));
  discard(send('routePicPin8', routing([{ irqId: 3, route: { $case: 'irqchip', irqchip: { irqchip: 0, pin: 8 } } }])));
  discard(send('routeHugeGsi', routing([{ irqId: 0xffffffff, route: { $case: 'irqchip', irqchip: { irqchip: 0, pin: 3 } } }])));
  discard(send('setIrqHugeIrq', { message: { $case: 'setIrq', setIrq: { irqId: 0xffffffff, active: true } } }));

  // ---- reserve_range / set_call_hint / pause_vcpus ----
  discard(send('reserveUnknownSpace', reserve(5, 0x100n, 0x10n)));
  discard(send('reserveEndOverflows', reserve(AddressSpace.MMIO, U64_MAX - 0xfn, 0x20n)));
  // start + length == 2^64 overflows a u64 as well (the three cases of issue 16).
  discard(send('reserveEndIsTop', reserve(AddressSpace.MMIO, U64_MAX - 0xfn, 0x10n)));
  discard(send('reserveOnePlusMax', reserve(AddressSpace.MMIO, 1n, U64_MAX)));
  discard(send('reserveMaxPlusOne', reserve(AddressSpace.IOPORT, U64_MAX, 1n)));
  discard(send('reserveHalfPlusHalf', reserve(AddressSpace.MMIO, 1n << 63n, 1n << 63n)));
  discard(send('reserveLastAddress', reserve(AddressSpace.MMIO, U64_MAX - 0xfn, 0xfn)));
  discard(send('unreserveTop', reserve(AddressSpace.MMIO, U64_MAX - 0xfn, 0n)));
  discard(
    send('callHintUnknownSpace', {
      message: { $case: 'setCallHint', setCallHint: { space: 9 as AddressSpace, address: 0x10n, onWrite: true, hints: [] } },
    }),
  );
  // VCPUs 1..63 do not exist (this VM has one): ignored. VCPU 0 is not asked
  // to pause, and the guest run below sees no pause.
  discard(send('pauseMissingVcpus', { message: { $case: 'pauseVcpus', pauseVcpus: { cpuMask: U64_MAX - 1n, user: 7n } } }));

  // ---- descriptors ----
  // Five fds with a request that takes none: served, the fds closed by the host.
  const five = Array.from({ length: 5 }, () => native.eventfd(0, C.EFD_CLOEXEC));
  discard(
    send(
      'fiveFdsCheckExtension',
      { message: { $case: 'checkExtension', checkExtension: { extension: C.KVM_CAP_IRQCHIP } } },
      five,
    ),
  );
  // Memory with its memfd first and four more: the first one is used.
  create('fiveFdsMemory', memory(0n, 0x60000n, 0x1000n), [memfd, ...five.slice(1)]);
  five.forEach((fd) => native.close(fd));
  native.close(memfd);

  // ---- undecodable and oversized messages: each on its own connection ----
  const dropped = (bytes: Uint8Array): boolean => {
    const side = conn.newConnection();
    native.sendmsg(side.fd, bytes, bytes.length, []);
    const buffer = new Uint8Array(4096);
    const answer = native.recvmsg(side.fd, buffer, 4);
    side.close();
    return answer !== null && answer.bytes === 0; // hung up, no answer
  };
  // Field 1 (create), length 5, but only one byte follows.
  const garbageDropped = dropped(new Uint8Array([0x0a, 0x05, 0x01]));
  // Field 1 with wire type 7, which does not exist.
  const badWireTypeDropped = dropped(new Uint8Array([0x0f, 0x00]));
  // What the generated decoder let through (issue 16), each malformed:
  const strict = Object.fromEntries(
    Object.entries({
      zeroTag: [0x00], // a zero tag (once read as the end of the message)
      lengthPastEnd: [0x2a, 0x03, 0x00], // check_extension of 3 bytes, 1 there
      zeroTagNested: [0x2a, 0x02, 0x00, 0x00], // a zero tag inside check_extension
      fieldStraddlesEnd: [0x2a, 0x01, 0x08, 0x01], // check_extension of 1 byte whose field takes 2
      wrongWireType: [0x08, 0x00], // create (a message) sent as a varint
      startGroup: [0x0b, 0x0c], // create as a group
      endGroup: [0x2a, 0x00, 0x0c], // a stray end-group tag
      u32Of64Bits: [0x2a, 0x0b, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // extension 2^64 - 1
      varintOf11Bytes: [0x2a, 0x0c, 0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
    }).map(([name, bytes]) => [name, dropped(new Uint8Array(bytes))]),
  );

  // A valid set_irq_routing of 1000 routes: bigger than the host's
  // 4096-byte request buffer. Answered E2BIG with its member, the
  // connection kept.
  const big = routing(
    Array.from({ length: 1000 }, (_, i) => ({
      irqId: i,
      route: { $case: 'irqchip' as const, irqchip: { irqchip: 2, pin: i % 24 } },
    })),
  );
  const bigBytes = MainRequestCodec.encode(big).finish();
  check(bigBytes.length > 4096, `the oversized request is only ${bigBytes.length} bytes`);
  const oversizedSide = conn.newConnection();
  const { response: oversizedResponse } = oversizedSide.request(big);
  const oversized = wireAnswer(oversizedResponse);
  const oversizedKeepsConnection = oversizedSide.checkExtension(C.KVM_CAP_IRQCHIP);
  oversizedSide.close();
  // Bytes over 4096 that start with no member's tag: malformed, dropped.
  const oversizedGarbageDropped = dropped(new Uint8Array(5000).fill(0x08));

  // A dirty log of a 16 GiB slot is a 512 KiB bitmap, more than a response
  // may hold: EMSGSIZE with its member, the connection kept.
  const hugeMemfd = native.memfdCreate('proto-robust-huge', C.MFD_CLOEXEC | C.MFD_ALLOW_SEALING);
  native.ftruncate(hugeMemfd, 16 * 2 ** 30); // sparse: nothing is allocated
  native.fcntl(hugeMemfd, C.F_ADD_SEALS, C.F_SEAL_SHRINK);
  const hugeId = nextId++;
  const huge = { offset: 0n, start: 1n << 32n, length: 16n << 30n, readOnly: false, dirtyLog: true };
  discard(
    send('hugeDirtyMemory', { message: { $case: 'create', create: { id: hugeId, kind: { $case: 'memory', memory: huge } } } }, [
      hugeMemfd,
    ]),
  );
  native.close(hugeMemfd);
  discard(send('hugeDirtyLog', { message: { $case: 'dirtyLog', dirtyLog: { id: hugeId } } }));
  const hugeDirtyLogKeepsConnection = conn.checkExtension(C.KVM_CAP_IRQCHIP);
  discard(send('destroyHugeDirtyMemory', { message: { $case: 'destroy', destroy: { id: hugeId } } }));

  // ---- the host still serves: the main connection, a new one, and a guest ----
  const stillServing = conn.checkExtension(C.KVM_CAP_IRQCHIP);
  const side = conn.newConnection();
  const sideServing = side.checkExtension(C.KVM_CAP_IRQCHIP);
  side.close();

  createCodeMemory(
    conn,
    assemble(`
    bits 16
    org 0x1000
      mov al, 42
      out ${REPORT_PORT}, al
      hlt
  `),
  );
  conn.reserveRange(AddressSpace.IOPORT, REPORT_PORT, 1n);
  const vcpu = startVcpu0(conn);
  const guestResult = Number(expectReport(vcpu, REPORT_PORT, { resume: false }));

  finish<ProtoRobustReport>({
    results,
    garbageDropped,
    badWireTypeDropped,
    strict,
    oversized,
    oversizedKeepsConnection,
    oversizedGarbageDropped,
    hugeDirtyLogKeepsConnection,
    stillServing,
    sideServing,
    guestResult,
  });
});
