/**
 * The KVM layer against the real /dev/kvm: small real-mode guests assembled
 * with nasm, run in real VMs.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { C, ErrnoError, native, isErrnoError } from '../src/native/index.js';
import { Kvm, VmFd, VcpuFd, RegsView, SregsView, DebugregsView, type VcpuExit } from '../src/kvm/index.js';
import { queryCpuid2, queryMsrIndexList } from '../src/kvm/ioctl.js';
import { assemble } from './support/asm.js';
import { needsKvm } from './support/kvm.js';

const PAGE = 0x1000;
const ENTRY = 0x1000;
const TSS_ADDR = 0xfffbd000;

/** One test VM: /dev/kvm, the VM, its memory mappings and VCPUs, all freed by close(). */
class TestVm {
  readonly kvm = Kvm.open();
  readonly vm: VmFd;
  readonly mmapSize: number;
  private readonly mappings: { address: bigint; size: number }[] = [];
  private readonly vcpus: VcpuFd[] = [];
  private readonly fds: number[] = [];

  constructor(opts: { irqchip?: boolean } = {}) {
    this.vm = this.kvm.createVm();
    this.mmapSize = this.kvm.vcpuMmapSize();
    this.vm.setTssAddr(TSS_ADDR);
    if (opts.irqchip) this.vm.createIrqchip();
  }

  /** Anonymous shared memory installed as `slot` at `gpa`; returns its bytes. */
  addSlot(slot: number, gpa: number, size: number, flags = 0): Uint8Array {
    const address = native.mmap(size, C.PROT_READ | C.PROT_WRITE, C.MAP_SHARED | C.MAP_ANONYMOUS, -1, 0);
    this.mappings.push({ address, size });
    this.vm.setUserMemoryRegion({
      slot,
      flags,
      guestPhysAddr: BigInt(gpa),
      memorySize: BigInt(size),
      userspaceAddr: address,
    });
    return new Uint8Array(native.arrayBufferAt(address, size));
  }

  /** Slot 0: one page at ENTRY holding the real-mode program `body` ({@link realModeCode}). */
  loadCode(body: string): Uint8Array {
    const mem = this.addSlot(0, ENTRY, PAGE);
    mem.set(realModeCode(body));
    return mem;
  }

  /** A non-blocking eventfd, closed with the VM. */
  eventfd(): number {
    const fd = native.eventfd(0, C.EFD_CLOEXEC | C.EFD_NONBLOCK);
    this.fds.push(fd);
    return fd;
  }

  /** A VCPU in real mode with cs = 0 and ip = ENTRY. */
  realModeVcpu(id = 0): VcpuFd {
    const vcpu = new VcpuFd(this.vm.createVcpu(id), this.mmapSize);
    this.vcpus.push(vcpu);
    setRealMode(vcpu);
    return vcpu;
  }

  close(): void {
    for (const v of this.vcpus) v.close();
    this.vm.close();
    this.kvm.close();
    for (const m of this.mappings) native.munmap(m.address, m.size);
    for (const fd of this.fds) native.close(fd);
  }
}

/** Runs `body` on a fresh {@link TestVm}, closed afterwards however `body` ends. */
function withTestVm(body: (t: TestVm) => void): void;
function withTestVm(opts: { irqchip?: boolean }, body: (t: TestVm) => void): void;
function withTestVm(...args: [(t: TestVm) => void] | [{ irqchip?: boolean }, (t: TestVm) => void]): void {
  const [opts, body] = args.length === 1 ? [{}, args[0]] : args;
  const t = new TestVm(opts);
  try {
    body(t);
  } finally {
    t.close();
  }
}

/** A 16-bit real-mode program of `body`, assembled to run at ENTRY (where {@link TestVm.loadCode} puts it). */
function realModeCode(body: string): Uint8Array {
  return assemble(`bits 16\norg ${ENTRY}\n${body}`);
}

function setRealMode(vcpu: VcpuFd): void {
  const sregs = new SregsView(vcpu.getSregs());
  for (const name of ['cs', 'ds', 'es', 'ss'] as const) {
    sregs.segment(name).base = 0n;
    sregs.segment(name).selector = 0;
  }
  vcpu.setSregs(sregs.bytes);
  const regs = new RegsView();
  regs.rip = BigInt(ENTRY);
  regs.rflags = 2n;
  regs.rsp = 0xf000n;
  vcpu.setRegs(regs.bytes);
}

