#!/usr/bin/env node
/**
 * Test plugin (unsandboxed only: the host must be its parent): how many
 * requests of a flooded connection the host serves before another
 * connection's one request. Usage: connection-fairness.js FLOOD.
 *
 * Its main connection reserves ports 0x600..0x600+FLOOD. With the host
 * stopped (SIGSTOP, so that both queues are full before it serves either),
 * connection A gets FLOOD requests, reserve_range of port 0x600+i each, and
 * then connection B one: the unreserve of the whole range. Every request of
 * A the host serves before B's is refused (EPERM: the range still holds the
 * port); every one after it succeeds. So the leading EPERMs in A's answers
 * count, exactly, the requests A got served before B. The host is then let
 * go (SIGCONT), and the plugin prints { flood: [errno...], probe: errno }
 * as one JSON line and exits 0.
 */
import { readFileSync } from 'node:fs';
import { native } from '../../src/native/index.js';
import { MainRequest, MainResponse } from '../../src/protocol/gen/plugin.js';
import { encodeMessage } from '../../src/protocol/framing.js';
import { AddressSpace, Connection } from '../../src/plugin/index.js';

const BASE = 0x600n;
const flood = Number(process.argv[2]);
if (!Number.isInteger(flood) || flood < 1) throw new Error('usage: connection-fairness.js FLOOD');

const main = Connection.connect();
main.reserveRange(AddressSpace.IOPORT, BASE, BigInt(flood));
const a = main.newConnection();
const b = main.newConnection();

const reserve = (start: bigint, length: bigint): Uint8Array =>
  encodeMessage(MainRequest, {
    message: { $case: 'reserveRange', reserveRange: { space: AddressSpace.IOPORT, start, length, asyncWrite: false } },
  });
const send = (connection: Connection, bytes: Uint8Array): void => {
  native.sendmsg(connection.fd, bytes, bytes.length, []);
};
const answer = new Uint8Array(4096);
/** The errno of the next answer on `connection` (which must be to a reserve_range). */
const errnoOfAnswer = (connection: Connection): number => {
  const got = native.recvmsg(connection.fd, answer, 4);
  if (got === null || got.bytes === 0) throw new Error(`connection ${connection.fd}: no answer`);
  const response = MainResponse.decode(answer.subarray(0, got.bytes));
  if (response.message?.$case !== 'reserveRange')
    throw new Error(`connection ${connection.fd}: answered ${response.message?.$case}`);
  return response.errnoValue;
};

/** The state letter of process `pid` (/proc/PID/stat: after the parenthesized command name). */
const processState = (pid: number): string => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];

const host = process.ppid;
process.kill(host, 'SIGSTOP');
try {
  const deadline = Date.now() + 5000;
  while (processState(host) !== 'T') {
    if (Date.now() > deadline) throw new Error(`the host (pid ${host}) did not stop`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
  }
  for (let i = 0n; i < BigInt(flood); i++) send(a, reserve(BASE + i, 1n));
  send(b, reserve(BASE, 0n));
} finally {
  process.kill(host, 'SIGCONT');
}

const probe = errnoOfAnswer(b);
const floodAnswers = Array.from({ length: flood }, () => errnoOfAnswer(a));
process.stdout.write(`${JSON.stringify({ flood: floodAnswers, probe })}\n`);
process.exit(0);
