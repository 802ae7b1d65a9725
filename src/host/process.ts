/**
 * The plugin process, host side: spawning it, its connections, the objects it
 * creates and every MainRequest it can send (all handled in
 * {@link PluginProcess.handleRequest}). The main loop (run.ts) drives it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { C, native, isErrnoError, type FdWatcher } from '../native/index.js';
import type { CpuidEntry2, Kvm, Vm } from '../kvm/index.js';
import {
  AddressSpace,
  type CpuidEntry,
  MainRequest,
  MainRequest_StateSet,
  MainResponse,
  type MainRequest_Create,
  type MainRequest_SetCallHint,
} from '../protocol/gen/plugin.js';
import { mainFailure, type MainRequestCase } from '../protocol/responses.js';
import { encodeMessage } from '../protocol/framing.js';
import { decodeStrict, leadingMessageField, messageShape } from '../protocol/strict.js';
import { errno, RequestError } from '../errno.js';
import { forEachLine, type LineSink } from './lines.js';
import type { Log } from './log.js';
import { IoEventObject, IrqEventObject, MemoryObject, type PluginObject } from './objects.js';
import { ReservedRanges, IOPORT, MMIO } from './ranges.js';
import { encodeVcpuConfig } from './vcpu-config.js';
import { VcpuSet, type VcpuExitHandler } from './vcpus.js';
import type { Tap, TapConfig } from './net.js';

/** The protocol's request buffer size on main connections. */
const REQUEST_BUFFER_SIZE = 4096;
/** Descriptors accepted with one request (only `create memory` sends one). */
const MAX_REQUEST_FDS = 4;
/**
 * The largest response that is sent: the protocol's clients read responses
 * into a 256 KiB buffer and take up to 253 fds (the kernel's SCM_MAX_FD;
 * get_vcpus sends 128 for 64 VCPUs). A larger one (a dirty log of a slot over
 * 8 GiB), or one the socket will not take whole (EMSGSIZE), is answered with
 * errno EMSGSIZE instead.
 */
const MAX_RESPONSE_BYTES = 256 * 1024;
const MAX_RESPONSE_FDS = 253;

/** How to start the plugin (planned by the sandbox, or a plain command line without it). */
export interface LaunchPlan {
  file: string;
  args: string[];
  /** Descriptors the plugin inherits at 4, 5, ... (3 is the main connection). */
  extraFds: number[];
  /** Closes the plan's fds in this process (idempotent). Safe to call right after the spawn. */
  dispose(): void;
}

/** How the plugin process ended, as `tryWait` reports it. */
export type PluginStatus =
  | {
      /** Still running (or never started). */
      state: 'running';
    }
  | {
      /** Exited by itself. */
      state: 'exited';
      /** Its exit status. */
      code: number;
    }
  | {
      /** Killed by a signal. */
      state: 'signaled';
      /** The signal's name. */
      signal: NodeJS.Signals;
    };

export interface ProcessEvents {
  /** The plugin called `start` and the VCPU threads are running. */
  onStarted(): void;
  onVcpuExit: VcpuExitHandler;
  /** The plugin process ended (or could not be spawned). */
  onPluginExit(status: PluginStatus, spawnError?: Error): void;
}

interface Reply {
  response: MainResponse;
  fds: readonly number[];
  /** Descriptors to close once sent (those made only to be handed out). */
  closeAfterSend: readonly number[];
}

interface Connection {
  fd: number;
  watcher: FdWatcher;
}

/** Getter and setter of one VM-wide kernel state, by protocol StateSet. */
interface VmStateAccess {
  size: number;
  get(vm: Vm): Uint8Array;
  set(vm: Vm, bytes: Uint8Array): void;
}

