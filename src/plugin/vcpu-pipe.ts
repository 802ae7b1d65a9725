/**
 * The transport under a {@link Vcpu}: its two pipes to the host (requests
 * out, length-delimited responses in), synchronous.
 *
 * The read buffer is reused, and several responses that arrive in one read
 * are split with a DelimitedStream. The host pushes a `wait` answer at every
 * stop; one that arrives while the SDK waits for another answer (after an
 * async-write event, the VCPU runs on) is queued for Vcpu.wait().
 */
import { native } from '../native/index.js';
import { errno as Errno } from '../errno.js';
import { DelimitedStream, encodeMessage } from '../protocol/framing.js';
import { VcpuRequest, VcpuResponse, type VcpuResponse_Wait } from '../protocol/gen/plugin.js';
import { PipeReader } from '../protocol/pipe-reader.js';
import { answerBody, type OneofBody } from './answers.js';
import { PluginError, snakeCase, transportError } from './errors.js';
// eslint-disable-next-line @typescript-eslint/no-unused-vars -- named by {@link} in the docs
import type { Vcpu } from './vcpu.js';

const READ_BUFFER_SIZE = 0x40000;

type RequestMessage = NonNullable<VcpuRequest['message']>;
type ResponseMessage = NonNullable<VcpuResponse['message']>;
/** A member that a request and its answer both have. */
type CallCase = RequestMessage['$case'] & ResponseMessage['$case'];

/** One VCPU's pipes. */
export class VcpuPipe {
  private readonly responses: PipeReader;
  private readonly readBuffer = new Uint8Array(READ_BUFFER_SIZE);
  private readonly stream = new DelimitedStream();
  /** Pushed waits that arrived while the SDK waited for another answer. */
  readonly queued: VcpuResponse_Wait[] = [];
  /**
   * True from a resume until the next response: the host may not have read
   * the resume yet, and it reads one request per read(2), so a second
   * request written now could be merged into the same read and lost.
   */
  private resumePending = false;
  private closed = false;

  /**
   * Owns `requestFd` (plugin→host, write end) and `responseFd` (host→plugin,
   * read end) of VCPU `id`; `spinUs` is the read spin budget.
   */
  constructor(
    readonly id: number,
    private readonly requestFd: number,
    private readonly responseFd: number,
    spinUs: number,
  ) {
    this.responses = new PipeReader(responseFd, spinUs);
  }

  /** Throws EBADF (as `request`) once the pipes are closed. */
  checkOpen(request: string): void {
    if (this.closed) throw new PluginError(request, Errno.EBADF, `vcpu ${this.id} is closed`);
  }

  /** Writes the first `length` bytes of `bytes` (a whole request) for `request`. */
  write(bytes: Uint8Array, length: number, request: string): void {
    let done = 0;
    while (done < length) {
      let n: number;
      try {
        n = native.write(this.requestFd, bytes, done, length - done);
      } catch (e) {
        throw transportError(request, e, `vcpu ${this.id}: write failed`);
      }
      if (n < 0) continue;
      done += n;
    }
  }

  /** Writes an encoded resume: the VCPU runs on, and no request may follow until it reports. */
  writeResume(bytes: Uint8Array): void {
    this.write(bytes, bytes.length, 'resume');
    this.resumePending = true;
  }

  /** The next response from the host (blocking). */
  receive(request: string): VcpuResponse {
    for (;;) {
      let bytes: Uint8Array | undefined;
      try {
        bytes = this.stream.next();
      } catch (e) {
        throw new PluginError(request, Errno.EPROTO, `vcpu ${this.id}: malformed response framing`, {
          transport: true,
          cause: e,
        });
      }
      if (bytes !== undefined) {
        // Any response means the host has read our last resume (the VCPU ran).
        this.resumePending = false;
        try {
          return VcpuResponse.decode(bytes);
        } catch (e) {
          throw new PluginError(request, Errno.EPROTO, `vcpu ${this.id}: undecodable response`, { transport: true, cause: e });
        }
      }
      let n: number;
      try {
        n = this.responses.read(this.readBuffer, 0, this.readBuffer.length);
      } catch (e) {
        throw transportError(request, e, `vcpu ${this.id}: read failed`);
      }
      if (n === 0) {
        throw new PluginError(request, Errno.ECONNRESET, `vcpu ${this.id}: the host closed the VCPU pipe`, { transport: true });
      }
      this.stream.push(this.readBuffer, n);
    }
  }

  /**
   * Sends one request and returns the host's raw answer, errno included
   * (never thrown). Pushed waits that arrive first are queued. Not for wait,
   * resume or shutdown, which get no answer of their own.
   */
  request(req: VcpuRequest): VcpuResponse {
    const name = req.message ? snakeCase(req.message.$case) : 'request';
    this.checkOpen(name);
    if (this.resumePending) {
      throw new PluginError(
        name,
        Errno.EBUSY,
        `vcpu ${this.id} was resumed and has not reported since: call wait() before sending it requests`,
      );
    }
    const bytes = encodeMessage(VcpuRequest, req);
    this.write(bytes, bytes.length, name);
    for (;;) {
      const response = this.receive(name);
      if (response.message?.$case === 'wait' && response.errnoValue === 0) {
        this.queued.push(response.message.wait);
        continue;
      }
      return response;
    }
  }

  /** Sends one request and returns the body of its answer (a PluginError if the host refused it). */
  call<K extends CallCase>(message: Extract<RequestMessage, { $case: K }>): OneofBody<ResponseMessage, K> {
    const kind = (message as { $case: K }).$case;
    const response = this.request({ message });
    return answerBody(snakeCase(kind), response.errnoValue, response.message, kind, `vcpu ${this.id}: `);
  }

  /** Closes both pipe ends. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    native.close(this.requestFd);
    native.close(this.responseFd);
  }
}