/** Runs to the next exit, which must be of `kind`. */
function runTo<K extends VcpuExit['kind']>(vcpu: VcpuFd, kind: K): Extract<VcpuExit, { kind: K }> {
  const exit = vcpu.run();
  assert.equal(exit.kind, kind);
  return exit as Extract<VcpuExit, { kind: K }>;
}

/** A little-endian view of an exit's data bytes. */
function littleEndian(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

function assertErrno(fn: () => unknown, code: string, message?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isErrnoError(e), `expected an ErrnoError, got ${String(e)}`);
    assert.ok(e instanceof ErrnoError, 'the KVM layer throws the one errno-carrying class');
    assert.equal(e.code, code);
    assert.equal(e.errno, ({ EINVAL: 22, ENOENT: 2 } as Record<string, number>)[code]);
    if (message) assert.match(e.message, message);
    return true;
  });
}

describe('Kvm (system ioctls)', needsKvm, () => {
  test('api version, extensions, mmap size', () => {
    const kvm = Kvm.open();
    try {
      assert.equal(kvm.apiVersion(), 12);
      assert.ok(kvm.checkExtension(C.KVM_CAP_IRQCHIP) > 0);
      assert.ok(kvm.checkExtension(C.KVM_CAP_USER_MEMORY) > 0);
      assert.equal(kvm.checkExtension(0xfffff), 0);
      assert.ok(kvm.vcpuMmapSize() >= C.SIZEOF_KVM_RUN);
    } finally {
      kvm.close();
      kvm.close(); // idempotent
    }
  });

  test('supported and emulated CPUID, MSR index list', () => {
    const kvm = Kvm.open();
    try {
      const cpuid = kvm.supportedCpuid();
      assert.ok(cpuid.length > 0);
      const leaf0 = cpuid.find((e) => e.function === 0);
      assert.ok(leaf0, 'leaf 0 missing');
      assert.ok(leaf0.eax > 0, 'leaf 0 reports no basic leaves');
      assert.ok(
        cpuid.some((e) => e.function === 0x8000_0000),
        'extended leaves missing',
      );
      if (kvm.checkExtension(C.KVM_CAP_EXT_EMUL_CPUID) > 0) {
        const emulated = kvm.emulatedCpuid();
        assert.ok(Array.isArray(emulated));
      }
      const msrs = kvm.msrIndexList();
      assert.ok(msrs.length > 0);
      assert.ok(msrs.includes(0x174), 'IA32_SYSENTER_CS not in the MSR index list');
    } finally {
      kvm.close();
    }
  });

  test('CPUID and MSR-list buffers grow on E2BIG', () => {
    const kvm = Kvm.open();
    try {
      const cpuid = kvm.supportedCpuid();
      assert.deepEqual(queryCpuid2(kvm.fd, C.KVM_GET_SUPPORTED_CPUID, 'KVM_GET_SUPPORTED_CPUID', 1), cpuid);
      const msrs = kvm.msrIndexList();
      assert.deepEqual(queryMsrIndexList(kvm.fd, C.KVM_GET_MSR_INDEX_LIST, 'KVM_GET_MSR_INDEX_LIST', 1), msrs);
    } finally {
      kvm.close();
    }
  });

  test('KVM_CREATE_VM is retried when a signal interrupts it', { timeout: 60_000 }, async () => {
    // A worker sends this thread the kick signal every ~20 µs while it
    // creates VMs. Without the retry in createVm most attempts fail with
    // EINTR here (the kernel gives up registering the VM's MMU notifier when
    // a signal is pending); the spacing leaves the thread time to run.
    native.installKickHandler();
    const stop = new SharedArrayBuffer(8);
    const worker = new Worker(SIGNAL_STORM_WORKER, {
      eval: true,
      workerData: { tid: native.gettid(), stop, nativeUrl: new URL('../src/native/index.js', import.meta.url).href },
    });
    const sent = new Promise<number>((resolve, reject) => {
      worker.on('message', (m: { sent: number }) => resolve(m.sent));
      worker.on('error', reject);
    });
    const kvm = Kvm.open();
    try {
      // Let the storm begin before the first attempt (a worker can take a
      // while to start on a busy machine), and last while the VMs are made.
      const counter = new Int32Array(stop);
      for (let waited = 0; Atomics.load(counter, 1) === 0 && waited < 20_000; waited += 10) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const until = Date.now() + 10_000;
      for (let i = 0; i < 20 || (Atomics.load(counter, 1) <= 100 && Date.now() < until); i++) kvm.createVm().close();
    } finally {
      Atomics.store(new Int32Array(stop), 0, 1);
      kvm.close();
    }
    assert.ok((await sent) > 100, 'the worker sent too few signals for the test to mean anything');
  });

  test('kernel errors carry the errno and name the ioctl', () => {
    const kvm = Kvm.open();
    const vm = kvm.createVm();
    try {
      native.close(vm.createVcpu(0));
      assert.throws(
        () => vm.createVcpu(0),
        (e: unknown) => {
          assert.ok(isErrnoError(e));
          assert.equal(e.code, 'EEXIST');
          assert.match(e.message, /KVM_CREATE_VCPU/);
          return true;
        },
      );
    } finally {
      vm.close();
      kvm.close();
    }
  });
});

