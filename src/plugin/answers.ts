/**
 * The host's answers, on the main connection and on VCPU pipes alike: the
 * body of the member the request expects, or the PluginError that says why
 * there is none.
 */
import { errno as Errno } from '../errno.js';
import { PluginError, snakeCase } from './errors.js';

/** A generated oneof: `{ $case: 'getState', getState: {...} } | ...`. */
export interface Oneof {
  /** The member's name. */
  readonly $case: string;
}

/** The body of member `K` of oneof `M`. */
export type OneofBody<M extends Oneof, K extends M['$case']> =
  Extract<M, { $case: K }> extends infer Member ? (Member extends Record<K, infer Body> ? Body : never) : never;

/**
 * The body of `answer` for request `request` (snake_case), which expects
 * member `expected`: a PluginError with the host's errno when it refused, a
 * transport one (EPROTO) when it answered with another member. `who` starts
 * that message ("vcpu 0: ").
 */
export function answerBody<M extends Oneof, K extends M['$case']>(
  request: string,
  errnoValue: number,
  answer: M | undefined,
  expected: K,
  who = '',
): OneofBody<M, K> {
  if (errnoValue !== 0) throw new PluginError(request, errnoValue);
  if (answer?.$case !== expected) {
    throw new PluginError(request, Errno.EPROTO, `${who}answered with ${answer ? snakeCase(answer.$case) : 'no member'}`, {
      transport: true,
    });
  }
  return (answer as unknown as Record<K, OneofBody<M, K>>)[expected];
}
