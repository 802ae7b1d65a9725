/**
 * The plugin process, host side: spawning it, its connections, the objects it
 * creates and every MainRequest it can send (all handled in
 * {@link PluginProcess.handleRequest}; main-connection.ts carries them). The
 * main loop (run.ts) drives it.
 */
import { C, native, isErrnoError } from '../native/index.js';
import type { CpuidEntry2, Kvm, VmFd } from '../kvm/index.js';
import {
  AddressSpace,
  type CpuidEntry,
  type MainRequest,
  type MainResponse,
  type MainRequest_Create,
  type MainRequest_SetCallHint,
} from '../protocol/gen/plugin.js';
import { mainFailure } from '../protocol/responses.js';
import { errno, ErrnoError } from '../errno.js';
import { killOnHostExit, forgetAtHostExit } from './host-exit.js';
import { forEachLine, type LineSink } from './lines.js';
import type { Log } from './log.js';
import { MainConnection, reply, type Reply } from './main-connection.js';
import { IoEventObject, IrqEventObject, MemoryObject, type PluginObject } from './objects.js';
import { ReservedRanges, type KnownAddressSpace } from './ranges.js';
import { encodeVcpuConfig } from './vcpu-config.js';
import { vmStateAccess } from './vm-state.js';
import { VcpuSet, type VcpuExitHandler } from './vcpus.js';
import { openPipe } from './pipes.js';
import { Child, type ChildStatus } from '../child.js';
import type { Tap, TapConfig } from './net.js';

/** How to start the plugin (planned by the sandbox, or a plain command line without it). */
export interface LaunchPlan {
  file: string;
  args: string[];
  /** Descriptors the plugin inherits at 4, 5, ... (3 is the main connection). */
  extraFds: number[];
  /** Closes the plan's fds in this process (idempotent). Safe to call right after the spawn. */
  dispose(): void;
}

/** How the plugin process ended, as `tryWait` reports it (`running`: still running, or never started). */
export type PluginStatus = ChildStatus;

export interface ProcessEvents {
  /** The plugin called `start` and the VCPU threads are running. */
  onStarted(): void;
  onVcpuExit: VcpuExitHandler;
  /** The plugin process ended. */
  onPluginExit(status: PluginStatus): void;
}

export class PluginProcess {
  private child: Child | undefined;
  private readonly connections = new Set<MainConnection>();
  private readonly objects = new Map<number, PluginObject>();
  private readonly ranges = new ReservedRanges();
  private callHint: MainRequest_SetCallHint | null = null;
  private readonly vcpus: VcpuSet;
  private readonly killEventFd: number;
  private readonly stderrDone: Promise<void>;
  private stderrClosed: () => void = () => {};
  /** Stops reading the plugin's stderr (forEachLine). */
  private stopStderr: () => void = () => {};
  private closed = false;

  constructor(
    private readonly kvm: Kvm,
    private readonly vm: VmFd,
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
    let stderrRead = -1;
    let stderrWrite = -1;
    try {
      // The plugin's stderr: a pipe whose read end only the host makes
      // non-blocking. As large as the socket node's own stdio pipes are (or
      // larger), so that a plugin that writes a burst and exits at once
      // (node queues what a full pipe does not take) loses none of it.
      [stderrRead, stderrWrite] = openPipe(this.log, "the plugin's stderr pipe");
      native.fcntl(stderrRead, C.F_SETFL, C.O_NONBLOCK);
      this.child = Child.spawn(
        {
          file: plan.file,
          args: plan.args,
          env: { ...process.env, CROSVM_SOCKET: '3' },
          fds: ['inherit', 'inherit', stderrWrite, pluginEnd, ...plan.extraFds],
          newSession: true,
        },
        (status) => this.events.onPluginExit(status),
      );
      killOnHostExit(this);
      this.stopStderr = forEachLine(
        stderrRead,
        (line) => this.pluginLog(line),
        () => this.stderrClosed(),
      );
      stderrRead = -1; // forEachLine's now
      this.addConnection(hostEnd);
    } catch (e) {
      native.close(hostEnd);
      if (stderrRead >= 0) native.close(stderrRead);
      throw e;
    } finally {
      native.close(pluginEnd);
      if (stderrWrite >= 0) native.close(stderrWrite);
    }
  }

  /** Running, or how it ended. */
  tryWait(): PluginStatus {
    return this.child?.status ?? { state: 'running' };
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
    this.child?.killWithGroup();
  }

  /** Joins the VCPU threads (bounded); returns the indexes that would not stop. */
  joinVcpus(timeoutMs: number): Promise<number[]> {
    return this.vcpus.join(timeoutMs);
  }

  /** Frees everything the process holds: connections, objects, VCPU pipes, the kill eventfd. */
  close(): void {
    this.closed = true;
    for (const connection of [...this.connections]) connection.close();
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
    this.stopStderr();
    forgetAtHostExit(this);
  }