test('opening a missing KVM device says what is missing and keeps the errno', () => {
  assertErrno(
    () => Kvm.open('/nonexistent/kvm'),
    'ENOENT',
    /cannot open \/nonexistent\/kvm: ENOENT — KVM is not available: load the kvm_intel or kvm_amd/,
  );
});

describe('real-mode guests', needsKvm, () => {
  test('port IO out, then HLT', () => {
    withTestVm((t) => {
      t.loadCode(`
        mov al, 0x42
        out 0x10, al
        hlt`);
      const vcpu = t.realModeVcpu();
      const exit = vcpu.run();
      assert.equal(exit.kind, 'io');
      assert.deepEqual(
        { ...exit, data: [...exit.data] },
        {
          kind: 'io',
          direction: 'out',
          size: 1,
          port: 0x10,
          count: 1,
          data: [0x42],
        },
      );
      assert.equal(vcpu.run().kind, 'hlt');
    });
  });

  test('port IO in: the value written into kvm_run reaches the guest', () => {
    withTestVm((t) => {
      t.loadCode(`
        in ax, 0x60
        add ax, 1
        out 0x10, ax
        hlt`);
      const vcpu = t.realModeVcpu();
      const read = runTo(vcpu, 'io');
      assert.equal(read.direction, 'in');
      assert.equal(read.port, 0x60);
      assert.equal(read.size, 2);
      assert.equal(read.data.length, 2);
      littleEndian(read.data).setUint16(0, 0x1233, true);
      const write = runTo(vcpu, 'io');
      assert.equal(write.direction, 'out');
      assert.equal(write.port, 0x10);
      assert.equal(littleEndian(write.data).getUint16(0, true), 0x1234);
      runTo(vcpu, 'hlt');
    });
  });

  test('rep outsw: IO exits carry size * count bytes', () => {
    withTestVm((t) => {
      t.loadCode(`
        mov si, words
        mov cx, 3
        mov dx, 0x10
        rep outsw
        hlt
      words:
        dw 0x1111, 0x2222, 0x3333`);
      const vcpu = t.realModeVcpu();
      // KVM may report the three elements in one exit or in several.
      const words: number[] = [];
      while (words.length < 3) {
        const exit = runTo(vcpu, 'io');
        assert.deepEqual([exit.direction, exit.port, exit.size], ['out', 0x10, 2]);
        assert.ok(exit.count >= 1 && exit.count <= 3 - words.length, `count ${exit.count}`);
        assert.equal(exit.data.length, 2 * exit.count);
        for (let at = 0; at < exit.data.length; at += 2) words.push(littleEndian(exit.data).getUint16(at, true));
      }
      assert.deepEqual(words, [0x1111, 0x2222, 0x3333]);
      runTo(vcpu, 'hlt');
    });
  });

  test('MMIO write and read to unmapped addresses', () => {
    withTestVm((t) => {
      t.loadCode(`
        mov word [0x8000], 0xbeef
        mov ax, [0x8002]
        out 0x10, ax
        hlt`);
      const vcpu = t.realModeVcpu();
      const write = runTo(vcpu, 'mmio');
      assert.deepEqual(
        { ...write, data: [...write.data] },
        { kind: 'mmio', address: 0x8000n, isWrite: true, data: [0xef, 0xbe] },
      );

      const read = runTo(vcpu, 'mmio');
      assert.equal(read.address, 0x8002n);
      assert.equal(read.data.length, 2);
      assert.equal(read.isWrite, false);
      littleEndian(read.data).setUint16(0, 0x5aa5, true);
      assert.equal(littleEndian(runTo(vcpu, 'io').data).getUint16(0, true), 0x5aa5);
      runTo(vcpu, 'hlt');
    });
  });

  test('registers set before running are what the guest sees, and round-trip', () => {
    withTestVm((t) => {
      const body = `
        out 0x10, al
        mov eax, ebx
        out 0x10, eax
        hlt`;
      t.loadCode(body);
      const vcpu = t.realModeVcpu();
      const regs = new RegsView(vcpu.getRegs());
      regs.rax = 0x1122_3344_5566_7788n;
      regs.rbx = 0xcafe_f00dn;
      regs.r15 = 0xffff_ffff_ffff_fffen;
      vcpu.setRegs(regs.bytes);
      const back = new RegsView(vcpu.getRegs());
      assert.equal(back.rax, 0x1122_3344_5566_7788n);
      assert.equal(back.rbx, 0xcafe_f00dn);
      assert.equal(back.r15, 0xffff_ffff_ffff_fffen);
      assert.equal(back.rip, BigInt(ENTRY));
      assert.equal(hex(back.bytes), hex(regs.bytes));

      assert.equal(runTo(vcpu, 'io').data[0], 0x88);
      const wide = runTo(vcpu, 'io');
      assert.equal(wide.size, 4);
      assert.equal(littleEndian(wide.data).getUint32(0, true), 0xcafef00d);
      runTo(vcpu, 'hlt');
      const after = new RegsView(vcpu.getRegs());
      assert.equal(after.rax & 0xffff_ffffn, 0xcafe_f00dn);
      assert.equal(after.rip, BigInt(ENTRY + realModeCode(body).length)); // just past the hlt

      const sregs = new SregsView(vcpu.getSregs());
      assert.equal(sregs.cs.base, 0n);
      assert.equal(sregs.cs.selector, 0);
      assert.equal(sregs.cr0 & 1n, 0n, 'not in real mode');
      sregs.segment('fs').base = 0x12340n;
      sregs.fs.selector = 0x1234;
      vcpu.setSregs(sregs.bytes);
      const sregsBack = new SregsView(vcpu.getSregs());
      assert.equal(sregsBack.fs.base, 0x12340n);
      assert.equal(sregsBack.fs.selector, 0x1234);

      const dbg = new DebugregsView(vcpu.getDebugregs());
      dbg.setDb(0, 0x1000n);
      dbg.setDb(3, 0x4000n);
      vcpu.setDebugregs(dbg.bytes);
      const dbgBack = new DebugregsView(vcpu.getDebugregs());
      assert.equal(dbgBack.db(0), 0x1000n);
      assert.equal(dbgBack.db(3), 0x4000n);
      assert.equal(dbgBack.dr7 & 0xffn, 0n);

      const fpu = vcpu.getFpu();
      assert.equal(fpu.length, C.SIZEOF_KVM_FPU);
      vcpu.setFpu(fpu);
      const events = vcpu.getVcpuEvents();
      assert.equal(events.length, C.SIZEOF_KVM_VCPU_EVENTS);
      vcpu.setVcpuEvents(events);
      if (t.vm.checkExtension(C.KVM_CAP_XCRS) > 0) {
        const xcrs = vcpu.getXcrs();
        assert.equal(xcrs.length, C.SIZEOF_KVM_XCRS);
        vcpu.setXcrs(xcrs);
      }
    });
  });

  test('setters refuse state of the wrong size with EINVAL', () => {
    withTestVm((t) => {
      const vcpu = t.realModeVcpu();
      assertErrno(() => vcpu.setRegs(new Uint8Array(C.SIZEOF_KVM_REGS - 1)), 'EINVAL', /KVM_SET_REGS/);
      assertErrno(() => vcpu.setSregs(new Uint8Array(C.SIZEOF_KVM_SREGS + 8)), 'EINVAL');
      assertErrno(() => vcpu.setFpu(new Uint8Array(0)), 'EINVAL');
      assertErrno(() => vcpu.setDebugregs(new Uint8Array(1)), 'EINVAL');
      assertErrno(() => vcpu.setLapic(new Uint8Array(10)), 'EINVAL');
      assertErrno(() => vcpu.setMpState(new Uint8Array(8)), 'EINVAL');
      assertErrno(() => vcpu.setXcrs(new Uint8Array(1)), 'EINVAL');
      assertErrno(() => vcpu.setVcpuEvents(new Uint8Array(1)), 'EINVAL');
      assertErrno(() => t.vm.setPit2(new Uint8Array(3)), 'EINVAL');
      assertErrno(() => t.vm.setClock(new Uint8Array(3)), 'EINVAL');
      assert.throws(() => new RegsView(new Uint8Array(8)), /kvm_regs/);
    });
  });

  test('MSRs round-trip, and an unreadable MSR is named', () => {
    withTestVm((t) => {
      const vcpu = t.realModeVcpu();
      const IA32_SYSENTER_CS = 0x174;
      const IA32_SYSENTER_ESP = 0x175;
      assert.equal(
        vcpu.setMsrs([
          { index: IA32_SYSENTER_CS, data: 0x10n },
          { index: IA32_SYSENTER_ESP, data: 0xdead_beefn },
        ]),
        2,
      );
      assert.deepEqual(vcpu.getMsrs([IA32_SYSENTER_CS, IA32_SYSENTER_ESP]), [0x10n, 0xdead_beefn]);
      assert.deepEqual(vcpu.getMsrs([]), []);
      if (t.kvm.msrIndexList().includes(0xdeadbeef)) return;
      assertErrno(() => vcpu.getMsrs([IA32_SYSENTER_CS, 0xdeadbeef]), 'EINVAL', /0xdeadbeef/);
      assert.equal(vcpu.setMsrs([{ index: 0xdeadbeef, data: 1n }]), 0);
    });
  });

  test('CPUID can be set from the supported list', () => {
    withTestVm((t) => {
      const vcpu = t.realModeVcpu();
      vcpu.setCpuid2(t.kvm.supportedCpuid());
    });
  });

  test('dirty log of a slot whose page count is not a multiple of 64', () => {
    withTestVm((t) => {
      t.loadCode(`
        mov ax, 0x1300      ; page 3 of the slot at 0x10000
        mov es, ax
        mov byte [es:0], 1
        mov ax, 0x5600      ; page 70
        mov es, ax
        mov byte [es:0x10], 2
        mov ax, 0x7300      ; page 99, the last one
        mov es, ax
        mov byte [es:0xfff], 3
        hlt`);
      const PAGES = 100;
      const mem = t.addSlot(1, 0x10000, PAGES * PAGE, C.KVM_MEM_LOG_DIRTY_PAGES);
      const vcpu = t.realModeVcpu();
      runTo(vcpu, 'hlt');
      assert.equal(mem[3 * PAGE], 1);
      assert.equal(mem[70 * PAGE + 0x10], 2);
      assert.equal(mem[99 * PAGE + 0xfff], 3);

      const log = t.vm.getDirtyLog(1, PAGES);
      assert.equal(log.length, Math.ceil(PAGES / 8));
      const dirty: number[] = [];
      for (let page = 0; page < log.length * 8; page++) {
        if (log[page >> 3] & (1 << (page & 7))) dirty.push(page);
      }
      assert.deepEqual(dirty, [3, 70, 99]);
      // Reading resets it.
      assert.ok(t.vm.getDirtyLog(1, PAGES).every((b) => b === 0));
    });
  });

  test('a read-only slot reads as memory and turns writes into MMIO exits', () => {
    withTestVm((t) => {
      assert.ok(t.vm.checkExtension(C.KVM_CAP_READONLY_MEM) > 0);
      t.loadCode(`
        mov ax, 0x2000
        mov es, ax
        mov al, [es:0]
        out 0x10, al
        mov byte [es:4], 0x5a
        hlt`);
      const rom = t.addSlot(1, 0x20000, PAGE, C.KVM_MEM_READONLY);
      rom[0] = 0x77;
      const vcpu = t.realModeVcpu();
      assert.equal(runTo(vcpu, 'io').data[0], 0x77);
      const write = runTo(vcpu, 'mmio');
      assert.equal(write.address, 0x20004n);
      assert.equal(write.data.length, 1);
      assert.equal(write.isWrite, true);
      assert.equal(write.data[0], 0x5a);
      runTo(vcpu, 'hlt');
      assert.equal(rom[4], 0);
    });
  });

  test('ioeventfd with datamatch counts only matching writes', () => {
    withTestVm({ irqchip: true }, (t) => {
      const efd = t.eventfd();
      const mmioFd = t.eventfd();
      t.loadCode(`
        mov dx, 0x500       ; a port no in-kernel device claims
        mov al, 7
        out dx, al
        mov al, 3
        out dx, al
        mov al, 7
        out dx, al
        mov word [0x9000], 0x1234   ; MMIO, any width: no exit
        mov dword [0x9000], 0       ; (a second one)
        mov al, 0xff
        out 0x11, al        ; done (with an in-kernel irqchip, HLT stays in the kernel)
        jmp $`);
      t.vm.ioeventfd({ fd: efd, address: 0x500n, length: 1, datamatch: 7n, pio: true });
      t.vm.ioeventfd({ fd: mmioFd, address: 0x9000n, length: 0, pio: false });
      const vcpu = t.realModeVcpu();
      const seen: number[] = [];
      for (;;) {
        const exit = runTo(vcpu, 'io');
        if (exit.port === 0x11) break;
        assert.equal(exit.port, 0x500);
        seen.push(exit.data[0]);
      }
      assert.deepEqual(seen, [3], 'only the non-matching write exits to userspace');
      assert.equal(Number(native.eventfdRead(efd)), 2);
      assert.equal(Number(native.eventfdRead(mmioFd)), 2);
      t.vm.ioeventfd({ fd: efd, address: 0x500n, length: 1, datamatch: 7n, pio: true, deassign: true });
      assertErrno(
        () => t.vm.ioeventfd({ fd: efd, address: 0x500n, length: 1, datamatch: 7n, pio: true, deassign: true }),
        'ENOENT',
        /KVM_IOEVENTFD/,
      );
    });
  });
});

