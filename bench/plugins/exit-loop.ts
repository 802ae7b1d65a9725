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
 *     [--exits N] [--warmup-exits W] [--mmio] [--async] [--threads] [--out FILE] [--hold FILE]
 *
 *   --mmio    the measured exit is an MMIO write instead of a port write
 *   --async   the measured range is reserved with async_write: the VCPU does
 *             not stop, the plugin only counts notifications
 *   --threads a worker_thread per VCPU (see below) instead of one thread
 *   --hold F  after writing the result, wait (VM still alive, VCPUs stopped at
 *             "done") until file F exists, then exit: lets the runner read the
 *             host's memory use while the VM is up
 *   --probe-main host|kvm  (with --threads) while the worker threads' VCPUs
 *             exit, the main thread times main-connection requests on a
 *             connection of its own, then as many again once every VCPU is
 *             done: probeStormP50Ms, probeStormP99Ms, probeStormMaxMs,
 *             probeIdleP50Ms, probeIdleP99Ms, probeStormCount (issue 16: how
 *             long a request waits under a VCPU exit storm). `host`: requests
 *             the host answers without KVM (reserve_range of a fresh port,
 *             its unreserve, a pause_vcpus of no VCPU); `kvm`: requests that
 *             change the VM (an io event created and destroyed: KVM_IOEVENTFD
 *             twice; a 4 KiB memory slot created and destroyed:
 *             KVM_SET_USER_MEMORY_REGION twice)
 *
 * By default one thread serves every VCPU, round-robin (each VCPU has at most
 * one pending exit, so this never deadlocks). With --threads, as the C plugin
 * does with pthreads, every VCPU has its own worker_thread (this same file,
 * started with isMainThread false) on its own connection (newConnection in
 * the main thread, fromFd and getVcpus({ threadPerVcpu: true }) in the
 * worker, so that the reads spin by the host's rule); the main thread starts
 * the VM once every worker holds its VCPU, then only waits. Each serving
 * thread runs the same loop (serve) and notes its own times and CPU
 * counters; the main thread combines them into the figures above (times are
 * absolute, performance.timeOrigin + now(), since each thread has its own
 * time origin). VCPUs other than 0 are made runnable with
 * set_state(MP, RUNNABLE) at their init event: with the in-kernel irqchip
 * they would otherwise wait for INIT/SIPI.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { AddressSpace, Connection, GuestMemory, Vcpu, VcpuStateSet } from 'plugvisor/plugin';
import { forEachArgument } from '../args.js';
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
  threads: boolean;
  probeMain?: 'host' | 'kvm';
  out?: string;
  hold?: string;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { exits: 10000, warmupExits: 0, mmio: false, async: false, threads: false };
  forEachArgument(argv, (a, value) => {
    if (a === '--exits') o.exits = Number(value());
    else if (a === '--warmup-exits') o.warmupExits = Number(value());
    else if (a === '--mmio') o.mmio = true;
    else if (a === '--async') o.async = true;
    else if (a === '--threads') o.threads = true;
    else if (a === '--probe-main') {
      const kind = value();
      if (kind !== 'host' && kind !== 'kvm') throw new Error('--probe-main takes host or kvm');
      o.probeMain = kind;
    } else if (a === '--out') o.out = value();
    else if (a === '--hold') o.hold = value();
    else throw new Error(`unknown argument ${a}`);
  });
  if (!Number.isInteger(o.exits) || o.exits < 1 || o.exits > 0xffffffff) throw new Error('--exits must be 1..2^32-1');
  // At least one exit must be left for the steady window.
  if (!Number.isInteger(o.warmupExits) || o.warmupExits < 0 || o.warmupExits >= o.exits) {
    throw new Error('--warmup-exits must be 0..(--exits - 1)');
  }
  if (o.probeMain && !o.threads) throw new Error('--probe-main needs --threads (the main thread must be free to probe)');
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

/** CPU seconds of this whole process (every thread, also from a worker). */
function pluginCpuSec(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** Wall clock in epoch ms, comparable across threads (each has its own performance.timeOrigin). */
function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

// ---- serving VCPUs ----

/** A moment: the time (epoch ms) and the CPU counters then. */
interface Sample {
  t: number;
  hostCpu: number;
  pluginCpu: number;
}

function sample(): Sample {
  return { t: nowMs(), hostCpu: hostCpuSec(), pluginCpu: pluginCpuSec() };
}

/** What one serving thread saw of its VCPUs (plain data: workers post it). */
interface Tally {
  /** Measured exits, its VCPUs together. */
  measured: number;
  /** At the first count read. */
  first: Sample;
  /** When the last of its VCPUs made its W-th measured exit (only with --warmup-exits). */
  steady?: Sample;
  /** The time of the last done; CPU counters read right after it. */
  end: Sample;
}

/**
 * Serves `vcpus` from this thread, round-robin, from their init event to
 * their done (where they stay stopped), and returns what it saw. The main
 * thread passes every VCPU, a --threads worker its own one.
 */
function serve(vcpus: readonly Vcpu[], opts: Options): Tally {
  const measuredSpace = opts.mmio ? AddressSpace.MMIO : AddressSpace.IOPORT;
  const measuredAddress = opts.mmio ? MMIO_EXIT : PORT_EXIT;
  for (const vcpu of vcpus) {
    const event = vcpu.wait();
    if (event.kind !== 'init') throw new Error(`vcpu ${vcpu.id}: expected init, got ${event.kind}`);
    if (vcpu.id > 0) vcpu.setState(VcpuStateSet.MP, MP_STATE_RUNNABLE);
    vcpu.resume();
  }

  const count = new Uint8Array(4);
  new DataView(count.buffer).setUint32(0, opts.exits, true);
  let measured = 0;
  let first: Sample | undefined;
  let tLast = 0;
  // Steady state: measured exits per VCPU (indexed like `vcpus`; counted only
  // with --warmup-exits), how many VCPUs made their W-th, and the moment the
  // last of them did.
  const warmup = opts.warmupExits;
  const measuredBy = vcpus.map(() => 0);
  let warmedVcpus = 0;
  let steady: Sample | undefined;
  const active = vcpus.map((_, index) => index);
  while (active.length > 0) {
    for (let i = 0; i < active.length;) {
      const index = active[i];
      const vcpu = vcpus[index];
      const event = vcpu.wait();
      if (event.kind !== 'io') throw new Error(`vcpu ${vcpu.id}: unexpected ${event.kind} event`);
      const io = event;
      if (io.space === measuredSpace && io.address === measuredAddress) {
        measured++;
        if (warmup > 0 && ++measuredBy[index] === warmup && ++warmedVcpus === vcpus.length) steady = sample();
        vcpu.resume(); // a no-op for async (noResume) notifications
      } else if (io.space === AddressSpace.IOPORT && io.address === PORT_COUNT) {
        first ??= sample();
        vcpu.resume(count);
      } else if (io.space === AddressSpace.IOPORT && io.address === PORT_DONE) {
        // Leave this VCPU stopped: resuming would run it into HLT, which ends
        // the VM for every VCPU.
        tLast = nowMs();
        active.splice(i, 1);
        continue;
      } else {
        throw new Error(`vcpu ${vcpu.id}: unexpected access to space ${io.space} address 0x${io.address.toString(16)}`);
      }
      i++;
    }
  }
  const end = { t: tLast, hostCpu: hostCpuSec(), pluginCpu: pluginCpuSec() };
  if (first === undefined) throw new Error('no VCPU read the exit count');
  return { measured, first, steady, end };
}

/** The tallies of several threads as one: the earliest first sample, the latest steady and end samples. */
function combine(tallies: readonly Tally[]): Tally {
  const earliest = (a: Sample, b: Sample): Sample => (b.t < a.t ? b : a);
  const latest = (a: Sample, b: Sample): Sample => (b.t > a.t ? b : a);
  const steadies = tallies.flatMap((t) => (t.steady ? [t.steady] : []));
  return {
    measured: tallies.reduce((sum, t) => sum + t.measured, 0),
    first: tallies.map((t) => t.first).reduce(earliest),
    steady: steadies.length === tallies.length ? steadies.reduce(latest) : undefined,
    end: tallies.map((t) => t.end).reduce(latest),
  };
}

/** The JSON result (see the header). */
function report(opts: Options, cpus: number, tally: Tally): Record<string, unknown> {
  const { measured, first, end } = tally;
  const expected = opts.exits * cpus;
  if (measured !== expected) throw new Error(`counted ${measured} measured exits, expected ${expected}`);
  const seconds = (end.t - first.t) / 1000;
  // Every VCPU made all its exits (checked above) and W < exits, so each
  // passed its W-th: the steady sample is there.
  let steady: Record<string, number> = {};
  const warmup = opts.warmupExits;
  if (warmup > 0) {
    const tSteady = tally.steady!;
    const steadyExits = opts.exits - warmup;
    const usPerExitSteady = ((end.t - tSteady.t) * 1000) / steadyExits;
    const steadyHostCpuSec = end.hostCpu - tSteady.hostCpu;
    const steadyPluginCpuSec = end.pluginCpu - tSteady.pluginCpu;
    steady = {
      warmupExits: warmup,
      usPerExitSteady,
      warmupExtraMs: tSteady.t - first.t - (warmup * usPerExitSteady) / 1000,
      steadyPluginCpuSec,
      steadyHostCpuSec,
      cpuUsPerExitSteady: ((steadyHostCpuSec + steadyPluginCpuSec) * 1e6) / (steadyExits * cpus),
    };
  }
  const cpu = process.cpuUsage();
  return {
    program: 'exit-loop.ts',
    mode: opts.mmio ? 'mmio' : 'io',
    async: opts.async,
    cpus,
    exits: measured,
    seconds,
    usPerExit: (seconds * 1e6) / opts.exits,
    exitsPerSec: measured / seconds,
    firstExitUnixMs: first.t,
    loopPluginCpuSec: end.pluginCpu - first.pluginCpu,
    loopHostCpuSec: end.hostCpu - first.hostCpu,
    pluginCpuUserSec: cpu.user / 1e6,
    pluginCpuSysSec: cpu.system / 1e6,
    pluginMaxRssKiB: vmHwmKiB(),
    pid: process.pid,
    ...steady,
  };
}

// ---- --threads: a worker per VCPU ----

interface WorkerInput {
  opts: Options;
  /** The VCPU this worker serves (its index in getVcpus()). */
  index: number;
  /** The worker's own connection, from newConnection(). */
  fd: number;
  /** An Int32 the main thread sets to 1 (and notifies) once the VM is started. */
  started: SharedArrayBuffer;
  /** An Int32 each worker adds 1 to once its VCPU is done (the probe's end; message events wait for a free main thread). */
  done: SharedArrayBuffer;
}

type WorkerMessage = { kind: 'ready' } | { kind: 'tally'; tally: Tally };

/** In a worker: take the VCPU, say so, serve it once the VM is started, post the tally. */
function workerMain({ opts, index, fd, started, done }: WorkerInput): void {
  const vcpu = Connection.fromFd(fd).getVcpus({ threadPerVcpu: true })[index];
  if (vcpu === undefined) throw new Error(`no VCPU ${index}`);
  const post = (m: WorkerMessage): void => parentPort!.postMessage(m);
  post({ kind: 'ready' });
  // Wait for the start here rather than in vcpu.wait(): process.exit joins
  // the workers, and a worker blocked in a native read of a VCPU that never
  // starts (another worker failed) would keep the plugin from exiting.
  Atomics.wait(new Int32Array(started), 0, 0);
  const tally = serve([vcpu], opts);
  Atomics.add(new Int32Array(done), 0, 1);
  post({ kind: 'tally', tally });
}

/** Starts the worker for one VCPU: `ready` once it holds its VCPU, `tally` once the VCPU is done. */
function spawnWorker(input: WorkerInput): { ready: Promise<void>; tally: Promise<Tally> } {
  const worker = new Worker(new URL(import.meta.url), { workerData: input });
  let onReady!: () => void;
  let onTally!: (tally: Tally) => void;
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  const tally = new Promise<Tally>((resolve) => (onTally = resolve));
  worker.on('message', (m: WorkerMessage) => (m.kind === 'ready' ? onReady() : onTally(m.tally)));
  // A throw in the worker, or its end before it posted the tally, fails both.
  const failed = new Promise<never>((_, reject) => {
    worker.on('error', reject);
    worker.on('exit', (code) => reject(new Error(`the worker of vcpu ${input.index} exited (code ${code}) before it reported`)));
  });
  return { ready: Promise.race([ready, failed]), tally: Promise.race([tally, failed]) };
}

async function serveInWorkers(conn: Connection, cpus: number, opts: Options): Promise<{ tally: Tally; probe?: Probe }> {
  const started = new SharedArrayBuffer(4);
  const done = new SharedArrayBuffer(4);
  const workers = Array.from({ length: cpus }, (_, index) =>
    spawnWorker({ opts, index, fd: conn.newConnection().fd, started, done }),
  );
  await Promise.all(workers.map((w) => w.ready));
  const prober = opts.probeMain ? conn.newConnection() : undefined;
  conn.start();
  const flag = new Int32Array(started);
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
  const probe = prober && probeMain(prober, opts.probeMain!, new Int32Array(done), cpus);
  return { tally: combine(await Promise.all(workers.map((w) => w.tally))), probe };
}

// ---- --probe-main ----

interface Probe {
  storm: number[];
  idle: number[];
}

/** A port and a guest address no guest touches, used by the probe. */
const PROBE_PORT = 0x700n;
const PROBE_MEMORY_START = 0x4000_0000n;

/** Times main requests until every VCPU is done (the storm), then as many again (idle). In ms. */
function probeMain(conn: Connection, kind: 'host' | 'kvm', done: Int32Array, cpus: number): Probe {
  const memory = GuestMemory.create(0x1000);
  const once = (): number => {
    const t0 = performance.now();
    if (kind === 'host') {
      conn.reserveRange(AddressSpace.IOPORT, PROBE_PORT, 1n);
      conn.unreserveRange(AddressSpace.IOPORT, PROBE_PORT);
      conn.pauseVcpus(0n, 0n);
    } else {
      conn.createIoEvent(AddressSpace.IOPORT, PROBE_PORT, 1, 1n).destroy();
      conn.createMemory(memory, { start: PROBE_MEMORY_START }).destroy();
    }
    return performance.now() - t0;
  };
  const storm: number[] = [];
  while (Atomics.load(done, 0) < cpus) storm.push(once());
  const idle = storm.map(() => once());
  return { storm, idle };
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

function probeReport(probe: Probe): Record<string, number> {
  const storm = [...probe.storm].sort((a, b) => a - b);
  const idle = [...probe.idle].sort((a, b) => a - b);
  return {
    probeStormCount: storm.length,
    probeStormP50Ms: percentile(storm, 50),
    probeStormP99Ms: percentile(storm, 99),
    probeStormMaxMs: storm.at(-1) ?? NaN,
    probeIdleP50Ms: percentile(idle, 50),
    probeIdleP99Ms: percentile(idle, 99),
  };
}

// ---- main ----

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const conn = Connection.connect();
  const memory = GuestMemory.create(GUEST_MEM_SIZE);
  writeGuest(memory.bytes, opts.mmio);
  conn.createMemory(memory, { start: GUEST_MEM_BASE, length: BigInt(GUEST_MEM_SIZE) });
  const measuredSpace = opts.mmio ? AddressSpace.MMIO : AddressSpace.IOPORT;
  const measuredAddress = opts.mmio ? MMIO_EXIT : PORT_EXIT;
  conn.reserveRange(measuredSpace, measuredAddress, 1n, { asyncWrite: opts.async });
  conn.reserveRange(AddressSpace.IOPORT, PORT_DONE, 2n); // 0x11 done, 0x12 count
  const vcpus = conn.getVcpus(); // with --threads only counted here: each worker takes its own
  let tally: Tally;
  let probe: Probe | undefined;
  if (opts.threads) {
    ({ tally, probe } = await serveInWorkers(conn, vcpus.length, opts));
  } else {
    conn.start();
    tally = serve(vcpus, opts);
  }

  const text = JSON.stringify({ ...report(opts, vcpus.length, tally), ...(probe ? probeReport(probe) : {}) }) + '\n';
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

if (isMainThread) {
  main().catch((e: unknown) => {
    process.stderr.write(`exit-loop: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
} else {
  workerMain(workerData as WorkerInput); // a throw here rejects the main thread's spawnWorker promises
}
