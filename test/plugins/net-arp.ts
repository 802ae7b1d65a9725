#!/usr/bin/env node
/**
 * Test plugin: plays the guest's network card on the tap the host offers.
 * It gets the net config, checks the descriptor is a tap (TUNGETFEATURES,
 * TUNGETIFF), writes an ARP request for the host's address into it as the
 * guest would, and reads the kernel's ARP reply back. Prints one JSON line;
 * an error (e.g. ENODATA without a tap) is printed as {"error": ...}.
 */
import { Connection, PluginError } from '../../src/plugin/index.js';
import { C, native } from '../../src/native/index.js';
import { formatIpv4, formatMac } from '../../src/protocol/addresses.js';
import type { ArpReply, NetArpErrorReport, NetArpReport } from '../support/reports.js';
import { finish } from '../support/test-plugin.js';

/** The guest's MAC: locally administered, unicast. */
const GUEST_MAC = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
const ETHERTYPE_ARP = 0x0806;
const ARP_REQUEST = 1;
const ARP_REPLY = 2;
const REPLY_TIMEOUT_MS = 5000;
const RESEND_MS = 500;

/** Another address of the host's subnet for the guest: the first one that is not the host's. */
function guestIpv4(host: number, netmask: number): number {
  const network = (host & netmask) >>> 0;
  const first = network + 1;
  return first === host ? first + 1 : first;
}

/** An Ethernet frame carrying an ARP request: who has `target`? tell `sender`. */
function arpRequest(senderIp: number, targetIp: number): Uint8Array {
  const frame = new Uint8Array(42);
  const view = new DataView(frame.buffer);
  frame.fill(0xff, 0, 6); // broadcast
  frame.set(GUEST_MAC, 6);
  view.setUint16(12, ETHERTYPE_ARP);
  view.setUint16(14, 1); // Ethernet
  view.setUint16(16, 0x0800); // IPv4
  frame[18] = 6;
  frame[19] = 4;
  view.setUint16(20, ARP_REQUEST);
  frame.set(GUEST_MAC, 22);
  view.setUint32(28, senderIp);
  view.setUint32(38, targetIp); // target MAC (32..37) left zero
  return frame;
}

function parseArpReply(frame: Uint8Array): ArpReply | undefined {
  if (frame.length < 42) return undefined;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.length);
  if (view.getUint16(12) !== ETHERTYPE_ARP || view.getUint16(20) !== ARP_REPLY) return undefined;
  return {
    destinationMac: formatMac(frame.subarray(0, 6)),
    senderMac: formatMac(frame.subarray(22, 28)),
    senderIp: formatIpv4(view.getUint32(28)),
    targetMac: formatMac(frame.subarray(32, 38)),
    targetIp: formatIpv4(view.getUint32(38)),
  };
}

const conn = Connection.connect();
let config;
try {
  config = conn.getNetConfig();
} catch (e) {
  if (!(e instanceof PluginError)) throw e;
  finish<NetArpErrorReport>({ error: e.code });
}
const tap = config.tapFd;

const featureBytes = new Uint8Array(4);
native.ioctlBuffer(tap, C.TUNGETFEATURES, featureBytes);
const features = new DataView(featureBytes.buffer).getUint32(0, true);
const ifru = new Uint8Array(C.SIZEOF_IFREQ_IFRU);
const name = native.ifreqIoctl(tap, C.TUNGETIFF, '', ifru);
const flags = new DataView(ifru.buffer).getUint16(C.IFREQ_FLAGS, true);

const guestIp = guestIpv4(config.raw.hostIpv4, config.raw.netmask);
const request = arpRequest(guestIp, config.raw.hostIpv4);
const buffer = new Uint8Array(65536);
let reply: ArpReply | undefined;
let otherFrames = 0;
const deadline = Date.now() + REPLY_TIMEOUT_MS;
let nextSend = 0;
while (reply === undefined && Date.now() < deadline) {
  if (Date.now() >= nextSend) {
    if (native.write(tap, request, 0, request.length) !== request.length) throw new Error('short write to the tap');
    nextSend = Date.now() + RESEND_MS;
  }
  if ((native.poll(tap, C.POLLIN, 50) & C.POLLIN) === 0) continue;
  const n = native.read(tap, buffer, 0, buffer.length);
  if (n <= 0) continue;
  const arp = parseArpReply(buffer.subarray(0, n));
  if (arp !== undefined && arp.senderIp === config.hostIpv4 && arp.targetIp === formatIpv4(guestIp)) reply = arp;
  else otherFrames++; // IPv6 router solicitations and the like
}

const report: NetArpReport = {
  hostIpv4: config.hostIpv4,
  netmask: config.netmask,
  hostMac: config.hostMac,
  tapName: name,
  tapFeatures: { tap: (features & C.IFF_TAP) !== 0, noPi: (features & C.IFF_NO_PI) !== 0 },
  tapFlags: { tap: (flags & C.IFF_TAP) !== 0, noPi: (flags & C.IFF_NO_PI) !== 0 },
  nonBlocking: (native.fcntl(tap, C.F_GETFL, 0) & C.O_NONBLOCK) !== 0,
  guestMac: formatMac(GUEST_MAC),
  guestIpv4: formatIpv4(guestIp),
  reply: reply ?? null,
  otherFrames,
};
native.close(tap);
finish(report);
