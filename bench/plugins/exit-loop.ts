#!/usr/bin/env node
/**
 * The benchmark plugin (TypeScript SDK): the guest of bench/guest.ts makes
 * EXITS measured exits on every VCPU, then writes the "done" port; the plugin
 * then exits 0 and prints (or writes to --out) one JSON object timed inside
 * the plugin:
 *
 *   exits          measured exits seen, all VCPUs together
 *   seconds        from the first VCPU's count read to the last VCPU's done
 *   usPerExit      seconds / (exits per VCPU)
 *   exitsPerSec    exits / seconds (for --async: notifications per second)
 *   firstExitUnixMs  wall clock (epoch ms) when the first exit reached the plugin
 *   loopPluginCpuSec, loopHostCpuSec  CPU time of the plugin and of its parent
 *                  (the host) over the same interval as `seconds` (the host's
 *                  from /proc/PPID/stat, 10 ms resolution)
 *   pluginCpuUserSec, pluginCpuSysSec, pluginMaxRssKiB, pid
 *
 * With --warmup-exits W (W > 0), also the steady state after the first W
 * measured exits of each VCPU (the first few thousand exits run while V8
 * still interprets the host's VCPU loop and this plugin's loop, 2-5x slower):
 *
 *   warmupExits       W, per VCPU
 *   usPerExitSteady   (last done - tSteady) / (exits per VCPU - W), where
 *                     tSteady is when the last VCPU to get there made its
 *                     W-th measured exit
 *   warmupExtraMs     (tSteady - first count read) - W x usPerExitSteady:
 *                     the one-time cost of warming up, on top of steady state
 *   steadyPluginCpuSec, steadyHostCpuSec, cpuUsPerExitSteady  CPU time over
 *                     [tSteady, last done], as for loop*CpuSec, and their sum
 *                     per measured exit (all VCPUs) in that window
 *
 * Usage (as a plugin): plugvisor run --plugin exit-loop.js [--cpus N] -- \
 *     [--exits N] [--warmup-exits W] [--mmio] [--async] [--out FILE] [--hold FILE]
 *
 *   --mmio   the measured exit is an MMIO write instead of a port write
 *   --async  the measured range is reserved with async_write: the VCPU does
 *            not stop, the plugin only counts notifications
 *   --hold F after writing the result, wait (VM still alive, VCPUs stopped at
 *            "done") until file F exists, then exit: lets the runner read the
 *            host's memory use while the VM is up
 *
 * One thread serves every VCPU, round-robin (each VCPU has at most one
 * pending exit, so this never deadlocks). VCPUs other than 0 are made
 * runnable with set_state(MP, RUNNABLE) at their init event: with the
 * in-kernel irqchip they would otherwise wait for INIT/SIPI.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { AddressSpace, Connection, GuestMemory, VcpuStateSet } from 'plugvisor/plugin';
import { GUEST_MEM_BASE, GUEST_MEM_SIZE, MMIO_EXIT, PORT_COUNT, PORT_DONE, PORT_EXIT, writeGuest } from '../guest.js';

/** KVM_MP_STATE_RUNNABLE, as a struct kvm_mp_state. */
const MP_STATE_RUNNABLE = new Uint8Array(4);

// ---- arguments ----
interface Options {
  exits: number;
  /** Measured exits per VCPU counted as warm-up; 0: no steady-state figures. */
  warmupExits: number;
  mmio: boolean;
  async: boolean;
  out?: string;
  hold?: string;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { exits: 10000, warmupExits: 0, mmio: false, async: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--exits') o.exits = Number(value());
    else if (a === '--warmup-exits') o.warmupExits = Number(value());
    else if (a === '--mmio') o.mmio = true;
    else if (a === '--async') o.async = true;
    else if (a === '--out') o.out = value();
    else if (a === '--hold') o.hold = value();
    else throw new Error(`unknown argument ${a}`);
  }
  if (!Number.isInteger(o.exits) || o.exits < 1 || o.exits > 0xffffffff) throw new Error('--exits must be 1..2^32-1');
  // At least one exit must be left for the steady window.
  if (!Number.isInteger(o.warmupExits) || o.warmupExits < 0 || o.warmupExits >= o.exits) {
    throw new Error('--warmup-exits must be 0..(--exits - 1)');
  }
  return o;
}

function vmHwmKiB(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : 0;
}

/**
 * CPU seconds (user + system, all threads) of the parent process, which is
 * the host when it runs the plugin directly (--disable-sandbox). From
 * /proc/PPID/stat, in clock ticks of 1/100 s (USER_HZ).
 */
