#!/usr/bin/env node
/**
 * The host-call benchmark plugin: runs bench/build/hostcall_guest.elf (or
 * any program) with plugvisor/guest and serves host function 1 (x -> x + 1)
 * as a plugin's own TypeScript function. The program times the calls and
 * prints the result line itself.
 *
 * Usage (as a plugin): plugvisor run --plugin host-call.js -- PROGRAM [ARGS...]
 */
import { readFileSync } from 'node:fs';
import { runProgram } from 'plugvisor/guest';

const [program, ...args] = process.argv.slice(2);
if (program === undefined) throw new Error('usage: host-call.js PROGRAM [ARGS...]');
const outcome = runProgram({
  program: readFileSync(program),
  args: [program, ...args],
  hostFunctions: { 1: ({ args: [x] }) => x + 1n },
});
if (outcome.kind === 'fault') process.stderr.write(`${outcome.message}\n`);
process.exit(outcome.kind === 'exit' ? outcome.status : 1);
