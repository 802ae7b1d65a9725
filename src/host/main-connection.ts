/**
 * A main connection, host side: the seqpacket socket on which the plugin
 * sends MainRequests, one a message, and reads one MainResponse for each.
 * This module is the transport: receiving, the strict decode (a malformed
 * request drops the connection), E2BIG for a request too large for the
 * buffer, sending (EMSGSIZE for a response too large for one message), and
 * how many requests are served at a time. What a request does is decided by
 * the handler it is given ({@link PluginProcess.handleRequest}).
 */
import { C, native, isErrnoError, type FdWatcher } from '../native/index.js';
import { MainRequest, MainResponse } from '../protocol/gen/plugin.js';
import { mainFailure, type MainRequestCase } from '../protocol/responses.js';
import { encodeMessage } from '../protocol/framing.js';
import { decodeStrict, leadingMessageField, messageShape } from '../protocol/strict.js';
import { errno } from '../errno.js';
import type { Log } from './log.js';

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
/**
 * How many requests one connection gets served before the main thread goes
 * back to the event loop. The fd watcher is level-triggered, so a connection
 * with more waiting is served again on the next turn, after every other
 * ready connection has had as many: a plugin that floods one connection
 * delays another's request by at most this many requests of each connection
 * (issue 16, item 4).
 */
export const REQUESTS_PER_TURN = 4;

/**
 * The buffer every main connection receives into, one byte longer than a
 * request may be, so that a longer one shows as `bytes > REQUEST_BUFFER_SIZE`.
 * One is enough: the main thread serves one request at a time, and a request
 * is decoded and answered before the next is received.
 */
const requestBuffer = Buffer.alloc(REQUEST_BUFFER_SIZE + 1);

/** The answer to a request: the response and the descriptors sent with it. */
export interface Reply {
  response: MainResponse;
  fds: readonly number[];
  /** Descriptors to close once sent (those made only to be handed out). */
  closeAfterSend: readonly number[];
}

/** Answers one well-formed request; `fds` came with it and are closed once it returns. */
export type RequestHandler = (request: MainRequest, fds: readonly number[]) => Reply;

/** A reply of `response` with no descriptors. */
export function reply(response: MainResponse): Reply {
  return { response, fds: [], closeAfterSend: [] };
}

export class MainConnection {
  private readonly watcher: FdWatcher;
  private closed = false;

  /** Serves requests on `fd` (a connected seqpacket socket, made non-blocking here) until it is closed. */
  constructor(
    readonly fd: number,
    private readonly handle: RequestHandler,
    private readonly log: Log,
    /** Called once the connection is closed, by either side. */
    private readonly onClosed: (connection: MainConnection) => void,
  ) {
    native.fcntl(fd, C.F_SETFL, native.fcntl(fd, C.F_GETFL, 0) | C.O_NONBLOCK);
    this.watcher = native.createFdWatcher(fd, () => this.serve());
    this.watcher.start(C.POLLIN);
  }

  /** Stops serving and closes the socket (idempotent). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watcher.close();
    native.close(this.fd);
    this.onClosed(this);
  }

  /** Serves up to {@link REQUESTS_PER_TURN} waiting requests. */
  private serve(): void {
    for (let served = 0; served < REQUESTS_PER_TURN && !this.closed; served++) {
      if (!this.serveOne()) return;
    }
  }

  /** Receives and answers one request; false when none is waiting or the connection was closed. */
  private serveOne(): boolean {
    let received;
    try {
      received = native.recvmsg(this.fd, requestBuffer, MAX_REQUEST_FDS);
    } catch (e) {
      return this.drop(`receive failed (${String(e)})`);
    }
    if (received === null) return false;
    if (received.bytes === 0 && received.fds.length === 0) {
      this.close();
      return false;
    }
    if (received.bytes > REQUEST_BUFFER_SIZE) {
      // Cut short, so not decodable; but when it starts with a member's
      // tag, the plugin learns what was too large (E2BIG) instead of being
      // dropped. Anything else this large is malformed.
      for (const f of received.fds) native.close(f);
      const member = leadingMember(requestBuffer);
      if (member === undefined) return this.drop(`malformed request (larger than ${REQUEST_BUFFER_SIZE} bytes)`);
      this.log.warn(`connection ${this.fd}: ${member} request larger than ${REQUEST_BUFFER_SIZE} bytes; answering E2BIG`);
      this.send(reply(mainFailure(errno.E2BIG, member)));
      return true;
    }
    let request: MainRequest;
    try {
      // Descriptors beyond MAX_REQUEST_FDS are not malformed: the kernel
      // closed the extra ones, and the request is served with those that
      // arrived (and closes them too).
      request = decodeStrict(MainRequest, messageShape('MainRequest'), requestBuffer.subarray(0, received.bytes));
    } catch (e) {
      for (const f of received.fds) native.close(f);
      return this.drop(`malformed request (${e instanceof Error ? e.message : String(e)})`);
    }
    let answer: Reply;
    try {
      answer = this.handle(request, received.fds);
    } finally {
      for (const f of received.fds) native.close(f);
    }
    this.send(answer);
    return true;
  }

  private send(answer: Reply): void {
    try {
      if (!sendWhole(this.fd, answer.response, answer.fds)) {
        const member = answer.response.message?.$case;
        this.log.warn(
          `connection ${this.fd}: the ${member ?? 'empty'} response is too large for one message; answering EMSGSIZE`,
        );
        if (!sendWhole(this.fd, mainFailure(errno.EMSGSIZE, member), [])) throw new Error('even an empty response does not fit');
      }
    } catch (e) {
      this.drop(`sending a response failed (${String(e)})`);
    } finally {
      for (const f of answer.closeAfterSend) native.close(f);
    }
  }

  /** Logs why, closes the connection, and returns false (nothing more to serve). */
  private drop(why: string): false {
    this.log.warn(`connection ${this.fd}: ${why}; dropping it`);
    this.close();
    return false;
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
