/**
 * Network addresses as get_net_config carries them: an IPv4 address or
 * netmask is a fixed32 with the first octet most significant (a.b.c.d =
 * a << 24 | b << 16 | c << 8 | d), a MAC address six bytes. The parsers take
 * the CLI's (and RunOptions.net's) text and throw messages that say what to
 * change; nothing here needs the native addon, so the CLI can check its
 * arguments before loading it.
 */

/** "a.b.c.d" of the wire's number. */
export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff].join('.');
}

/** "aa:bb:cc:dd:ee:ff". */
export function formatMac(mac: Uint8Array | readonly number[]): string {
  return [...mac].map((byte) => byte.toString(16).padStart(2, '0')).join(':');
}

/** a.b.c.d as a number (a most significant); throws a message naming `what`. */
function parseIpv4(text: string, what: string): number {
  const m = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/.exec(text);
  const octets = m?.slice(1).map(Number);
  if (octets === undefined || octets.some((o) => o > 255)) {
    throw new Error(`${what} '${text}' is not an IPv4 address (four numbers from 0 to 255, as in 192.168.10.1)`);
  }
  return octets.reduce((value, octet) => value * 256 + octet, 0);
}

/** An address a tap can have: not 0.0.0.0, the broadcast address or a multicast group. */
export function parseHostIp(text: string): number {
  const ip = parseIpv4(text, '--host-ip');
  if (ip === 0 || ip === 0xffffffff) throw new Error(`--host-ip '${text}' cannot be an interface's address`);
  if (ip >>> 28 === 0xe) throw new Error(`--host-ip '${text}' is a multicast address, not an interface's address`);
  return ip;
}

/** A netmask: ones, then zeros (255.255.255.252, not 255.0.255.0). */
export function parseNetmask(text: string): number {
  const mask = parseIpv4(text, '--netmask');
  const hostBits = ~mask >>> 0;
  if ((hostBits & (hostBits + 1)) !== 0) {
    throw new Error(`--netmask '${text}' is not a netmask: its one bits must come first (as in 255.255.255.0)`);
  }
  return mask;
}

/** aa:bb:cc:dd:ee:ff, a unicast address. */
export function parseMac(text: string): Uint8Array {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(text)) {
    throw new Error(`--mac '${text}' is not a MAC address (six hex bytes separated by ':', as in de:21:e8:47:6b:6a)`);
  }
  const mac = Uint8Array.from(text.split(':').map((byte) => parseInt(byte, 16)));
  if ((mac[0] & 1) !== 0)
    throw new Error(`--mac '${text}' is a multicast address (its first byte is odd): a device needs a unicast one`);
  if (mac.every((byte) => byte === 0)) throw new Error(`--mac '${text}' is the all-zero address`);
  return mac;
}