function hostCpuSec(): number {
  try {
    const stat = readFileSync(`/proc/${process.ppid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

function pluginCpuSec(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function main(): void {
  const opts = parseArgs(process.argv.slice(2));
  const conn = Connection.connect();
  const memory = GuestMemory.create(GUEST_MEM_SIZE);
  writeGuest(memory.bytes, opts.mmio);
  conn.createMemory(memory, { start: GUEST_MEM_BASE, length: BigInt(GUEST_MEM_SIZE) });
  const measuredSpace = opts.mmio ? AddressSpace.MMIO : AddressSpace.IOPORT;
  const measuredAddress = opts.mmio ? MMIO_EXIT : PORT_EXIT;
  conn.reserveRange(measuredSpace, measuredAddress, 1n, { asyncWrite: opts.async });
  conn.reserveRange(AddressSpace.IOPORT, PORT_DONE, 2n); // 0x11 done, 0x12 count
  const vcpus = conn.getVcpus();
  conn.start();

  for (const vcpu of vcpus) {
    const event = vcpu.wait();
    if (event.kind !== 'init') throw new Error(`vcpu ${vcpu.id}: expected init, got ${event.kind}`);
    if (vcpu.id > 0) vcpu.setState(VcpuStateSet.MP, MP_STATE_RUNNABLE);
    vcpu.resume();
  }

  const count = new Uint8Array(4);
  new DataView(count.buffer).setUint32(0, opts.exits, true);
  let measured = 0;
  let tFirst = -1;
  let firstExitUnixMs = 0;
  let tLast = 0;
  let hostCpu0 = 0;
  let pluginCpu0 = 0;
  // Steady state: measured exits per VCPU (indexed by id; counted only with
  // --warmup-exits), how many VCPUs made their W-th, and the time and CPU
  // counters when the last of them did.
  const warmup = opts.warmupExits;
  const measuredBy = new Array<number>(vcpus.length).fill(0);
  let warmedVcpus = 0;
  let tSteady = 0;
  let hostCpuSteady = 0;
  let pluginCpuSteady = 0;
  const active = vcpus.slice();
  while (active.length > 0) {
    for (let i = 0; i < active.length; ) {
      const vcpu = active[i]!;
      const event = vcpu.wait();
      if (event.kind !== 'io') throw new Error(`vcpu ${vcpu.id}: unexpected ${event.kind} event`);
      const io = event;
      if (io.space === measuredSpace && io.address === measuredAddress) {
        measured++;
        if (warmup > 0 && ++measuredBy[vcpu.id] === warmup && ++warmedVcpus === vcpus.length) {
          tSteady = performance.now();
          hostCpuSteady = hostCpuSec();
          pluginCpuSteady = pluginCpuSec();
        }
        vcpu.resume(); // a no-op for async (noResume) notifications
      } else if (io.space === AddressSpace.IOPORT && io.address === PORT_COUNT) {
        if (tFirst < 0) {
          tFirst = performance.now();
          firstExitUnixMs = performance.timeOrigin + tFirst;
          hostCpu0 = hostCpuSec();
          pluginCpu0 = pluginCpuSec();
        }
        vcpu.resume(count);
      } else if (io.space === AddressSpace.IOPORT && io.address === PORT_DONE) {
        // Leave this VCPU stopped: resuming would run it into HLT, which ends
        // the VM for every VCPU.
        tLast = performance.now();
        active.splice(i, 1);
        continue;
      } else {
        throw new Error(`vcpu ${vcpu.id}: unexpected access to space ${io.space} address 0x${io.address.toString(16)}`);
      }
      i++;
    }
  }

  const hostCpuEnd = hostCpuSec();
  const pluginCpuEnd = pluginCpuSec();
  const loopHostCpuSec = hostCpuEnd - hostCpu0;
  const loopPluginCpuSec = pluginCpuEnd - pluginCpu0;
  const expected = opts.exits * vcpus.length;
  if (measured !== expected) throw new Error(`counted ${measured} measured exits, expected ${expected}`);
  const seconds = (tLast - tFirst) / 1000;
  // Every VCPU made all its exits (checked above) and W < exits, so each
  // passed its W-th: tSteady and the CPU counters at it are set.
  let steady: Record<string, number> = {};
  if (warmup > 0) {
    const steadyExits = opts.exits - warmup;
    const usPerExitSteady = ((tLast - tSteady) * 1000) / steadyExits;
    const steadyHostCpuSec = hostCpuEnd - hostCpuSteady;
    const steadyPluginCpuSec = pluginCpuEnd - pluginCpuSteady;
    steady = {
      warmupExits: warmup,
      usPerExitSteady,
      warmupExtraMs: tSteady - tFirst - (warmup * usPerExitSteady) / 1000,
      steadyPluginCpuSec,
      steadyHostCpuSec,
      cpuUsPerExitSteady: ((steadyHostCpuSec + steadyPluginCpuSec) * 1e6) / (steadyExits * vcpus.length),
    };
  }
  const cpu = process.cpuUsage();
  const result = {
    program: 'exit-loop.ts',
    mode: opts.mmio ? 'mmio' : 'io',
    async: opts.async,
    cpus: vcpus.length,
    exits: measured,
    seconds,
    usPerExit: (seconds * 1e6) / opts.exits,
    exitsPerSec: measured / seconds,
    firstExitUnixMs,
    loopPluginCpuSec,
    loopHostCpuSec,
    pluginCpuUserSec: cpu.user / 1e6,
    pluginCpuSysSec: cpu.system / 1e6,
    pluginMaxRssKiB: vmHwmKiB(),
    pid: process.pid,
    ...steady,
  };
  const text = JSON.stringify(result) + '\n';
  if (opts.out) {
    // Write then rename, so a runner polling for the file never reads half of it.
    writeFileSync(`${opts.out}.tmp`, text);
    renameSync(`${opts.out}.tmp`, opts.out);
  } else {
    process.stdout.write(text);
  }

  if (opts.hold) {
    while (!existsSync(opts.hold)) sleepMs(5);
  }
  process.exit(0);
}

try {
  main();
} catch (e) {
  process.stderr.write(`exit-loop: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}
