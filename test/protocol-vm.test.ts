/**
 * Protocol coverage of the main connection: the VM-wide requests of the main connection
 * (memory, dirty log, IO events, IRQs, VM state, queries, robustness), each
 * proven against real KVM by a test plugin (test/plugins/proto-*.ts) that
 * runs a small real-mode guest and reports what the guest and the plugin saw.
 * Every scenario runs both in the plugin jail and unsandboxed (SANDBOX_MODES
 * in ./support/run.ts).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { needsKvm } from './support/kvm.js';
import type {
  ProtoIoeventReport,
  ProtoIrqIoapicReport,
  ProtoIrqPicReport,
  ProtoIrqRoutingReport,
  ProtoMemoryDirtyReport,
  ProtoMemoryReadonlyReport,
  ProtoQueriesReport,
  ProtoRobustReport,
  ProtoVmStateReport,
  WireAnswer,
} from './support/reports.js';
import { SANDBOX_MODES, modeName, runReport } from './support/run.js';

const E = constants.errno;

for (const sandboxed of SANDBOX_MODES) {
  const mode = modeName(sandboxed);

  describe(`guest memory (${mode})`, needsKvm, () => {
    test('dirty log: exactly the written pages, then clean; 70-page slot has a 9-byte bitmap; ENOENT without dirty_log', async () => {
      const got = await runReport<ProtoMemoryDirtyReport>('proto-memory', { sandboxed, args: ['dirty'] });
      // Slot A (16 pages): 2 bytes. Slot B (70 pages): ceil(70 / 8) = 9 bytes.
      assert.deepEqual(got.before, { a: '0000', b: '000000000000000000' });
      // A: pages 0, 3 (byte 0 = 0b1001) and 15 (byte 1 bit 7).
      // B: page 1 (byte 0 bit 1), pages 64 and 69 (byte 8 bits 0 and 5).
      assert.deepEqual(got.round1, { a: '0980', b: '020000000000000021' });
      assert.deepEqual(got.again, { a: '0000', b: '000000000000000000' }, 'reading the log must clear it');
      assert.deepEqual(got.round2, { a: '2000', b: '000000000000000000' }, 'only page 5 of A was written since');
      assert.deepEqual(got.contents, [0x11, 0x33, 0xff, 0x01, 0x40, 0x45], "the guest's writes are in the plugin's memfd");
      assert.deepEqual(got.slotWithoutDirtyLog, { errno: E.ENOENT, member: 'dirtyLog', bytes: 0 });
      assert.deepEqual(got.unknownId, { errno: E.ENOENT, member: 'dirtyLog', bytes: 0 });
    });

    test('read-only slot: reads see the memfd, writes to a reserved range arrive as MMIO writes, others are dropped', async () => {
      const got = await runReport<ProtoMemoryReadonlyReport>('proto-memory', { sandboxed, args: ['readonly'] });
      const port = (value: string): object => ({ space: 'port', address: '0x10', write: true, size: 4, value });
      assert.deepEqual(got.events, [
        port('0x12345678'),
        port('0x9abcdef0'), // the plugin's store into the shared memfd, seen by the guest
        { space: 'mmio', address: '0x30020', write: true, size: 4, value: '0xcafef00d' },
        { space: 'mmio', address: '0x30028', write: true, size: 2, value: '0xbeef' },
        { space: 'mmio', address: '0x3003f', write: true, size: 1, value: '0x5a' },
        port('0xbadf00d'), // the unreserved write was dropped
        port('0x77665544'), // a read of the reserved read-only page is served from memory, no MMIO read
      ]);
      assert.deepEqual(
        got.memoryAfter,
        ['0x77665544', '0x33221100', '0xddccbbaa', '0xbadf00d'],
        'no guest write reached the memfd',
      );
    });
  });

  describe(`IO events (${mode})`, needsKvm, () => {
    test('port and MMIO ioeventfds count only matching writes (length 0, 1, 2, 4, 8); after destroy nothing counts', async () => {
      const got = await runReport<ProtoIoeventReport>('proto-ioevent', { sandboxed });
      assert.deepEqual(got.round1.counts, {
        port0: 3, // length 0: any width
        port1: 2, // 0x5a twice; 0x5b and the 2-byte 0x005a don't match
        port2: 1,
        port4: 3,
        mmio0: 3,
        mmio1: 1,
        mmio2: 2,
        mmio4: 1,
        mmio8: 1, // one matching 8-byte store; a miss and a 4-byte store don't count
      });
      // The one write the 4-byte datamatch refused reached the plugin's reserved port.
      assert.deepEqual(got.round1.port230, ['0xdeadbeee']);
      assert.deepEqual(got.destroyed, Array(9).fill(0));
      assert.deepEqual(got.round2.counts, Object.fromEntries(Object.keys(got.round1.counts).map((k) => [k, 0])));
      // After destroy every write to 0x230 came to the plugin: the guest did write.
      assert.deepEqual(got.round2.port230, ['0xdeadbeef', '0xdeadbeef', '0xdeadbeee', '0xdeadbeef']);
    });
  });

  describe(`interrupts (${mode})`, needsKvm, () => {
    test("PIC: an irqfd (GSI 5) and set_irq (IRQ 10, slave) run the guest's handlers; resample fires on the PIC EOI", async () => {
      const got = await runReport<ProtoIrqPicReport>('proto-irq', { sandboxed, args: ['pic'] });
      assert.deepEqual(got, {
        irqfdVector: 0x25, // master base 0x20 + IRQ 5
        resampleBeforeEoi: 0,
        resampleAfterEoi: 1,
        irqfdAgain: 0x25, // the resample re-armed the level irqfd
        resampleAgain: 1,
        setIrqVector: 0x2a, // slave base 0x28 + (10 - 8)
        setIrqAgain: 0x2a,
      });
    });

    test('IOAPIC: a level-triggered pin programmed by the guest delivers, is acknowledged once per interrupt (resample eventfd) and re-arms', async () => {
      const got = await runReport<ProtoIrqIoapicReport>('proto-irq', { sandboxed, args: ['ioapic'] });
      // What the guest wrote through the IOAPIC's MMIO window, read back with get_state(IOAPIC):
      // vector 0x40, level-triggered, unmasked.
      assert.equal(got.entryProgrammed, '0x8040');
      assert.equal(got.rounds.length, 2);
      for (const [i, round] of got.rounds.entries()) {
        assert.equal(round.vector, 0x40, `round ${i}`);
        // Exactly one resample per interrupt, by the time the handler's EOI ran.
        assert.equal(round.resampleInHandler + round.resampleAfterEoi, 1, `round ${i}: ${JSON.stringify(round)}`);
        // The resample comes with the acknowledgement, never while the pin still waits for it
        // (remote IRR set ⇔ not resampled yet). See proto-irq.ts: on hardware virtualization
        // the acknowledgement is the guest's LAPIC EOI; this host's kvm_pvm acks at injection.
        assert.equal(round.remoteIrrInHandler, round.resampleInHandler === 0, `round ${i}: ${JSON.stringify(round)}`);
        assert.equal(round.remoteIrrAfterEoi, false, `round ${i}`);
      }
      // Round 2's delivery itself proves the level was lowered and remote IRR cleared.
    });

    test('GSI routing: a GSI routed to a PIC pin and an MSI route both reach the guest; unrouted GSIs go nowhere', async () => {
      const got = await runReport<ProtoIrqRoutingReport>('proto-irq', { sandboxed, args: ['routing'] });
      // GSI 30 → PIC pin 3 (vector 0x23); GSI 31 → MSI vector 0x50 through the LAPIC;
      // GSI 5 (raised first, no longer routed) never produced 0x25.
      assert.deepEqual(got.vectors, [0x23, 0x50, 0x23]);
    });
  });

  describe(`VM state (${mode})`, needsKvm, () => {
    test('PIC0, PIC1, IOAPIC, PIT and CLOCK: read, changed, written, read back (and seen by the guest); bad sizes and sets are EINVAL', async () => {
      const got = await runReport<ProtoVmStateReport>('proto-vm-state', { sandboxed });
      const sizes = got.sizes;
      assert.deepEqual(
        [sizes.pic0, sizes.pic1, sizes.ioapic, sizes.pit, sizes.clock],
        [sizes.expected.pic, sizes.expected.pic, sizes.expected.ioapic, sizes.expected.pit, sizes.expected.clock],
        'get_state returns exactly the kernel struct',
      );
      assert.deepEqual(got.pic0, { before: 0, after: 0xa5, sameAsWritten: true });
      assert.deepEqual(got.pic1, { after: 0x5a, sameAsWritten: true });
      assert.deepEqual(got.ioapic, { idBefore: 0, idAfter: 5, entry7After: '0x300000000018037', sameAsWritten: true });
      assert.deepEqual(got.pit, { countBefore: 0x10000, countAfter: 0x4321, modeAfter: 2 });
      const advanced = BigInt(got.clock.advancedNs);
      assert.ok(advanced >= 1_000_000_000_000n && advanced < 1_010_000_000_000n, `clock moved by ${advanced} ns, not ~1000 s`);
      for (const [name, result] of Object.entries(got.refused)) {
        assert.deepEqual(result, { errno: E.EINVAL, member: name.startsWith('get') ? 'getState' : 'setState' }, name);
      }
      assert.equal(got.pic0Unchanged, 0xa5, 'a refused set_state changes nothing');
      // The guest read the new state through its own ports and the IOAPIC's MMIO window:
      // master and slave IMR, IOAPIC ID register (id << 24), redirection entry 7 (low, high).
      assert.deepEqual(got.guestSaw, ['0xa5', '0x5a', '0x5000000', '0x18037', '0x3000000']);
    });
  });

  describe(`queries (${mode})`, needsKvm, () => {
    test('CPUID (supported, emulated), MSR index list, check_extension, identity map before/after start, net config', async () => {
      const got = await runReport<ProtoQueriesReport>('proto-queries', { sandboxed });
      assert.ok(got.supported.leaf0, 'supported CPUID has leaf 0');
      assert.ok(got.supported.leaf0.maxLeaf >= 1);
      assert.match(got.supported.leaf0.vendor, /^(AuthenticAMD|GenuineIntel)$/);
      assert.equal(got.supported.leaf1Fpu, true);
      assert.equal(got.supported.leaf1Tsc, true);
      assert.equal(got.supported.hasExtendedLeaf, true);
      assert.ok(got.supported.indexedLeaves > 0, 'has_index survives the wire');
      assert.ok(
        got.emulated.functions.includes(0) && got.emulated.functions.includes(1),
        `emulated leaves ${got.emulated.functions.join(',')}`,
      );
      assert.equal(got.emulated.movbe, true, 'KVM emulates MOVBE');
      assert.ok(got.msrs.count > 10);
      assert.equal(got.msrs.tsc, true, 'MSR 0x10 (TSC)');
      assert.equal(got.msrs.sysenterCs, true, 'MSR 0x174 (SYSENTER_CS)');
      assert.deepEqual(got.extensions, {
        irqchip: { errno: 0, has: true },
        irqfdResample: { errno: 0, has: true },
        readonlyMem: { errno: 0, has: true },
        madeUp: { errno: 0, has: false },
      });
      assert.deepEqual(got.identityMapBeforeStart, { errno: 0, member: 'setIdentityMapAddr', fds: 0 });
      assert.deepEqual(got.netConfig, { errno: E.ENODATA, member: 'getNetConfig', fds: 0 });
      assert.deepEqual(got.start, { errno: 0, member: 'start', fds: 0 });
      // The kernel refuses KVM_SET_IDENTITY_MAP_ADDR once VCPUs exist (the host creates them at start).
      assert.deepEqual(got.identityMapAfterStart, { errno: E.EINVAL, member: 'setIdentityMapAddr', fds: 0 });
    });
  });

  describe(`robustness of the main connection (${mode})`, needsKvm, () => {
    test('malformed and out-of-range requests get their errno; undecodable messages drop only their connection; too large ones get E2BIG / EMSGSIZE; the VM still runs', async () => {
      const got = await runReport<ProtoRobustReport>('proto-robust', { sandboxed });
      const create = (errno: number): WireAnswer => ({ errno, member: 'create' });
      assert.deepEqual(got.results, {
        ioEventLength3: create(E.EINVAL),
        ioEventUnknownSpace: create(E.EINVAL),
        ioEventFirst: create(0),
        ioEventSameRegistration: create(E.EEXIST), // KVM_IOEVENTFD refuses a duplicate
        createWithoutKind: create(E.EINVAL),
        ioEventWraps: create(E.EINVAL),
        destroyFirstIoEvent: { errno: 0, member: 'destroy' },
        // The kernel takes an irqfd on any GSI (it just routes nowhere): the kernel wins.
        irqEventHugeGsi: create(0),
        destroyIrqEventHugeGsi: { errno: 0, member: 'destroy' },
        memoryUnalignedStart: create(E.EINVAL),
        memoryUnalignedLength: create(E.EINVAL),
        memoryUnalignedOffset: create(E.EINVAL),
        memoryZeroLength: create(E.EINVAL),
        memoryOffsetOverflow: create(E.EOVERFLOW),
        memoryStartOverflow: create(E.EOVERFLOW),
        memoryEndIsTop: create(E.EOVERFLOW),
        memoryNotMemfd: create(E.EPERM),
        memoryFirst: create(0),
        memoryOverlapping: create(E.ENOSPC),
        memoryContaining: create(E.ENOSPC),
        memoryAdjacent: create(0),
        routeWithoutKind: { errno: E.EINVAL, member: 'setIrqRouting' },
        routeUnknownIrqchip: { errno: E.EINVAL, member: 'setIrqRouting' },
        routePicPin8: { errno: E.EINVAL, member: 'setIrqRouting' },
        routeHugeGsi: { errno: E.EINVAL, member: 'setIrqRouting' },
        // KVM_IRQ_LINE on an unrouted irq succeeds and does nothing: the kernel wins.
        setIrqHugeIrq: { errno: 0, member: 'setIrq' },
        reserveUnknownSpace: { errno: E.EINVAL, member: 'reserveRange' },
        reserveEndOverflows: { errno: E.EINVAL, member: 'reserveRange' },
        // start + length must not overflow a u64: reaching 2^64 exactly overflows too.
        reserveEndIsTop: { errno: E.EINVAL, member: 'reserveRange' },
        reserveOnePlusMax: { errno: E.EINVAL, member: 'reserveRange' },
        reserveMaxPlusOne: { errno: E.EINVAL, member: 'reserveRange' },
        reserveHalfPlusHalf: { errno: E.EINVAL, member: 'reserveRange' },
        reserveLastAddress: { errno: 0, member: 'reserveRange' }, // ends at 2^64 - 1
        unreserveTop: { errno: 0, member: 'reserveRange' },
        callHintUnknownSpace: { errno: E.EINVAL, member: 'setCallHint' },
        pauseMissingVcpus: { errno: 0, member: 'pauseVcpus' },
        fiveFdsCheckExtension: { errno: 0, member: 'checkExtension' },
        fiveFdsMemory: create(0), // the memfd came first; the rest were closed
        hugeDirtyMemory: create(0),
        // A 512 KiB bitmap is more than one response may carry.
        hugeDirtyLog: { errno: E.EMSGSIZE, member: 'dirtyLog' },
        destroyHugeDirtyMemory: { errno: 0, member: 'destroy' },
      });
      assert.equal(got.garbageDropped, true, 'a truncated message drops its connection');
      assert.equal(got.badWireTypeDropped, true, 'an invalid wire type drops its connection');
      assert.deepEqual(
        got.strict,
        {
          zeroTag: true,
          lengthPastEnd: true,
          zeroTagNested: true,
          fieldStraddlesEnd: true,
          wrongWireType: true,
          startGroup: true,
          endGroup: true,
          u32Of64Bits: true,
          varintOf11Bytes: true,
        },
        'each malformed message drops its connection',
      );
      assert.deepEqual(got.oversized, { errno: E.E2BIG, member: 'setIrqRouting' }, 'a request over 4096 bytes is answered E2BIG');
      assert.equal(got.oversizedKeepsConnection, true, 'and its connection still serves');
      assert.equal(got.oversizedGarbageDropped, true, "over 4096 bytes without a member's tag: dropped");
      assert.equal(got.hugeDirtyLogKeepsConnection, true, 'an EMSGSIZE answer keeps the connection');
      assert.equal(got.stillServing, true, 'the main connection still answers');
      assert.equal(got.sideServing, true, 'new connections still work');
      assert.equal(got.guestResult, 42, 'the guest ran to completion, without a pause for VCPU 0');
    });
  });
}
