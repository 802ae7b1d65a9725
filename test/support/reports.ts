/**
 * The JSON reports of the test plugins, typed once. A plugin builds its
 * report as one of these types and prints it as one line (finish() in
 * ./test-plugin.ts); its test reads that line back as `Reported<T>`
 * (runReport() and reportOf() in ./run.ts). The plugin keeps exact values
 * (bigints); the JSON carries them as hex strings.
 */
import type { ProgramOutcome } from '../../src/guest/index.js';

/** How a report prints: bigints as hex strings ("0x1f"), which JSON has no type for. */
export function jsonReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? `0x${value.toString(16)}` : value;
}

/** What a test reads back of a report of type T: its bigints are hex strings (see {@link jsonReplacer}). */
export type Reported<T> = T extends bigint
  ? string
  : T extends readonly (infer E)[]
    ? Reported<E>[]
    : T extends object
      ? { [K in keyof T]: Reported<T[K]> }
      : T;

/** A request's answer as it came back on the wire: its errno and the response member it carried. */
export interface WireAnswer {
  errno: number;
  member: string | null;
}

// ---------------------------------------------------------------------------
// The VCPU side (test/plugins/vcpu-*.ts, test/protocol-vcpu.test.ts)

/** vcpu-state: per-VCPU state set by the plugin, as the guest saw it and as it reads back. */
export interface VcpuStateReport {
  /** The XCR0 set: x87 | SSE, plus AVX where KVM offers it. */
  xcr0: bigint;
  /** Malformed state requests, by name (`regsTooShort`, `getUnknownSet`, ...). */
  wire: Record<string, WireAnswer>;
  /** VCPU 0's MP state at init. */
  mpBefore: number;
  msrsInRequestOrder: bigint[];
  xcr0Before: bigint;
  fpuBeforeRun: { fcw: number; mxcsr: number };
  cr8AfterTpr: bigint;
  cr4Set: bigint;
  setRegs: WireAnswer;
  setDebugregs: WireAnswer;
  /** What the handler of the injected interrupt reported. */
  handler: bigint;
  /** What the guest reported, by name (`rbx`, `cr4`, `cpuidEax`, `tpr`, ...). */
  guest: Record<string, bigint>;
  readBack: {
    fcw: number;
    /** st0 as 10 bytes of hex. */
    fpr0: string;
    mxcsr: number;
    tpr: number;
    nrXcrs: number;
    xcr0: bigint;
    interruptInjected: number;
    mp: number;
    sysenterCs: bigint;
    dr0: bigint;
  };
  /** VCPU 1 (an application processor): its MP state before and after set-up, and its LAPIC ID register. */
  ap: { mpBefore: number; mpAfter: number; lapicId: bigint };
}

/** vcpu-async: 1000 writes to an async-write port, then a read of it. */
export interface VcpuAsyncReport {
  /** The value of each notification, in order. */
  values: number[];
  allNoResume: boolean;
  allWrites: boolean;
  /** The access sizes seen. */
  sizes: number[];
  /** What the guest's read of the async port returned. */
  read: bigint;
}

/** vcpu-io: every event the plugin saw ("mmio read 0x10000 size 1", "... = 0x11" for writes), and the guest's reports. */
export interface VcpuIoReport {
  events: string[];
  reports: bigint[];
}

/** What one access carried under a call hint (vcpu-hints). */
export interface HintCarried {
  address: string;
  isWrite: boolean;
  regs: boolean;
  sregs: boolean;
  debugregs: boolean;
  /** Hex strings of the values that came along, when they did. */
  rax?: string;
  dr0?: string;
  cr0?: string;
}

/** vcpu-hints: set_call_hint. */
export interface VcpuHintsReport {
  events: HintCarried[];
  /** The rbx the guest reported after the plugin set it during the hinted event. */
  rbxSeen: bigint;
  /** The value of the last hinted write. */
  lastValue: bigint;
}

