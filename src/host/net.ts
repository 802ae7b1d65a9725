/**
 * Tap networking, as crosvm offered it to plugins. The host makes a tap
 * device (`--host-ip`, `--netmask`, `--mac`), opens a persistent one by name
 * (`--tap-name`) or takes one it inherited (`--tap-fd`); `get_net_config`
 * then hands the plugin the first tap's descriptor with the device's MAC,
 * IPv4 address and netmask. The plugin is the guest's network card: it reads
 * and writes whole Ethernet frames on that descriptor.
 *
 * The system calls are the addon's (ifreqIoctl); what to create, what to
 * accept and what to tell a person is decided here.
 */
import { C, native, isErrnoError } from '../native/index.js';
import { errno } from '../errno.js';
import { formatIpv4, formatMac, parseHostIp, parseMac, parseNetmask } from '../protocol/addresses.js';
import type { Log } from './log.js';

/** The tap devices of a run (`RunOptions.net`; the CLI's --host-ip, --netmask, --mac, --tap-name, --tap-fd). */
export interface NetOptions {
  /** The IPv4 address of a tap the host creates (crosvm's --host_ip); needs `netmask`. */
  hostIp?: string;
  /** The netmask of the tap the host creates, e.g. 255.255.255.252. */
  netmask?: string;
  /** The MAC address given to the first tap (the one the plugin is offered). */
  mac?: string;
  /** Existing persistent taps to attach to, by name. */
  tapNames?: string[];
  /** Descriptors of tap devices: the run uses copies of them, the caller keeps its own. */
  tapFds?: number[];
}

/** What `get_net_config` reports of a tap: numbers as the wire has them. */
export interface TapConfig {
  /** The device's MAC address (6 bytes). */
  mac: Uint8Array;
  /** IPv4 address, the first octet most significant (a.b.c.d = a << 24 | ...). */
  ipv4: number;
  netmask: number;
}

/** The device `--host-ip` opens; crosvm used the same. */
const TUN_DEVICE = '/dev/net/tun';
/** The name of a tap the host creates; the kernel replaces %d by the first free number. */
const CREATED_TAP_NAME = 'pvtap%d';

const MAC_BYTES = 6;

interface NetPlan {
  create: { ip: number; netmask: number } | undefined;
  mac: Uint8Array | undefined;
  tapNames: string[];
  tapFds: number[];
}

/** The options, parsed and checked together. Throws an Error that says what to change. */
export function planNetwork(options: NetOptions): NetPlan {
  const { hostIp, netmask } = options;
  if ((hostIp === undefined) !== (netmask === undefined)) {
    throw new Error(
      hostIp === undefined
        ? '--netmask needs --host-ip: together they create a tap device'
        : '--host-ip needs --netmask: together they create a tap device',
    );
  }
  const create =
    hostIp !== undefined && netmask !== undefined ? { ip: parseHostIp(hostIp), netmask: parseNetmask(netmask) } : undefined;
  const tapNames = options.tapNames ?? [];
  for (const name of tapNames) {
    if (name === '' || name.includes('/') || /\s/.test(name) || Buffer.byteLength(name) >= C.IFNAMSIZ) {
      throw new Error(`--tap-name '${name}' is not an interface name (1 to ${C.IFNAMSIZ - 1} bytes, no '/' or spaces)`);
    }
  }
  const tapFds = options.tapFds ?? [];
  for (const fd of tapFds) {
    if (!Number.isSafeInteger(fd) || fd < 0 || fd > 0x7fffffff)
      throw new Error(`--tap-fd '${fd}' is not a file descriptor number`);
  }
  const mac = options.mac === undefined ? undefined : parseMac(options.mac);
  if (mac !== undefined && create === undefined && tapNames.length === 0 && tapFds.length === 0) {
    throw new Error('--mac needs a tap device to give the address to: add --host-ip and --netmask, --tap-name or --tap-fd');
  }
  return { create, mac, tapNames, tapFds };
}

// ---- struct ifreq --------------------------------------------------------

