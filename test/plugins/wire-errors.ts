#!/usr/bin/env node
/**
 * Test plugin: sends the requests the protocol must refuse and prints, as one
 * JSON line, what came back on the wire for each: { name: { errno, member } }.
 * Then it starts the VM, finishes the VCPU's init properly and exits 0.
 */
import { C, native } from '../../src/native/index.js';
import { MainRequest, MainResponse, type MainRequest as Request } from '../../src/protocol/gen/plugin.js';
import { AddressSpace, Connection, GuestMemory, PluginError, VcpuStateSet } from '../../src/plugin/index.js';
import type { WireErrorsReport } from '../support/reports.js';
import { finish, wireAnswer } from '../support/test-plugin.js';

const conn = Connection.connect();
const results: WireErrorsReport = {};

function raw(name: string, request: Request, fds: number[] = []): void {
  const { response, fds: received } = conn.request(request, fds);
  for (const fd of received) native.close(fd);
  results[name] = wireAnswer(response);
}

function memfd(size: number, sealed: boolean): number {
  const fd = native.memfdCreate('wire-errors', C.MFD_CLOEXEC | C.MFD_ALLOW_SEALING);
  native.ftruncate(fd, size);
  if (sealed) native.fcntl(fd, C.F_ADD_SEALS, C.F_SEAL_SHRINK);
  return fd;
}

const memory = (id: number, length: bigint): Request => ({
  message: {
    $case: 'create',
    create: { id, kind: { $case: 'memory', memory: { offset: 0n, start: 0x10000n, length, readOnly: false, dirtyLog: false } } },
  },
});

const unsealed = memfd(0x1000, false);
raw('unsealedMemfd', memory(1, 0x1000n), [unsealed]);
const sealed = memfd(0x1000, true);
raw('memoryPastEnd', memory(2, 0x2000n), [sealed]);
raw('memoryWithoutFd', memory(3, 0x1000n));
native.close(unsealed);
native.close(sealed);

conn.reserveRange(AddressSpace.IOPORT, 0x100n, 0x10n);
raw('overlappingReservation', {
  message: { $case: 'reserveRange', reserveRange: { space: AddressSpace.IOPORT, start: 0x108n, length: 4n, asyncWrite: false } },
});
raw('unreserveNothing', {
  message: { $case: 'reserveRange', reserveRange: { space: AddressSpace.IOPORT, start: 0x500n, length: 0n, asyncWrite: false } },
});
raw('destroyUnknown', { message: { $case: 'destroy', destroy: { id: 0xdead } } });

const ioEvent: Request = {
  message: {
    $case: 'create',
    create: {
      id: 77,
      kind: { $case: 'ioEvent', ioEvent: { space: AddressSpace.IOPORT, address: 0x200n, length: 0, datamatch: 0n } },
    },
  },
};
raw('firstCreate', ioEvent);
raw('duplicateId', ioEvent);

// A request with only an unknown field (50, varint 1): it decodes to no known member.
const unknownOnly = Buffer.from([0x90, 0x03, 0x01]);
native.sendmsg(conn.fd, unknownOnly, unknownOnly.length, []);
const answer = Buffer.alloc(4096);
const got = native.recvmsg(conn.fd, answer, 4);
const decoded = MainResponse.decode(answer.subarray(0, got?.bytes ?? 0));
results['unknownRequest'] = wireAnswer(decoded);

const mem = GuestMemory.create(0x1000);
mem.bytes.set([0xf4], 0); // hlt
conn.createMemory(mem, { start: 0n, length: 0x1000n });
const vcpu = conn.getVcpu(0);
raw('firstStart', { message: { $case: 'start', start: {} } });
raw('secondStart', { message: { $case: 'start', start: {} } });

try {
  vcpu.getState(VcpuStateSet.REGS);
  results['requestBeforeInit'] = { errno: 0, member: 'getState' };
} catch (e) {
  results['requestBeforeInit'] = { errno: e instanceof PluginError ? e.errno : -1, member: null };
}
const first = vcpu.wait();
results['initAfterRefusal'] = { errno: first.kind === 'init' ? 0 : -1, member: first.kind };

// Round-trip check that an encoded request is what the host decoded (sanity for the raw path).
results['encodedEmptyIsZeroBytes'] = { errno: MainRequest.encode({ message: undefined }).finish().length, member: null };

finish(results);