/** vcpu-connections: connections on worker threads while VCPU 0 runs. */
export interface VcpuConnectionsReport {
  /** Per worker: request rounds done, failed answers, whether it closed its connection. */
  workers: { rounds: number; failures: number; closed: boolean }[];
  /** Rounds of workers 1 and 2 when worker 0 closed its connection. */
  roundsAtClose: number[];
  /** VCPU exits served, in all and when worker 0 closed. */
  exits: number;
  exitsAtClose: number;
  /** The guest's values came in order. */
  ordered: boolean;
  mainStillWorks: boolean;
}

/** vcpu-hyperv: Hyper-V CPUID and SynIC, where KVM has them. */
export interface VcpuHypervReport {
  has: { hypervCpuid: boolean; synic: boolean };
  /** With KVM_CAP_HYPERV_CPUID only. */
  hypervCpuid?: { count: number; vendor: string | null; interface: string | null };
  /** enable_capability of capabilities that must be refused. */
  refused: { hypervCpuid: WireAnswer; irqchip: WireAnswer; unknown: WireAnswer };
  enableSynic: WireAnswer;
  /** Without KVM_CAP_HYPERV_CPUID only. */
  hypervCpuidRefused?: WireAnswer;
  /** With KVM_CAP_HYPERV_SYNIC only. */
  synicExit?: { msr: number; control: bigint; evtPage: bigint; msgPage: bigint };
  /** The guest's last report. */
  done: bigint;
}

/** vcpu-pause: pause_vcpus of VCPUs 0 and 2 of 3. */
export interface VcpuPauseReport {
  paused: { vcpu: number; user: bigint }[];
  stillFrozen: boolean;
  frozenCounters: number[];
  afterWait: number[];
  reports: { vcpu: number; rax: bigint }[];
  vcpu1: { notifications: number; ordered: boolean; lastCount: bigint; target: number };
}

/** vcpu-reserve-live: reservations changed from a second connection while the VCPU runs. */
export interface VcpuReserveLiveReport {
  countBeforeReserve: number;
  firstValue: bigint;
  countAtFirst: number;
  /** Writes to the unreserved port still reported after the move. */
  staleA: number;
  after: { port: string; value: bigint }[];
  ordered: boolean;
}

// ---------------------------------------------------------------------------
// The sandbox (test/plugins/jail-probe.ts, sandbox-probe.ts)

/** The outcome of one attempt: 'ok' or an errno name such as 'EPERM'. */
export type Attempt = string;

/** jail-probe probe: what a jailed plugin could reach and do. */
export interface JailProbeReport {
  pid: number;
  kvm: Attempt;
  hostFile: Attempt;
  /** The pids in the jail's /proc. */
  procPids: number[];
  hostPidInProc: boolean;
  killHost: Attempt;
  capEff: string | undefined;
  capPrm: string | undefined;
  noNewPrivs: string | undefined;
  raisePriority: Attempt;
  sethostname: Attempt;
  mount: Attempt;
  kcmp: Attempt;
  ptraceTraceme: Attempt;
  readMounted: Attempt;
  readMountedText: string | undefined;
  writeReadOnlyMount: Attempt;
  writeWritableMount: Attempt;
}

/** jail-probe kill: a line before the call the policy kills for, and one after it (if it survived). */
export type JailKillReport = { about: string } | { survived: Attempt };

/** jail-probe policy: calls the default policy answers with errno rules. */
export interface JailPolicyReport {
  getPriority: Attempt;
  kcmp: Attempt;
  sethostname: Attempt;
}

// ---------------------------------------------------------------------------
// The main connection (test/plugins/proto-*.ts, test/protocol-vm.test.ts)

/** A dirty log on the wire: errno, member and the bitmap's size. */
export type DirtyLogAnswer = WireAnswer & { bytes: number };
/** Dirty bitmaps of slots A (16 pages) and B (70 pages), as hex. */
export interface DirtyBitmaps {
  a: string;
  b: string;
}

/** proto-memory dirty: dirty logging. */
export interface ProtoMemoryDirtyReport {
  before: DirtyBitmaps;
  round1: DirtyBitmaps;
  /** Read again at once: reading cleared the log. */
  again: DirtyBitmaps;
  round2: DirtyBitmaps;
  /** The bytes the guest wrote, read from the plugin's memfds. */
  contents: (number | undefined)[];
  slotWithoutDirtyLog: DirtyLogAnswer;
  unknownId: DirtyLogAnswer;
}