describe('in-kernel irqchip, PIT and VM state', needsKvm, () => {
  test('irqchip, PIT and clock state round-trip', () => {
    withTestVm({ irqchip: true }, (t) => {
      t.vm.createPit2();
      const master = t.vm.getIrqchip(C.KVM_IRQCHIP_PIC_MASTER);
      const slave = t.vm.getIrqchip(C.KVM_IRQCHIP_PIC_SLAVE);
      const ioapic = t.vm.getIrqchip(C.KVM_IRQCHIP_IOAPIC);
      assert.equal(master.length, C.SIZEOF_KVM_PIC_STATE);
      assert.equal(slave.length, C.SIZEOF_KVM_PIC_STATE);
      assert.equal(ioapic.length, C.SIZEOF_KVM_IOAPIC_STATE);
      // The IOAPIC sits at its architectural base address.
      assert.equal(new DataView(ioapic.buffer, ioapic.byteOffset).getBigUint64(0, true), 0xfec0_0000n);

      const changed = master.slice();
      changed[2] = 0xa5; // imr
      t.vm.setIrqchip(C.KVM_IRQCHIP_PIC_MASTER, changed);
      assert.equal(t.vm.getIrqchip(C.KVM_IRQCHIP_PIC_MASTER)[2], 0xa5);
      t.vm.setIrqchip(C.KVM_IRQCHIP_IOAPIC, ioapic);
      assert.equal(hex(t.vm.getIrqchip(C.KVM_IRQCHIP_IOAPIC)), hex(ioapic));
      assertErrno(() => t.vm.setIrqchip(C.KVM_IRQCHIP_IOAPIC, master), 'EINVAL');
      assertErrno(() => t.vm.getIrqchip(7), 'EINVAL');

      const pit = t.vm.getPit2();
      assert.equal(pit.length, C.SIZEOF_KVM_PIT_STATE2);
      t.vm.setPit2(pit);

      const clock = t.vm.getClock();
      assert.equal(clock.length, C.SIZEOF_KVM_CLOCK_DATA);
      const ns = new DataView(clock.buffer, clock.byteOffset).getBigUint64(0, true);
      const later = new DataView(t.vm.getClock().buffer).getBigUint64(0, true);
      assert.ok(later >= ns, 'the guest clock went backwards');
      t.vm.setClock(clock);

      t.vm.setIdentityMapAddr(0xfffbc000n);
    });
  });

  test('irq lines, irqfd with resample, GSI routing', () => {
    withTestVm({ irqchip: true }, (t) => {
      const trigger = t.eventfd();
      const resample = t.eventfd();
      t.vm.setIrqLine(4, true);
      t.vm.setIrqLine(4, false);
      t.vm.irqfd({ fd: trigger, gsi: 5, resampleFd: resample });
      native.eventfdWrite(trigger, 1);
      t.vm.irqfd({ fd: trigger, gsi: 5, deassign: true });

      t.vm.setGsiRouting([
        { gsi: 1, kind: 'irqchip', irqchip: C.KVM_IRQCHIP_IOAPIC, pin: 1 },
        { gsi: 1, kind: 'irqchip', irqchip: C.KVM_IRQCHIP_PIC_MASTER, pin: 1 },
        { gsi: 24, kind: 'msi', address: 0xfee0_0000n, data: 0x4041 },
      ]);
      t.vm.setIrqLine(1, true);
      t.vm.setIrqLine(1, false);
      assertErrno(() => t.vm.setGsiRouting([{ gsi: 2, kind: 'irqchip', irqchip: 99, pin: 0 }]), 'EINVAL', /KVM_SET_GSI_ROUTING/);
      t.vm.setGsiRouting([]);
    });
  });

  test('VCPU state that needs the irqchip: LAPIC, MP state, Hyper-V', () => {
    withTestVm({ irqchip: true }, (t) => {
      const vcpu = t.realModeVcpu();
      const lapic = vcpu.getLapic();
      assert.equal(lapic.length, C.SIZEOF_KVM_LAPIC_STATE);
      vcpu.setLapic(lapic);
      const mp = vcpu.getMpState();
      assert.equal(mp.length, C.SIZEOF_KVM_MP_STATE);
      assert.equal(new DataView(mp.buffer).getUint32(0, true), C.KVM_MP_STATE_RUNNABLE);
      vcpu.setMpState(mp);

      if (t.vm.checkExtension(C.KVM_CAP_HYPERV_CPUID) > 0) {
        const hv = vcpu.supportedHvCpuid();
        assert.ok(
          hv.some((e) => e.function === 0x4000_0000),
          'no Hyper-V vendor leaf',
        );
      }
      if (t.vm.checkExtension(C.KVM_CAP_HYPERV_SYNIC) > 0) vcpu.enableCap(C.KVM_CAP_HYPERV_SYNIC);
      assertErrno(() => vcpu.enableCap(C.KVM_CAP_HYPERV_SYNIC, 0, [1n, 2n, 3n, 4n, 5n]), 'EINVAL');
    });
  });
});

