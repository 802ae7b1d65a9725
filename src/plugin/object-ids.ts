/**
 * Ids of the objects a plugin creates (io events, memory, irq events).
 *
 * The host keeps one id space per VM for every object kind, and ids are chosen
 * by the plugin: they must be unique among the live objects of the whole
 * plugin process, over all its connections and threads. Module state is per
 * thread (each worker_thread loads its own copy of this module), so an id is
 * `(threadId << 20) | n`: the low 20 bits count within the thread, the high
 * 12 bits are the worker's threadId (0 for the main thread). Ids of destroyed
 * objects are reused, so a thread may have up to 2^20 live objects and create
 * and destroy any number over time. Thread ids beyond 4095 wrap around (a
 * process would need thousands of workers for two live ones to collide).
 */
import { threadId } from 'node:worker_threads';

const ID_BITS = 20;
const ID_COUNTER_LIMIT = 1 << ID_BITS;
const idPrefix = ((threadId & 0xfff) << ID_BITS) >>> 0;
let idCounter = 0;
const freeIds: number[] = [];

/** A fresh object id, unique in the process among live objects (see above). */
export function allocateObjectId(): number {
  const reused = freeIds.pop();
  if (reused !== undefined) return reused;
  if (idCounter >= ID_COUNTER_LIMIT) throw new RangeError('too many live plugin objects in this thread (2^20)');
  return (idPrefix | idCounter++) >>> 0;
}

/** Returns an id whose object the host has destroyed, for reuse. */
export function releaseObjectId(id: number): void {
  freeIds.push(id);
}
