#!/usr/bin/env node
/**
 * Test plugin: runs a compiled program with plugvisor/guest's runProgram
 * and serves the host functions of the test guests (test/guests/*.c):
 *
 *   1 input_size()         the size of the input (guestInput(SIZE))
 *   2 read_input(dst, len) copies the input to dst; for uart-irq.c, 2 is
 *                          "interrupts seen so far" instead
 *   3 digest(ptr, len)     records the bytes (the SHA-256 digest)
 *   7 (a, b)               a * b + 1
 *
 * Usage: guest-program.js CASE ELF [SIZE]; CASE is sha256, hostcall or
 * uart-irq. Prints one JSON line: the outcome, what the host functions saw,
 * and the program's stdout.
 */
import { readFileSync } from 'node:fs';
import { runProgram, type HostFunction } from '../../src/guest/index.js';
import { guestInput } from '../support/guest-input.js';
import type { GuestProgramReport } from '../support/reports.js';
import { printReport } from '../support/test-plugin.js';

const [kind, elf, sizeText] = process.argv.slice(2);
if (kind === undefined || elf === undefined) throw new Error('usage: guest-program.js CASE ELF [SIZE]');
const input = guestInput(Number(sizeText ?? 0));
const record: Omit<GuestProgramReport, 'outcome' | 'stdout'> = { calls: 0, interrupts: [] };
let stdout = '';

const functions: Record<string, Record<number, HostFunction>> = {
  sha256: {
    1: () => input.length,
    2: ({ args: [dst, length], memory }) => memory.write(dst, input.subarray(0, Number(length))),
    3: ({ args: [pointer, length], memory }) => {
      record.digest = Buffer.from(memory.read(pointer, length)).toString('hex');
    },
  },
  hostcall: {
    7: ({ args: [a, b] }) => {
      record.calls++;
      return a * b + 1n;
    },
  },
  'uart-irq': { 2: () => record.interrupts.length },
};

const outcome = runProgram({
  program: readFileSync(elf),
  args: [elf],
  hostFunctions: functions[kind] ?? {},
  stdout: (bytes) => (stdout += Buffer.from(bytes).toString()),
  onInterrupt: (vector) => {
    if (record.interrupts.length < 100) record.interrupts.push(vector);
  },
});
const result = outcome.kind === 'exit' ? outcome : { kind: outcome.kind, message: outcome.message };
printReport<GuestProgramReport>({ outcome: result, ...record, stdout });
