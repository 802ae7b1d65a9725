/**
 * A short fuzz run in the suite (test/fuzz/run.ts drives test/plugins/fuzz.ts
 * under the real CLI, a few seconds per sandbox mode); `npm run fuzz` runs
 * the long one. PLUGVISOR_FUZZ_SEED picks another seed.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MainRequest, VcpuRequest } from '../src/protocol/gen/plugin.js';
import { checkWellFormed, MalformedMessageError } from '../src/protocol/strict.js';
import { messageDescriptor } from './support/descriptor.js';
import { Random, breakMessage, randomMessage } from './fuzz/generate.js';
import { fuzz } from './fuzz/run.js';
import { needsKvm } from './support/kvm.js';
import { SANDBOX_MODES } from './support/run.js';

const SEED = Number(process.env['PLUGVISOR_FUZZ_SEED'] ?? 16);

describe('the fuzz generator', () => {
  test("random messages have the generated code's shape: nothing is lost through fromPartial and encode", () => {
    const random = new Random(SEED);
    for (const [name, type] of [
      ['MainRequest', MainRequest],
      ['VcpuRequest', VcpuRequest],
    ] as const) {
      const desc = messageDescriptor(name);
      const members = new Set<string>();
      for (let i = 0; i < 500; i++) {
        const shape = randomMessage(random, desc, { maxRepeated: 4, maxBytes: 16 });
        const message = type.fromPartial(shape);
        const bytes = type.encode(message as never).finish();
        checkWellFormed(desc, bytes);
        // Every field the shape set is a field of the generated type (fromPartial drops others).
        assert.deepEqual(keysLost(shape, message), []);
        assert.deepEqual(type.decode(bytes), message);
        const member = (message as { message?: { $case: string } }).message?.$case;
        if (member !== undefined) members.add(member);
      }
      assert.equal(members.size, desc.oneofs[0].fields.length, `every ${name} member was drawn`);
    }
  });

  test('broken messages are malformed under the strict rules, whatever they came from', () => {
    const random = new Random(SEED);
    const desc = messageDescriptor('MainRequest');
    for (let i = 0; i < 500; i++) {
      const bytes = MainRequest.encode(
        MainRequest.fromPartial(randomMessage(random, desc, { maxRepeated: 4, maxBytes: 16 })),
      ).finish();
      const broken = breakMessage(random, bytes);
      assert.throws(
        () => checkWellFormed(desc, broken.bytes),
        MalformedMessageError,
        `${broken.how}: ${Buffer.from(broken.bytes).toString('hex')}`,
      );
    }
  });
});

describe('fuzzing the host through the wire', needsKvm, () => {
  test(
    `a short run (seed ${SEED}): every well-formed request answered with its member, every malformed one dropped alone, no crash, no hang`,
    { timeout: 120_000 },
    async () => {
      const summary = await fuzz({ seconds: 4 * SANDBOX_MODES.length, roundSeconds: 4, seed: SEED, sandboxModes: SANDBOX_MODES });
      assert.deepEqual(summary.findings, []);
      assert.equal(summary.rounds, SANDBOX_MODES.length);
      // The run did reach everything it claims to test.
      for (const kind of ['generated', 'broken', 'mutated', 'random', 'truncated']) {
        assert.ok((summary.mainSent[kind] ?? 0) > 20, `only ${summary.mainSent[kind] ?? 0} ${kind} main requests`);
      }
      for (const kind of ['generated', 'wrongSize', 'manyMsrs', 'garbage']) {
        assert.ok((summary.vcpuSent[kind] ?? 0) > 3, `only ${summary.vcpuSent[kind] ?? 0} ${kind} VCPU requests`);
      }
      assert.ok(summary.mainDropped >= (summary.mainSent['broken'] ?? 0));
      assert.ok(summary.probes >= summary.mainDropped, 'every drop was followed by a probe on a new connection');
      assert.ok(summary.fdsAttached > 0);
    },
  );
});

/** Paths of `shape`'s keys that `message` (what fromPartial made of it) does not have. */
function keysLost(shape: unknown, message: unknown, at = ''): string[] {
  if (shape === null || typeof shape !== 'object' || shape instanceof Uint8Array) return [];
  if (message === null || typeof message !== 'object') return [at];
  const lost: string[] = [];
  for (const [key, value] of Object.entries(shape)) {
    if (!(key in message)) lost.push(`${at}.${key}`);
    else lost.push(...keysLost(value, (message as Record<string, unknown>)[key], `${at}.${key}`));
  }
  return lost;
}
