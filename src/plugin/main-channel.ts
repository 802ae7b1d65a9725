/**
 * The transport under a {@link Connection}: one request and its answer on a
 * main connection's AF_UNIX SOCK_SEQPACKET socket (one MainRequest per
 * message, one MainResponse back, descriptors as SCM_RIGHTS), synchronous.
 */
import { native } from '../native/index.js';
import { errno as Errno } from '../errno.js';
import { encodeMessage } from '../protocol/framing.js';
import { MainRequest, MainResponse } from '../protocol/gen/plugin.js';
import { answerBody, type OneofBody } from './answers.js';
// eslint-disable-next-line @typescript-eslint/no-unused-vars -- named by {@link} in the docs
import type { Connection } from './connection.js';
import { PluginError, snakeCase, transportError } from './errors.js';

/** Responses can be large (a dirty bitmap); the protocol says 256 KiB. */
const RECEIVE_BUFFER_SIZE = 0x40000;
/**
 * Descriptors accepted per response: the kernel's SCM_MAX_FD, the most one
 * message can carry (get_vcpus sends two per VCPU, 128 for 64 VCPUs).
 */
const MAX_RECEIVED_FDS = 253;

/** A request member: `{ $case: 'reserveRange', reserveRange: {...} }`. */
export type RequestMessage = NonNullable<MainRequest['message']>;
type ResponseMessage = NonNullable<MainResponse['message']>;
/** A member that a request and its answer both have. */
export type CallCase = RequestMessage['$case'];

/** What {@link MainChannel.request} returns. */
export interface RawAnswer {
  /** The host's answer. */
  response: MainResponse;
  /** Descriptors that came with it, owned by the caller. */
  fds: number[];
}

/** Closes descriptors that nobody will use, ignoring ones already gone. */
export function closeQuietly(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      native.close(fd);
    } catch {
      /* already gone */
    }
  }
}

/** One main connection's socket. */
export class MainChannel {
  private readonly receiveBuffer = new Uint8Array(RECEIVE_BUFFER_SIZE);
  private closed = false;

  /** Owns the connected socket `fd` from now on. */
  constructor(readonly fd: number) {}

  /**
   * Sends one raw request and returns the raw answer. Never throws because of
   * the errno in the answer; throws a transport PluginError if the host hung
   * up or the answer cannot be read.
   */
  request(req: MainRequest, fds: readonly number[] = []): RawAnswer {
    const name = req.message ? snakeCase(req.message.$case) : 'request';
    if (this.closed) throw new PluginError(name, Errno.EBADF, 'the connection is closed');
    const bytes = encodeMessage(MainRequest, req);
    try {
      native.sendmsg(this.fd, bytes, bytes.length, fds);
    } catch (e) {
      throw transportError(name, e, 'send failed');
    }
    let received;
    try {
      received = native.recvmsg(this.fd, this.receiveBuffer, MAX_RECEIVED_FDS);
    } catch (e) {
      throw transportError(name, e, 'receive failed');
    }
    if (received === null) {
      throw new PluginError(name, Errno.EPROTO, 'the connection socket is non-blocking', { transport: true });
    }
    if (received.bytes === 0) {
      closeQuietly(received.fds);
      throw new PluginError(name, Errno.ECONNRESET, 'the host closed the connection', { transport: true });
    }
    if (received.truncated) {
      closeQuietly(received.fds);
      // The kernel also cuts descriptors off when this process is at its
      // RLIMIT_NOFILE: say so, it is the likely cause with many VCPUs.
      throw new PluginError(
        name,
        Errno.EMSGSIZE,
        'the answer or its descriptors did not fit (is this process at its limit of open files? see ulimit -n)',
        { transport: true },
      );
    }
    let response: MainResponse;
    try {
      response = MainResponse.decode(this.receiveBuffer.subarray(0, received.bytes));
    } catch (e) {
      closeQuietly(received.fds);
      throw new PluginError(name, Errno.EPROTO, 'undecodable answer', { transport: true, cause: e });
    }
    return { response, fds: received.fds };
  }

  /**
   * A typed request: checks errno and the answer's member, and that at least
   * `fdCount` descriptors came back (extra ones are closed; -1: any number).
   */
  call<K extends CallCase>(
    message: Extract<RequestMessage, { $case: K }>,
    options: { fds?: readonly number[]; fdCount?: number } = {},
  ): { body: OneofBody<ResponseMessage, K>; fds: number[] } {
    const kind = message.$case;
    const name = snakeCase(kind);
    const { response, fds } = this.request({ message }, options.fds);
    const want = options.fdCount ?? 0;
    let body: OneofBody<ResponseMessage, K>;
    try {
      body = answerBody(name, response.errnoValue, response.message, kind);
      if (fds.length < want) {
        throw new PluginError(name, Errno.EPROTO, `expected ${want} descriptors, got ${fds.length}`, { transport: true });
      }
    } catch (e) {
      closeQuietly(fds);
      throw e;
    }
    if (fds.length > want && want >= 0) closeQuietly(fds.splice(want));
    return { body, fds };
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    native.close(this.fd);
  }
}