const VM_STATE_SETS: ReadonlyMap<number, VmStateAccess> = new Map([
  [
    MainRequest_StateSet.PIC0,
    { size: C.SIZEOF_KVM_PIC_STATE, get: (vm) => vm.getIrqchip(C.KVM_IRQCHIP_PIC_MASTER), set: (vm, b) => vm.setIrqchip(C.KVM_IRQCHIP_PIC_MASTER, b) },
  ],
  [
    MainRequest_StateSet.PIC1,
    { size: C.SIZEOF_KVM_PIC_STATE, get: (vm) => vm.getIrqchip(C.KVM_IRQCHIP_PIC_SLAVE), set: (vm, b) => vm.setIrqchip(C.KVM_IRQCHIP_PIC_SLAVE, b) },
  ],
  [
    MainRequest_StateSet.IOAPIC,
    { size: C.SIZEOF_KVM_IOAPIC_STATE, get: (vm) => vm.getIrqchip(C.KVM_IRQCHIP_IOAPIC), set: (vm, b) => vm.setIrqchip(C.KVM_IRQCHIP_IOAPIC, b) },
  ],
  [MainRequest_StateSet.PIT, { size: C.SIZEOF_KVM_PIT_STATE2, get: (vm) => vm.getPit2(), set: (vm, b) => vm.setPit2(b) }],
  [MainRequest_StateSet.CLOCK, { size: C.SIZEOF_KVM_CLOCK_DATA, get: (vm) => vm.getClock(), set: (vm, b) => vm.setClock(b) }],
]);

export class PluginProcess {
  private child: ChildProcess | undefined;
  private status: PluginStatus = { state: 'running' };
  private readonly connections = new Map<number, Connection>();
  private readonly objects = new Map<number, PluginObject>();
  private readonly ranges = new ReservedRanges();
  private callHint: MainRequest_SetCallHint | null = null;
  private readonly vcpus: VcpuSet;
  private readonly killEventFd: number;
  /** One byte more than a request may have, so that a longer one shows as `bytes > REQUEST_BUFFER_SIZE`. */
  private readonly requestBuffer = Buffer.alloc(REQUEST_BUFFER_SIZE + 1);
  private readonly stderrDone: Promise<void>;
  private stderrClosed: () => void = () => {};
  private closed = false;

  constructor(
    private readonly kvm: Kvm,
    private readonly vm: Vm,
    vcpuCount: number,
    private readonly log: Log,
    private readonly pluginLog: LineSink,
    private readonly events: ProcessEvents,
    /** The tap devices of the run (owned by the caller); get_net_config offers the first. */
    private readonly taps: readonly Tap[] = [],
  ) {
    this.stderrDone = new Promise((resolve) => (this.stderrClosed = resolve));
    this.killEventFd = native.eventfd(0, C.EFD_CLOEXEC);
    try {
      this.vcpus = new VcpuSet(vcpuCount, log, events.onVcpuExit);
    } catch (e) {
      native.close(this.killEventFd);
      throw e;
    }
  }

  /** Spawns the plugin with the main connection as fd 3 (CROSVM_SOCKET=3). */
  spawn(plan: LaunchPlan): void {
    const [hostEnd, pluginEnd] = native.seqpacketPair(true);
    try {
      const child = spawn(plan.file, plan.args, {
        stdio: ['inherit', 'inherit', 'pipe', pluginEnd, ...plan.extraFds],
        env: { ...process.env, CROSVM_SOCKET: '3' },
        // Its own process group, so that anything it leaves behind can be killed with it.
        detached: true,
      });
      this.child = child;
      killOnHostExit(this);
      child.once('error', (e) => {
        this.status = { state: 'exited', code: 127 };
        this.stderrClosed();
        this.events.onPluginExit(this.status, e);
      });
      child.once('exit', (code, signal) => {
        this.status = signal ? { state: 'signaled', signal } : { state: 'exited', code: code ?? 0 };
        this.events.onPluginExit(this.status);
      });
      // Without fds left (EMFILE), node makes no stdio pipes and reports the
      // failure through 'error' only.
      if (child.stderr) forEachLine(child.stderr, (line) => this.pluginLog(line), () => this.stderrClosed());
      this.addConnection(hostEnd);
    } catch (e) {
      native.close(hostEnd);
      throw e;
    } finally {
      native.close(pluginEnd);
    }
  }