/** The ifr_ifru union of a struct ifreq, and a little-endian (x86-64) view of it. */
function ifru(): { bytes: Uint8Array; view: DataView } {
  const bytes = new Uint8Array(C.SIZEOF_IFREQ_IFRU);
  return { bytes, view: new DataView(bytes.buffer) };
}

function setIff(fd: number, name: string, flags: number): string {
  const data = ifru();
  data.view.setUint16(C.IFREQ_FLAGS, flags, true);
  return native.ifreqIoctl(fd, C.TUNSETIFF, name, data.bytes);
}

/** TUNGETIFF: the tap's name and its IFF_* flags. */
function tunInterface(fd: number): { name: string; flags: number } {
  const data = ifru();
  const name = native.ifreqIoctl(fd, C.TUNGETIFF, '', data.bytes);
  return { name, flags: data.view.getUint16(C.IFREQ_FLAGS, true) };
}

/** SIOCGIFHWADDR on the tap's own descriptor (so in its own network namespace). */
function getMac(tapFd: number, name: string): Uint8Array {
  const data = ifru();
  native.ifreqIoctl(tapFd, C.SIOCGIFHWADDR, name, data.bytes);
  const at = C.IFREQ_HWADDR + C.SOCKADDR_DATA;
  return data.bytes.slice(at, at + MAC_BYTES);
}

function setMac(tapFd: number, name: string, mac: Uint8Array): void {
  const data = ifru();
  data.view.setUint16(C.IFREQ_HWADDR + C.SOCKADDR_FAMILY, C.ARPHRD_ETHER, true);
  data.bytes.set(mac, C.IFREQ_HWADDR + C.SOCKADDR_DATA);
  native.ifreqIoctl(tapFd, C.SIOCSIFHWADDR, name, data.bytes);
}

/** The ioctls of an interface's IPv4 address and netmask, and where their struct sockaddr_in is. */
const ADDRESS = { get: C.SIOCGIFADDR, set: C.SIOCSIFADDR, at: C.IFREQ_ADDR };
const NETMASK = { get: C.SIOCGIFNETMASK, set: C.SIOCSIFNETMASK, at: C.IFREQ_NETMASK };
type Ipv4Field = typeof ADDRESS;

/** The address or netmask, from a struct sockaddr_in (network byte order). */
function getIpv4(socket: number, field: Ipv4Field, name: string): number {
  const data = ifru();
  native.ifreqIoctl(socket, field.get, name, data.bytes);
  return data.view.getUint32(field.at + C.SOCKADDR_IN_ADDR, false);
}

function setIpv4(socket: number, field: Ipv4Field, name: string, value: number): void {
  const data = ifru();
  data.view.setUint16(field.at + C.SOCKADDR_FAMILY, C.AF_INET, true);
  data.view.setUint32(field.at + C.SOCKADDR_IN_ADDR, value, false);
  native.ifreqIoctl(socket, field.set, name, data.bytes);
}

function bringUp(socket: number, name: string): void {
  const data = ifru();
  native.ifreqIoctl(socket, C.SIOCGIFFLAGS, name, data.bytes);
  const flags = data.view.getUint16(C.IFREQ_FLAGS, true);
  data.view.setUint16(C.IFREQ_FLAGS, flags | C.IFF_UP, true);
  native.ifreqIoctl(socket, C.SIOCSIFFLAGS, name, data.bytes);
}

/** Whether an interface of this name exists in this process's network namespace. */
function interfaceExists(socket: number, name: string): boolean {
  try {
    native.ifreqIoctl(socket, C.SIOCGIFINDEX, name, ifru().bytes);
    return true;
  } catch (e) {
    if (isErrnoError(e) && e.errno === errno.ENODEV) return false;
    throw e;
  }
}

/** An AF_INET socket for interface ioctls, closed after `use`. */
function withInetSocket<T>(use: (socket: number) => T): T {
  const socket = native.socket(C.AF_INET, C.SOCK_DGRAM | C.SOCK_CLOEXEC, 0);
  try {
    return use(socket);
  } finally {
    native.close(socket);
  }
}

// ---- taps ----------------------------------------------------------------