  /** Serves requests on `fd` (the host end of a main connection) until either side closes it. */
  private addConnection(fd: number): void {
    const handle = (request: MainRequest, fds: readonly number[]): Reply => this.handleRequest(request, fds);
    this.connections.add(new MainConnection(fd, handle, this.log, (closed) => this.connections.delete(closed)));
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
          return ok({
            $case: 'getSupportedCpuid',
            getSupportedCpuid: { entries: this.kvm.supportedCpuid().map(fromKernelCpuid) },
          });
        case 'getEmulatedCpuid':
          return ok({ $case: 'getEmulatedCpuid', getEmulatedCpuid: { entries: this.kvm.emulatedCpuid().map(fromKernelCpuid) } });
        case 'getMsrIndexList':
          return ok({ $case: 'getMsrIndexList', getMsrIndexList: { indices: this.kvm.msrIndexList() } });
        case 'getNetConfig':
          return this.netConfig();
        case 'reserveRange': {
          const { space, start, length, asyncWrite } = message.reserveRange;
          const result = this.ranges.reserve(spaceOf(space), start, length, asyncWrite);
          if (result !== 0) throw new ErrnoError(result, 'reserve_range refused');
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
              if (route === undefined) throw new ErrnoError(errno.EINVAL, `route for irq ${r.irqId} has no kind`);
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
            throw new ErrnoError(errno.EINVAL, `state is ${message.setState.state.length} bytes, not ${state.size}`);
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
            throw new ErrnoError(errno.ENOENT, `no dirty-logged memory with id ${message.dirtyLog.id}`);
          }
          return ok({ $case: 'dirtyLog', dirtyLog: { bitmap: Buffer.from(object.dirtyBitmap(this.vm)) } });
        }
      }
    } catch (e) {
      if (isErrnoError(e)) return reply(mainFailure(e.errno, message.$case));
      this.log.error(`request ${message.$case} failed unexpectedly: ${e instanceof Error ? e.stack : String(e)}`);
      return reply(mainFailure(errno.EINVAL, message.$case));
    }
  }

  /** The first tap's descriptor and configuration, read from the device now; ENODATA without a tap. */
  private netConfig(): Reply {
    const tap = this.taps[0];
    if (tap === undefined) throw new ErrnoError(errno.ENODATA, 'plugvisor has no tap device to offer');
    let config: TapConfig;
    try {
      config = tap.config();
    } catch (e) {
      // The plugin gets the errno; a person gets to know why.
      this.log.warn(
        `get_net_config: reading the configuration of ${tap.origin} failed: ${e instanceof Error ? e.message : String(e)}`,
      );
      throw e;
    }
    const getNetConfig = { hostMacAddress: Buffer.from(config.mac), hostIpv4Address: config.ipv4, netmask: config.netmask };
    return ok({ $case: 'getNetConfig', getNetConfig }, [tap.fd]);
  }

  private create(create: MainRequest_Create, fd: number | undefined): Reply {
    const { id, kind } = create;
    if (this.objects.has(id)) throw new ErrnoError(errno.EEXIST, `object id ${id} is taken`);
    if (kind === undefined) throw new ErrnoError(errno.EINVAL, 'create names no kind of object');
    let object: PluginObject;
    switch (kind.$case) {
      case 'ioEvent': {
        const { space, address, length, datamatch } = kind.ioEvent;
        object = IoEventObject.create(this.vm, spaceOf(space) === AddressSpace.IOPORT, address, length, datamatch);
        break;
      }
      case 'memory': {
        const memory = kind.memory;
        for (const other of this.objects.values()) {
          if (other instanceof MemoryObject && other.overlaps(memory.start, memory.length)) {
            throw new ErrnoError(errno.ENOSPC, 'memory overlaps an existing slot');
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
    if (object === undefined) throw new ErrnoError(errno.ENOENT, `no object with id ${id}`);
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
    if (this.vcpus.started) throw new ErrnoError(errno.EINVAL, 'the VM was already started');
    this.vcpus.start(this.vm, this.kvm.vcpuMmapSize());
    this.events.onStarted();
  }

  /** Hands the VCPU threads the reserved ranges and call hint as they are now. */
  private publishVcpuConfig(): void {
    this.vcpus.publish(encodeVcpuConfig(this.ranges, this.callHint));
  }
}

/** A successful reply: `message`, with `fds` sent along (and `closeAfterSend` closed once sent). */
function ok(message: MainResponse['message'], fds: readonly number[] = [], closeAfterSend: readonly number[] = []): Reply {
  return { response: { errnoValue: 0, message }, fds, closeAfterSend };
}

function spaceOf(space: AddressSpace): KnownAddressSpace {
  if (space === AddressSpace.IOPORT || space === AddressSpace.MMIO) return space;
  throw new ErrnoError(errno.EINVAL, `unknown address space ${space}`);
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