  /** Running, or how it ended. */
  tryWait(): PluginStatus {
    return this.status;
  }

  /** Resolves once the plugin's stderr has been read to its end. */
  stderrEnded(): Promise<void> {
    return this.stderrDone;
  }

  /** Asks the plugin to exit: signals the kill eventfd and stops every VCPU. A no-op once closed. */
  signalKill(): void {
    if (this.closed) return;
    native.eventfdWrite(this.killEventFd, 1);
    this.vcpus.requestShutdown();
  }

  /** Kills the plugin's whole process group (SIGKILL). */
  killPlugin(): void {
    const pid = this.child?.pid;
    if (pid === undefined) return;
    for (const target of [-pid, pid]) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }

  /** Joins the VCPU threads (bounded); returns the indexes that would not stop. */
  joinVcpus(timeoutMs: number): Promise<number[]> {
    return this.vcpus.join(timeoutMs);
  }

  /** Frees everything the process holds: connections, objects, VCPU pipes, the kill eventfd. */
  close(): void {
    this.closed = true;
    for (const fd of [...this.connections.keys()]) this.dropConnection(fd);
    for (const [id, object] of this.objects) {
      try {
        object.destroy(this.vm);
      } catch (e) {
        this.log.warn(`destroying object ${id} at shutdown: ${String(e)}`);
      }
    }
    this.objects.clear();
    this.vcpus.close();
    native.close(this.killEventFd);
    // Not read to its end when the sink held it up, or when something the
    // plugin left behind still holds the pipe: its fd goes now.
    this.child?.stderr?.destroy();
    runningPlugins.delete(this);
  }

  private addConnection(fd: number): void {
    native.fcntl(fd, C.F_SETFL, native.fcntl(fd, C.F_GETFL, 0) | C.O_NONBLOCK);
    const watcher = native.createFdWatcher(fd, () => this.serve(fd));
    this.connections.set(fd, { fd, watcher });
    watcher.start(C.POLLIN);
  }

  private dropConnection(fd: number): void {
    const connection = this.connections.get(fd);
    if (connection === undefined) return;
    connection.watcher.close();
    native.close(fd);
    this.connections.delete(fd);
  }

  /** Serves every request waiting on connection `fd`. */
  private serve(fd: number): void {
    for (;;) {
      if (!this.connections.has(fd)) return;
      let received;
      try {
        received = native.recvmsg(fd, this.requestBuffer, MAX_REQUEST_FDS);
      } catch (e) {
        this.log.warn(`connection ${fd}: receive failed (${String(e)}); dropping it`);
        this.dropConnection(fd);
        return;
      }
      if (received === null) return;
      if (received.bytes === 0 && received.fds.length === 0) {
        this.dropConnection(fd);
        return;
      }
      if (received.bytes > REQUEST_BUFFER_SIZE) {
        // Cut short, so not decodable; but when it starts with a member's
        // tag, the plugin learns what was too large (E2BIG) instead of being
        // dropped. Anything else this large is malformed.
        for (const f of received.fds) native.close(f);
        const member = leadingMember(this.requestBuffer);
        if (member !== undefined) {
          this.log.warn(`connection ${fd}: ${member} request larger than ${REQUEST_BUFFER_SIZE} bytes; answering E2BIG`);
          this.send(fd, reply(mainFailure(errno.E2BIG, member)));
          continue;
        }
        this.log.warn(`connection ${fd}: malformed request (larger than ${REQUEST_BUFFER_SIZE} bytes); dropping it`);
        this.dropConnection(fd);
        return;
      }
      let request: MainRequest;
      try {
        // Descriptors beyond MAX_REQUEST_FDS are not malformed: the kernel
        // closed the extra ones, and the request is served with those that
        // arrived (and closes them too).
        request = decodeStrict(MainRequest, messageShape('MainRequest'), this.requestBuffer.subarray(0, received.bytes));
      } catch (e) {
        for (const f of received.fds) native.close(f);
        this.log.warn(`connection ${fd}: malformed request (${e instanceof Error ? e.message : String(e)}); dropping it`);
        this.dropConnection(fd);
        return;
      }
      let answer: Reply;
      try {
        answer = this.handleRequest(request, received.fds);
      } finally {
        for (const f of received.fds) native.close(f);
      }
      this.send(fd, answer);
    }
  }

