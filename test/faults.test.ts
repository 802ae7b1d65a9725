/**
 * Fault injection in the suite: a part of the matrix of test/fault/matrix.ts
 * (every ending at every point for 1 VCPU unsandboxed; each point once, the
 * ending rotating, for 4 VCPUs and in the sandbox). `npm run faults` runs all
 * of it. The host is this test process: what a run leaves shows in /proc/self.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { runScenario, scenarioName, scenarios, warmUp } from './fault/matrix.js';
import { needsKvm } from './support/kvm.js';
import { SANDBOX_MODES } from './support/run.js';

describe('a plugin that ends at any point of a run', needsKvm, () => {
  before(() => warmUp(SANDBOX_MODES), { timeout: 60_000 });
  for (const scenario of scenarios({ all: false, sandboxModes: SANDBOX_MODES })) {
    test(`${scenarioName(scenario)}: ends in time, as documented, leaving nothing`, { timeout: 60_000 }, async () => {
      const { problems } = await runScenario(scenario);
      assert.deepEqual(problems, []);
    });
  }
});
