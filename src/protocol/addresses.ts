/**
 * Network addresses as get_net_config carries them: an IPv4 address or
 * netmask is a fixed32 with the first octet most significant (a.b.c.d =
 * a << 24 | b << 16 | c << 8 | d), a MAC address six bytes.
 */

/** "a.b.c.d" of the wire's number. */
export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff].join('.');
}

/** "aa:bb:cc:dd:ee:ff". */
export function formatMac(mac: Uint8Array | readonly number[]): string {
  return [...mac].map((byte) => byte.toString(16).padStart(2, '0')).join(':');
}