  private send(fd: number, reply: Reply): void {
    try {
      if (!sendWhole(fd, reply.response, reply.fds)) {
        const member = reply.response.message?.$case;
        this.log.warn(`connection ${fd}: the ${member ?? 'empty'} response is too large for one message; answering EMSGSIZE`);
        if (!sendWhole(fd, mainFailure(errno.EMSGSIZE, member), [])) throw new Error('even an empty response does not fit');
      }
    } catch (e) {
      this.log.warn(`connection ${fd}: sending a response failed (${String(e)}); dropping it`);
      this.dropConnection(fd);
    } finally {
      for (const f of reply.closeAfterSend) native.close(f);
    }
  }

  /** Every MainRequest of the protocol, answered in one place. */
  handleRequest(request: MainRequest, fds: readonly number[]): Reply {
    const message = request.message;
    if (message === undefined) return reply(mainFailure(errno.ENOTTY, undefined));
    try {
      switch (message.$case) {
        case 'create':
          return this.create(message.create, fds[0]);
        case 'destroy':
          this.destroy(message.destroy.id);
          return ok({ $case: 'destroy', destroy: {} });
        case 'newConnection': {
          const [hostEnd, pluginEnd] = native.seqpacketPair(true);
          this.addConnection(hostEnd);
          return ok({ $case: 'newConnection', newConnection: {} }, [pluginEnd], [pluginEnd]);
        }
        case 'getShutdownEventfd':
          return ok({ $case: 'getShutdownEventfd', getShutdownEventfd: {} }, [this.killEventFd]);
        case 'checkExtension':
          return ok({
            $case: 'checkExtension',
            checkExtension: { hasExtension: this.vm.checkExtension(message.checkExtension.extension) === 1 },
          });
        case 'getSupportedCpuid':
          return ok({ $case: 'getSupportedCpuid', getSupportedCpuid: { entries: this.kvm.supportedCpuid().map(fromKernelCpuid) } });
        case 'getEmulatedCpuid':
          return ok({ $case: 'getEmulatedCpuid', getEmulatedCpuid: { entries: this.kvm.emulatedCpuid().map(fromKernelCpuid) } });
        case 'getMsrIndexList':
          return ok({ $case: 'getMsrIndexList', getMsrIndexList: { indices: this.kvm.msrIndexList() } });
        case 'getNetConfig':
          return this.netConfig();
        case 'reserveRange': {
          const { space, start, length, asyncWrite } = message.reserveRange;
          const result = this.ranges.reserve(spaceOf(space), start, length, asyncWrite);
          if (result !== 0) throw new RequestError(result, 'reserve_range refused');
          this.publishVcpuConfig();
          return ok({ $case: 'reserveRange', reserveRange: {} });
        }
        case 'setIrq':
          this.vm.setIrqLine(message.setIrq.irqId, message.setIrq.active);
          return ok({ $case: 'setIrq', setIrq: {} });
        case 'setIrqRouting':
          this.vm.setGsiRouting(
            message.setIrqRouting.routes.map((r) => {
              const route = r.route;
              if (route === undefined) throw new RequestError(errno.EINVAL, `route for irq ${r.irqId} has no kind`);
              return route.$case === 'irqchip'
                ? { gsi: r.irqId, kind: 'irqchip' as const, irqchip: route.irqchip.irqchip, pin: route.irqchip.pin }
                : { gsi: r.irqId, kind: 'msi' as const, address: route.msi.address, data: route.msi.data };
            }),
          );
          return ok({ $case: 'setIrqRouting', setIrqRouting: {} });
        case 'getState': {
          const state = vmStateAccess(message.getState.set);
          return ok({ $case: 'getState', getState: { state: Buffer.from(state.get(this.vm)) } });
        }
        case 'setState': {
          const state = vmStateAccess(message.setState.set);
          if (message.setState.state.length !== state.size) {
            throw new RequestError(errno.EINVAL, `state is ${message.setState.state.length} bytes, not ${state.size}`);
          }
          state.set(this.vm, message.setState.state);
          return ok({ $case: 'setState', setState: {} });
        }
        case 'setIdentityMapAddr':
          this.vm.setIdentityMapAddr(BigInt(message.setIdentityMapAddr.address));
          return ok({ $case: 'setIdentityMapAddr', setIdentityMapAddr: {} });
        case 'pauseVcpus':
          this.vcpus.pause(message.pauseVcpus.cpuMask, message.pauseVcpus.user);
          return ok({ $case: 'pauseVcpus', pauseVcpus: {} });
        case 'getVcpus':
          return ok({ $case: 'getVcpus', getVcpus: {} }, this.vcpus.pluginFds());
        case 'start':
          this.start();
          return ok({ $case: 'start', start: {} });
        case 'setCallHint': {
          const hint = message.setCallHint;
          spaceOf(hint.space); // EINVAL for an unknown address space (also when clearing)
          this.callHint = hint.address === 0n ? null : hint;
          this.publishVcpuConfig();
          return ok({ $case: 'setCallHint', setCallHint: {} });
        }
        case 'dirtyLog': {
          const object = this.objects.get(message.dirtyLog.id);
          if (!(object instanceof MemoryObject) || !object.dirtyLog) {
            throw new RequestError(errno.ENOENT, `no dirty-logged memory with id ${message.dirtyLog.id}`);
          }
          return ok({ $case: 'dirtyLog', dirtyLog: { bitmap: Buffer.from(object.dirtyBitmap(this.vm)) } });
        }
      }
    } catch (e) {
      if (e instanceof RequestError || isErrnoError(e)) return reply(mainFailure(e.errno, message.$case));
      this.log.error(`request ${message.$case} failed unexpectedly: ${e instanceof Error ? e.stack : String(e)}`);
      return reply(mainFailure(errno.EINVAL, message.$case));
    }
  }