/** One tap device the host holds: its descriptor is what the plugin gets (as a copy). */
export class Tap {
  constructor(
    readonly fd: number,
    /** How the tap was given, for messages: "--tap-name vm0", "the created tap". */
    readonly origin: string,
  ) {}

  /** The device's current name (TUNGETIFF: it follows a rename). */
  name(): string {
    return tunInterface(this.fd).name;
  }

  /**
   * The device's MAC, IPv4 address and netmask, read from the kernel at each
   * call, as crosvm did. Throws the ErrnoError of the ioctl that failed (e.g.
   * EADDRNOTAVAIL for a tap without an IPv4 address).
   */
  config(): TapConfig {
    const name = this.name();
    const mac = getMac(this.fd, name);
    return withInetSocket((socket) => ({
      mac,
      ipv4: getIpv4(socket, ADDRESS, name),
      netmask: getIpv4(socket, NETMASK, name),
    }));
  }

  close(): void {
    native.close(this.fd);
  }
}

/** `tap` once `prepare` succeeded on it; closed if it throws. */
function preparedTap(tap: Tap, prepare: () => void): Tap {
  try {
    prepare();
    return tap;
  } catch (e) {
    tap.close();
    throw e;
  }
}

function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function errnoOf(e: unknown): number | undefined {
  return isErrnoError(e) ? e.errno : undefined;
}

function openTunDevice(what: string): number {
  try {
    // Non-blocking, as crosvm opened its taps: plugins poll the descriptor.
    return native.open(TUN_DEVICE, C.O_RDWR | C.O_NONBLOCK | C.O_CLOEXEC);
  } catch (e) {
    if (errnoOf(e) === errno.ENOENT) {
      throw new Error(
        `${what}: ${TUN_DEVICE} does not exist (the tun driver is not loaded, try \`modprobe tun\`, or this container has no such device)`,
      );
    }
    if (errnoOf(e) === errno.EACCES || errnoOf(e) === errno.EPERM) {
      throw new Error(`${what}: no permission to open ${TUN_DEVICE} (${reason(e)})`);
    }
    throw new Error(`${what}: ${reason(e)}`);
  }
}

const NEEDS_NET_ADMIN =
  'needs CAP_NET_ADMIN: run plugvisor as root, or make a persistent tap that your user owns ' +
  '(`ip tuntap add mode tap user $USER name NAME`, then set its address) and pass --tap-name NAME';

/** A new tap with the given address and netmask, brought up after `mac` (if any) is set. */
function createTap(ip: number, netmask: number, mac: Uint8Array | undefined, log: Log): Tap {
  const what = 'cannot create a tap device';
  const fd = openTunDevice(what);
  return preparedTap(new Tap(fd, 'the tap created for --host-ip'), () => {
    let name: string;
    try {
      name = setIff(fd, CREATED_TAP_NAME, C.IFF_TAP | C.IFF_NO_PI);
    } catch (e) {
      if (errnoOf(e) === errno.EPERM) throw new Error(`${what}: creating one ${NEEDS_NET_ADMIN}`);
      throw new Error(`${what}: ${reason(e)}`);
    }
    withInetSocket((socket) => {
      const step = (doing: string, action: () => void): void => {
        try {
          action();
        } catch (e) {
          const why = errnoOf(e) === errno.EPERM ? NEEDS_NET_ADMIN : reason(e);
          throw new Error(`${what}: ${doing} of ${name}: ${why}`);
        }
      };
      step(`setting the address ${formatIpv4(ip)}`, () => setIpv4(socket, ADDRESS, name, ip));
      step(`setting the netmask ${formatIpv4(netmask)}`, () => setIpv4(socket, NETMASK, name, netmask));
      if (mac !== undefined) step(`setting the MAC address ${formatMac(mac)}`, () => setMac(fd, name, mac));
      step('bringing up', () => bringUp(socket, name));
    });
    log.info(`created tap ${name}: ${formatIpv4(ip)} netmask ${formatIpv4(netmask)}, MAC ${formatMac(getMac(fd, name))}`);
  });
}