/** proto-memory readonly: a read-only slot, partly reserved for MMIO. */
export interface ProtoMemoryReadonlyReport {
  /** Every io event, in order. */
  events: { space: string; address: string; write: boolean; size: number; value: string }[];
  /** Words of the read-only memfd after the guest ran, as hex. */
  memoryAfter: string[];
}

/** One round of guest writes in proto-ioevent. */
export interface IoeventRound {
  /** Values written to the watched port 0x230 that reached the plugin. */
  port230: string[];
  /** Each ioeventfd's count, by registration name (`port0`, `mmio8`, ...). */
  counts: Record<string, number>;
}

/** proto-ioevent: ioeventfds, before and after their destroy. */
export interface ProtoIoeventReport {
  round1: IoeventRound;
  round2: IoeventRound;
  /** The errno of each destroy. */
  destroyed: number[];
}

/** proto-irq pic: an irqfd on GSI 5 and set_irq on IRQ 10. */
export interface ProtoIrqPicReport {
  irqfdVector: number;
  resampleBeforeEoi: number;
  resampleAfterEoi: number;
  irqfdAgain: number;
  resampleAgain: number;
  setIrqVector: number;
  setIrqAgain: number;
}

/** proto-irq ioapic: a level-triggered IOAPIC pin fed by an irqfd with resample. */
export interface ProtoIrqIoapicReport {
  /** Its redirection entry, as the guest programmed it. */
  entryProgrammed: bigint;
  rounds: {
    vector: number;
    remoteIrrInHandler: boolean;
    resampleInHandler: number;
    resampleAfterEoi: number;
    remoteIrrAfterEoi: boolean;
  }[];
}

/** proto-irq routing: the vectors the guest reported, in order. */
export interface ProtoIrqRoutingReport {
  vectors: number[];
}

/** proto-vm-state: VM-wide state read, changed, written, read back and seen by the guest. */
export interface ProtoVmStateReport {
  /** What get_state returned, and the kernel structs' sizes. */
  sizes: {
    pic0: number;
    pic1: number;
    ioapic: number;
    pit: number;
    clock: number;
    expected: { pic: number; ioapic: number; pit: number; clock: number };
  };
  pic0: { before: number | undefined; after: number | undefined; sameAsWritten: boolean };
  pic1: { after: number | undefined; sameAsWritten: boolean };
  ioapic: { idBefore: number; idAfter: number; entry7After: bigint; sameAsWritten: boolean };
  pit: { countBefore: number; countAfter: number; modeAfter: number };
  clock: { advancedNs: bigint };
  /** Wrong sizes and an unknown set, by name (`pic0Short`, `getUnknown`, ...). */
  refused: Record<string, WireAnswer>;
  pic0Unchanged: number;
  /** What the guest read through its ports and the IOAPIC window. */
  guestSaw: bigint[];
}

/** A query's answer on the wire, with the number of descriptors that came with it. */
export type QueryAnswer = WireAnswer & { fds: number };

/** proto-queries: the query requests of the main connection. */
export interface ProtoQueriesReport {
  supported: {
    count: number;
    leaf0: { maxLeaf: number; vendor: string } | null;
    leaf1Fpu: boolean | null;
    leaf1Tsc: boolean | null;
    hasExtendedLeaf: boolean;
    indexedLeaves: number;
  };
  emulated: { count: number; functions: number[]; movbe: boolean };
  msrs: { count: number; tsc: boolean; sysenterCs: boolean };
  /** check_extension of some capabilities, by name. */
  extensions: Record<string, { errno: number; has: boolean | null }>;
  identityMapBeforeStart: QueryAnswer;
  netConfig: QueryAnswer;
  start: QueryAnswer;
  identityMapAfterStart: QueryAnswer;
}