  /** The first tap's descriptor and configuration, read from the device now; ENODATA without a tap. */
  private netConfig(): Reply {
    const tap = this.taps[0];
    if (tap === undefined) throw new RequestError(errno.ENODATA, 'plugvisor has no tap device to offer');
    let config: TapConfig;
    try {
      config = tap.config();
    } catch (e) {
      // The plugin gets the errno; a person gets to know why.
      this.log.warn(`get_net_config: reading the configuration of ${tap.origin} failed: ${e instanceof Error ? e.message : String(e)}`);
      throw e;
    }
    const getNetConfig = { hostMacAddress: Buffer.from(config.mac), hostIpv4Address: config.ipv4, netmask: config.netmask };
    return ok({ $case: 'getNetConfig', getNetConfig }, [tap.fd]);
  }

  private create(create: MainRequest_Create, fd: number | undefined): Reply {
    const { id, kind } = create;
    if (this.objects.has(id)) throw new RequestError(errno.EEXIST, `object id ${id} is taken`);
    if (kind === undefined) throw new RequestError(errno.EINVAL, 'create names no kind of object');
    let object: PluginObject;
    switch (kind.$case) {
      case 'ioEvent': {
        const { space, address, length, datamatch } = kind.ioEvent;
        object = IoEventObject.create(this.vm, spaceOf(space) === IOPORT, address, length, datamatch);
        break;
      }
      case 'memory': {
        const memory = kind.memory;
        for (const other of this.objects.values()) {
          if (other instanceof MemoryObject && other.overlaps(memory.start, memory.length)) {
            throw new RequestError(errno.ENOSPC, 'memory overlaps an existing slot');
          }
        }
        object = MemoryObject.create(this.vm, this.freeSlot(), fd, memory);
        break;
      }
      case 'irqEvent':
        object = IrqEventObject.create(this.vm, kind.irqEvent.irqId);
        break;
    }
    this.objects.set(id, object);
    return ok({ $case: 'create', create: {} }, object.fds);
  }