/** Attaches to the existing persistent tap `name` in this network namespace. */
function openNamedTap(name: string): Tap {
  const what = `--tap-name ${name}`;
  if (!withInetSocket((socket) => interfaceExists(socket, name))) {
    throw new Error(
      `${what}: there is no network interface named ${name} here ` +
        `(make a persistent tap with \`ip tuntap add mode tap name ${name}\`)`,
    );
  }
  const fd = openTunDevice(what);
  return preparedTap(new Tap(fd, what), () => {
    try {
      setIff(fd, name, C.IFF_TAP | C.IFF_NO_PI);
    } catch (e) {
      const code = errnoOf(e);
      if (code === errno.EINVAL) throw new Error(`${what}: ${name} is not a tap device`);
      if (code === errno.EPERM) {
        throw new Error(
          `${what}: not allowed to attach to ${name}: its owner or group is not yours (or plugvisor needs CAP_NET_ADMIN)`,
        );
      }
      if (code === errno.EBUSY) throw new Error(`${what}: ${name} is in use by another process`);
      throw new Error(`${what}: ${reason(e)}`);
    }
    // The interface vanished between the check and TUNSETIFF, which then made a new one.
    if ((tunInterface(fd).flags & C.IFF_PERSIST) === 0) throw new Error(`${what}: ${name} is not a persistent tap device`);
  });
}

/** A copy of an inherited descriptor, once it is known to be a tap without a packet-information header. */
function adoptTapFd(fd: number): Tap {
  const what = `--tap-fd ${fd}`;
  let copy: number;
  try {
    copy = native.fcntl(fd, C.F_DUPFD_CLOEXEC, 0);
  } catch (e) {
    if (errnoOf(e) === errno.EBADF) throw new Error(`${what}: descriptor ${fd} is not open in plugvisor`);
    throw new Error(`${what}: ${reason(e)}`);
  }
  return preparedTap(new Tap(copy, what), () => {
    let flags: number;
    try {
      flags = tunInterface(copy).flags;
    } catch (e) {
      const detail = errnoOf(e) === C.EBADFD ? `${TUN_DEVICE} without a device attached` : `not a tap device (${reason(e)})`;
      throw new Error(`${what}: descriptor ${fd} is ${detail}`);
    }
    if ((flags & C.IFF_TAP) === 0)
      throw new Error(`${what}: descriptor ${fd} is a TUN (IP-level) device, not a tap (Ethernet-level)`);
    if ((flags & C.IFF_NO_PI) === 0) {
      throw new Error(
        `${what}: the tap was set up without IFF_NO_PI, so its frames carry a packet-information header plugins do not expect`,
      );
    }
  });
}

/**
 * The taps of a run, in crosvm's order: the created one, then those named,
 * then the inherited ones. `--mac` goes to the first. Throws an Error with a
 * one-line message; nothing is left open then.
 */
export function openTaps(options: NetOptions | undefined, log: Log): Tap[] {
  if (options === undefined) return [];
  const plan = planNetwork(options);
  const taps: Tap[] = [];
  try {
    if (plan.create !== undefined) taps.push(createTap(plan.create.ip, plan.create.netmask, plan.mac, log));
    for (const name of plan.tapNames) taps.push(openNamedTap(name));
    for (const fd of plan.tapFds) taps.push(adoptTapFd(fd));
    const first = taps[0];
    if (plan.mac !== undefined && plan.create === undefined && first !== undefined) {
      const name = first.name();
      try {
        setMac(first.fd, name, plan.mac);
      } catch (e) {
        throw new Error(`${first.origin}: cannot set the MAC address ${formatMac(plan.mac)} of ${name}: ${reason(e)}`);
      }
    }
    if (taps.length > 1) {
      log.warn(
        `only the first tap device (${taps[0].origin}) reaches the plugin: get_net_config offers one; ` +
          `${taps
            .slice(1)
            .map((t) => t.origin)
            .join(', ')} stay unused`,
      );
    }
    return taps;
  } catch (e) {
    for (const tap of taps) tap.close();
    throw e;
  }
}
