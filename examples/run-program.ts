#!/usr/bin/env node
/**
 * Runs a compiled program in a plugvisor VM and serves it one host function:
 * 1 = uppercase(pointer, length) upper-cases the program's text in place and
 * returns how many letters it changed.
 *
 *   gcc -static -nostdlib -ffreestanding -O2 -Iexamples/guest -o upper.elf examples/guest/upper.c
 *   plugvisor run --plugin dist/examples/run-program.js --plugin-mount $PWD:$PWD -- $PWD/upper.elf hello
 */
import { readFileSync } from 'node:fs';
import { runProgram } from 'plugvisor/guest';

const [program, ...args] = process.argv.slice(2);
if (program === undefined) {
  process.stderr.write('usage: run-program.js PROGRAM.elf [ARGS...]\n');
  process.exit(2);
}
const outcome = runProgram({
  program: readFileSync(program),
  args: [program, ...args],
  hostFunctions: {
    1: ({ args: [pointer, length], memory }) => {
      const text = memory.slice(pointer, length, { writable: true }); // checked: the program's own memory
      let changed = 0;
      for (let i = 0; i < text.length; i++) {
        if (text[i] < 0x61 || text[i] > 0x7a) continue;
        text[i] -= 0x20;
        changed++;
      }
      return changed;
    },
  },
});
if (outcome.kind === 'fault') process.stderr.write(`${outcome.message}\n`);
process.exit(outcome.kind === 'exit' ? outcome.status : 1);