/** proto-robust: malformed and out-of-range requests, and that the host still serves after them. */
export interface ProtoRobustReport {
  /** Each refused (or accepted) request, by name (`ioEventLength3`, `memoryOverlapping`, ...). */
  results: Record<string, WireAnswer>;
  garbageDropped: boolean;
  badWireTypeDropped: boolean;
  /** Each malformed message the strict decoder must drop (true: its connection was dropped). */
  strict: Record<string, boolean>;
  oversized: WireAnswer;
  oversizedKeepsConnection: boolean;
  oversizedGarbageDropped: boolean;
  hugeDirtyLogKeepsConnection: boolean;
  stillServing: boolean;
  sideServing: boolean;
  guestResult: number;
}

/** sandbox-probe: what a plugin finds around itself in the jail (it speaks no protocol). */
export interface SandboxProbeReport {
  uid: number;
  gid: number;
  euid: number;
  pid: number;
  capEff: string | undefined;
  capPrm: string | undefined;
  capBnd: string | undefined;
  noNewPrivs: string | undefined;
  seccomp: string | undefined;
  /** The names in /dev, sorted. */
  dev: string[];
  kvm: Attempt;
  /** Reading each host file given on the command line. */
  hostFiles: Record<string, Attempt>;
  procPids: number[];
  killHost: Attempt;
  /** The soft and hard limits of open files. */
  nofile: string[] | undefined;
  /** What fd 3 is: 'socket', 'other' or an errno name. */
  fd3: string;
  writeRoot: Attempt;
  writeDev: Attempt;
  devNull: Attempt;
  urandom: Attempt;
  hostname: string;
  netInterfaces: string[];
  uidMap: number[];
  /** Loading the SDK's native addon: 'ok' or the error. */
  addon: string;
  env: string | undefined;
}

// ---------------------------------------------------------------------------
// The rest

/** wire-errors: each request the protocol must refuse, by name, as answered on the wire. */
export type WireErrorsReport = Record<string, WireAnswer>;

/** crosvm-options: what the plugin was given through crosvm's options. */
export interface CrosvmOptionsReport {
  args: string[];
  vcpus: number;
  /** The file bound at /crosvm-test, or the errno name of reading it. */
  file: string;
  /** 'ok' or the errno name of statfs. */
  statfs: string;
  /** Lines of its gid map, spaces collapsed. */
  gidMap: string[];
}

/** The kernel's ARP reply, as net-arp read it from the tap. */
export interface ArpReply {
  destinationMac: string;
  senderMac: string;
  senderIp: string;
  targetMac: string;
  targetIp: string;
}

/** net-arp: the tap the plugin was given, and the ARP exchange on it. */
export interface NetArpReport {
  /** Never set here: see {@link NetArpErrorReport}. */
  error?: undefined;
  hostIpv4: string;
  netmask: string;
  hostMac: string;
  tapName: string;
  tapFeatures: { tap: boolean; noPi: boolean };
  tapFlags: { tap: boolean; noPi: boolean };
  nonBlocking: boolean;
  guestMac: string;
  guestIpv4: string;
  reply: ArpReply | null;
  /** Frames that were not the reply (IPv6 chatter and the like). */
  otherFrames: number;
}

/** net-arp when get_net_config failed: the errno's name. */
export interface NetArpErrorReport {
  error: string;
}

/** guest-program: how a compiled program ended (a fault by its message) and what its host functions saw. */
export interface GuestProgramReport {
  outcome: Extract<ProgramOutcome, { kind: 'exit' }> | { kind: 'fault'; message: string };
  /** The SHA-256 digest the program handed over (sha256). */
  digest?: string;
  /** Calls of host function 7 (hostcall). */
  calls: number;
  /** Interrupt vectors delivered, the first 100 (uart-irq). */
  interrupts: number[];
  stdout: string;
}

/** The fuzz plugin's report of one round (test/fuzz/run.ts reads it). */
export interface FuzzReport {
  seed: number;
  main: {
    sent: Record<string, number>;
    answered: number;
    dropped: number;
    probes: number;
    fdsAttached: number;
    connectionsOpened: number;
  };
  vcpu: { sent: Record<string, number>; answered: number; silent: number; probes: number };
  started: boolean;
  vmEnded: boolean;
  findings: { what: string; kind: string; hex: string }[];
  novel: { key: string; kind: 'main' | 'vcpu'; hex: string }[];
}