  private destroy(id: number): void {
    const object = this.objects.get(id);
    if (object === undefined) throw new RequestError(errno.ENOENT, `no object with id ${id}`);
    this.objects.delete(id);
    object.destroy(this.vm);
  }

  private freeSlot(): number {
    const used = new Set<number>();
    for (const object of this.objects.values()) if (object instanceof MemoryObject) used.add(object.slot);
    let slot = 0;
    while (used.has(slot)) slot++;
    return slot;
  }

  private start(): void {
    if (this.vcpus.started) throw new RequestError(errno.EINVAL, 'the VM was already started');
    this.vcpus.start(this.vm, this.kvm.vcpuMmapSize());
    this.events.onStarted();
  }

  /** Hands the VCPU threads the reserved ranges and call hint as they are now. */
  private publishVcpuConfig(): void {
    this.vcpus.publish(encodeVcpuConfig(this.ranges, this.callHint));
  }
}

/** Sends `response` as one message; false (nothing sent) when it is too large for one. */
function sendWhole(fd: number, response: MainResponse, fds: readonly number[]): boolean {
  const bytes = encodeMessage(MainResponse, response);
  if (bytes.length > MAX_RESPONSE_BYTES || fds.length > MAX_RESPONSE_FDS) return false;
  let sent: number;
  try {
    sent = native.sendmsg(fd, bytes, bytes.length, fds);
  } catch (e) {
    if (isErrnoError(e) && e.errno === errno.EMSGSIZE) return false;
    throw e;
  }
  if (sent < 0) throw new Error('socket buffer full');
  return true;
}

/** The MainRequest member whose tag starts `bytes`, if it starts with one. */
function leadingMember(bytes: Uint8Array): MainRequestCase | undefined {
  // The descriptor's field names are the generated oneof's case names (both lowerCamelCase).
  return leadingMessageField(messageShape('MainRequest'), bytes)?.localName as MainRequestCase | undefined;
}

function ok(message: MainResponse['message'], fds: readonly number[] = [], closeAfterSend: readonly number[] = []): Reply {
  return { response: { errnoValue: 0, message }, fds, closeAfterSend };
}

function reply(response: MainResponse): Reply {
  return { response, fds: [], closeAfterSend: [] };
}

function spaceOf(space: AddressSpace): typeof IOPORT | typeof MMIO {
  if (space === AddressSpace.IOPORT) return IOPORT;
  if (space === AddressSpace.MMIO) return MMIO;
  throw new RequestError(errno.EINVAL, `unknown address space ${space}`);
}

/** A kernel CPUID entry as the protocol carries it. */
function fromKernelCpuid(entry: CpuidEntry2): CpuidEntry {
  return {
    function: entry.function,
    hasIndex: (entry.flags & C.KVM_CPUID_FLAG_SIGNIFCANT_INDEX) !== 0,
    index: entry.index,
    eax: entry.eax,
    ebx: entry.ebx,
    ecx: entry.ecx,
    edx: entry.edx,
  };
}

function vmStateAccess(set: number): VmStateAccess {
  const access = VM_STATE_SETS.get(set);
  if (access === undefined) throw new RequestError(errno.EINVAL, `unknown VM state set ${set}`);
  return access;
}

/**
 * Plugins of this process not yet torn down. If the host process exits
 * without tearing their VMs down (an uncaught exception, in plugvisor or in an
 * application that embeds it), their process groups are killed on the way
 * out: a jailed plugin dies with its parent anyway, an unsandboxed one would
 * live on.
 */
const runningPlugins = new Set<PluginProcess>();
let exitHookInstalled = false;

function killOnHostExit(plugin: PluginProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const running of runningPlugins) if (running.tryWait().state === 'running') running.killPlugin();
    });
  }
  runningPlugins.add(plugin);
}