// The worker: wraps the VCPU fd made by the main thread, sets it up, registers
// itself as the kick target, then runs twice: once kicked while in the guest,
// once kicked before it even entered KVM_RUN (immediate_exit already set).
/**
 * Kicks thread workerData.tid every ~20 µs until word 0 of workerData.stop is
 * set, counting the signals sent in word 1; reports how many it sent.
 */
const SIGNAL_STORM_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
import(workerData.nativeUrl).then(({ native }) => {
  const stop = new Int32Array(workerData.stop);
  let sent = 0;
  while (Atomics.load(stop, 0) === 0) {
    try {
      native.kick(workerData.tid);
      sent++;
      Atomics.store(stop, 1, sent);
    } catch {
      // EAGAIN: the queue of real-time signals is full.
    }
    const until = performance.now() + 0.02;
    while (performance.now() < until);
  }
  parentPort.postMessage({ sent });
});
`;

const KICK_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  const { VcpuFd, RegsView, SregsView } = await import(workerData.kvmUrl);
  const { native } = await import(workerData.nativeUrl);
  const vcpu = new VcpuFd(workerData.fd, workerData.mmapSize);
  try {
    const sregs = new SregsView(vcpu.getSregs());
    sregs.cs.base = 0n;
    sregs.cs.selector = 0;
    vcpu.setSregs(sregs.bytes);
    const regs = new RegsView();
    regs.rip = BigInt(workerData.entry);
    regs.rflags = 2n;
    vcpu.setRegs(regs.bytes);
    vcpu.registerKickTarget();
    const flag = new Int32Array(workerData.flag);
    const result = (exit) => ({
      exited: exit.kind !== 'intr', immediateExit: vcpu.immediateExit, rbx: Number(new RegsView(vcpu.getRegs()).rbx),
    });

    parentPort.postMessage({ kind: 'ready', tid: native.gettid() });
    let t0 = Date.now();
    const first = result(vcpu.run());
    first.ms = Date.now() - t0;
    vcpu.clearImmediateExit();

    parentPort.postMessage({ kind: 'first', ...first });
    // Wait (bounded) until the main thread has kicked us again, then run.
    Atomics.wait(flag, 0, 0, 20000);
    t0 = Date.now();
    const second = result(vcpu.run());
    second.ms = Date.now() - t0;
    vcpu.clearImmediateExit();
    parentPort.postMessage({ kind: 'second', ...second });
  } catch (e) {
    parentPort.postMessage({ kind: 'error', message: String(e && e.stack || e) });
  } finally {
    vcpu.close();
  }
})();
`;

