/**
 * How the host shares its one main thread among main connections: a plugin
 * that floods one connection with requests delays another connection's
 * request by at most REQUESTS_PER_TURN of them (issue 16, item 4). Counted
 * in requests, from the order the host served them in (see
 * test/plugins/connection-fairness.ts), not timed.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { REQUESTS_PER_TURN } from '../src/host/main-connection.js';
import { needsKvm } from './support/kvm.js';
import { runPluginCli, testPlugin } from './support/run.js';

const { EPERM } = constants.errno;
/** Requests queued on the flooded connection: far more than one turn's worth. */
const FLOOD = 8 * REQUESTS_PER_TURN;

describe('main connections share the main thread', needsKvm, () => {
  test(`a request waits behind at most ${REQUESTS_PER_TURN} requests of a flooded connection`, async () => {
    // Unsandboxed: the plugin stops its parent, the host, while it fills both connections.
    const result = await runPluginCli(testPlugin('connection-fairness'), {
      args: [String(FLOOD)],
      sandboxed: false,
      timeoutMs: 20_000,
    });
    assert.equal(result.code, 0, `plugvisor exited ${String(result.code)}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
    const got = JSON.parse(result.stdout.trim().split('\n').at(-1) ?? '') as { flood: number[]; probe: number };
    assert.equal(got.probe, 0, "the other connection's unreserve succeeded");
    const servedBefore = got.flood.findIndex((e) => e !== EPERM);
    assert.ok(servedBefore >= 0, `every one of the ${FLOOD} flooding requests was served before the other connection's`);
    assert.deepEqual(
      got.flood.slice(servedBefore),
      Array(FLOOD - servedBefore).fill(0),
      'every request after the unreserve succeeded',
    );
    assert.ok(
      servedBefore <= REQUESTS_PER_TURN,
      `${servedBefore} requests of the flooded connection were served before the other connection's one (at most ${REQUESTS_PER_TURN} may be)`,
    );
  });
});