interface KickMessage {
  kind: 'ready' | 'first' | 'second' | 'error';
  tid?: number;
  exited?: boolean;
  immediateExit?: boolean;
  rbx?: number;
  ms?: number;
  message?: string;
}

describe('kick', needsKvm, () => {
  test('a kick makes a spinning guest leave KVM_RUN with EINTR', { timeout: 90_000 }, async () => {
    const t = new TestVm();
    // The guest spins until the byte at 0x1800 becomes non-zero. Only the
    // kick should get it out of KVM_RUN; the flag is the escape hatch that
    // ends the guest (with an IO exit to port 0x12) if kicks are broken, so
    // a failure cannot leave a thread stuck in the guest.
    const mem = t.loadCode(`
      xor ebx, ebx
    spin:
      inc ebx               ; proof that the guest ran
      cmp byte [0x1800], 0
      je spin
      out 0x12, al
      hlt`);
    const releaseGuest = (): void => {
      mem[0x800] = 1;
    };
    native.installKickHandler();
    const vcpuFd = t.vm.createVcpu(0);
    const flag = new SharedArrayBuffer(4);
    const worker = new Worker(KICK_WORKER, {
      eval: true,
      workerData: {
        fd: vcpuFd,
        mmapSize: t.mmapSize,
        entry: ENTRY,
        flag,
        kvmUrl: new URL('../src/kvm/index.js', import.meta.url).href,
        nativeUrl: new URL('../src/native/index.js', import.meta.url).href,
      },
    });
    const queue: KickMessage[] = [];
    let wake: (() => void) | undefined;
    let failure: Error | undefined;
    worker.on('message', (m: KickMessage) => {
      queue.push(m);
      wake?.();
    });
    worker.on('error', (e) => {
      failure = e;
      wake?.();
    });
    const exited = new Promise<void>((resolve) =>
      worker.on('exit', () => {
        wake?.();
        resolve();
      }),
    );

    async function next(kind: KickMessage['kind'], ms: number): Promise<KickMessage> {
      const deadline = Date.now() + ms;
      for (;;) {
        if (failure) throw failure;
        const m = queue.shift();
        if (m) {
          if (m.kind === 'error') throw new Error(`worker failed: ${m.message}`);
          assert.equal(m.kind, kind);
          return m;
        }
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no '${kind}' from the VCPU worker within ${ms} ms`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
    }

    let tid = 0;
    try {
      const ready = await next('ready', 10_000);
      tid = ready.tid!;
      // Give the worker time to enter the guest, then kick it once.
      await new Promise((r) => setTimeout(r, 200));
      native.kick(tid);
      const first = await next('first', 5_000);
      assert.equal(first.exited, false, 'KVM_RUN did not report the interruption');
      assert.equal(first.immediateExit, true, 'the kick handler did not set immediate_exit');
      assert.ok(first.rbx! > 0, 'the guest never ran: the kick was not taken inside the guest');

      // Kick before the worker enters KVM_RUN: immediate_exit makes it return at once.
      native.kick(tid);
      Atomics.store(new Int32Array(flag), 0, 1);
      Atomics.notify(new Int32Array(flag), 0);
      const second = await next('second', 5_000);
      assert.equal(second.exited, false);
      assert.equal(second.immediateExit, true);
      assert.equal(second.rbx, first.rbx, 'the guest ran although the kick came before KVM_RUN');
      assert.ok(second.ms! < 1_000, `an early kick was lost: KVM_RUN ran for ${second.ms} ms`);
      await exited;
    } finally {
      // Whatever happened, never leave a thread spinning in the guest.
      releaseGuest();
      Atomics.store(new Int32Array(flag), 0, 1);
      Atomics.notify(new Int32Array(flag), 0);
      let stopped = false;
      void exited.then(() => {
        stopped = true;
      });
      for (let i = 0; i < 50 && !stopped; i++) {
        try {
          if (tid) native.kick(tid);
        } catch {
          // the thread is already gone
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      if (!stopped) await worker.terminate();
      t.close();
    }
  });
});
