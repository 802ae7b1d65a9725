/**
 * plugvisor/guest and `plugvisor exec` end to end: C programs compiled
 * with gcc in the test (test/guests/*.c, examples/guest/plugvisor.h) run in
 * real KVM VMs at CPL 3, through the CLI, in the plugin jail and without it.
 * The library path is test/plugins/guest-program.ts (runProgram with host
 * functions); `plugvisor exec` runs the rest with its bundled plugin.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { needsKvm } from './support/kvm.js';
import type { GuestProgramReport, Reported } from './support/reports.js';
import {
  SANDBOX_MODES,
  examplePlugin,
  modeName,
  reportOf,
  runCli,
  runPluginCli,
  testPlugin,
  type CliResult,
} from './support/run.js';
import { GUEST_CFLAGS, GUEST_HEADER_DIR, compileC, compileGuest, guestBuildDir, symbols } from './support/guest-c.js';
import { guestInput } from './support/guest-input.js';

const GUEST_PROGRAM = testPlugin('guest-program');
/** 1 MiB and a few bytes: many blocks, and a tail that needs two padding blocks. */
const INPUT_SIZE = (1 << 20) + 60;

let dir = '';
const elf: Record<string, string> = {};

before(() => {
  if (needsKvm.skip) return;
  dir = guestBuildDir();
  for (const name of ['sha256', 'float', 'hostcall', 'faults', 'uart-irq']) elf[name] = compileGuest(dir, name);
});

function exec(sandboxed: boolean, program: string, args: string[] = [], flags: string[] = []): Promise<CliResult> {
  return runCli(['exec', ...(sandboxed ? [] : ['--disable-sandbox']), ...flags, program, '--', ...args]);
}

/** Runs the test plugin on a program; returns its JSON line. */
async function runGuestProgram(
  sandboxed: boolean,
  kind: string,
  program: string,
  size = 0,
): Promise<Reported<GuestProgramReport>> {
  return reportOf<GuestProgramReport>(
    await runPluginCli(GUEST_PROGRAM, {
      sandboxed,
      flags: ['--plugin-mount', `${dir}:${dir}`],
      args: [kind, program, String(size)],
    }),
  );
}

function bitsOf(value: number): string {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, value, true);
  return view.getBigUint64(0, true).toString(16).padStart(16, '0');
}

describe('compiled programs in a VM (plugvisor/guest)', needsKvm, () => {
  for (const sandboxed of SANDBOX_MODES) {
    describe(modeName(sandboxed), () => {
      test("SHA-256 of a buffer the plugin hands in equals node:crypto's", async () => {
        const r = await runGuestProgram(sandboxed, 'sha256', elf['sha256'], INPUT_SIZE);
        assert.deepEqual(r.outcome, { kind: 'exit', status: 0, via: 'exit call' });
        assert.equal(r.digest, createHash('sha256').update(guestInput(INPUT_SIZE)).digest('hex'));
      });

      test('floating point and SSE give the results JavaScript computes, bit for bit', async () => {
        const r = await exec(sandboxed, elf['float']);
        assert.equal(r.code, 0, r.stderr);
        let sum = 0;
        for (let k = 1; k <= 1000; k++) sum += 1 / (k * k);
        const expected = [
          sum,
          Math.sqrt(2) * 1.5 + -0.75,
          Math.sqrt(3) * 1.5 + 0.25,
          3.5 * 3.5,
          Infinity,
          -123456789012345 / 7,
        ].map(bitsOf);
        assert.deepEqual(r.stdout.trim().split('\n'), expected);
      });

      test("a host function's result is used by the program", async () => {
        const r = await runGuestProgram(sandboxed, 'hostcall', elf['hostcall']);
        let x = 3n;
        for (let i = 0; i < 5; i++) x = x * BigInt(i + 2) + 1n;
        assert.equal(r.calls, 5);
        assert.equal(r.stdout, `${x}\n`);
        assert.deepEqual(r.outcome, { kind: 'exit', status: Number(x & 0xffn), via: 'exit call' });
      });

      test('faults are reported with their vector and rip, and exit like a native crash', async () => {
        const at = symbols(elf['faults']);
        const hex = (name: string): string => `0x${at.get(name)!.toString(16)}`;
        const cases: [string, number, RegExp][] = [
          [
            'null',
            139,
            new RegExp(
              `#PF \\(page fault, vector 14\\) at rip ${hex('fault_null')}, cr2 0x0, error 0x4: a user-mode read of a not-present page \\(a null pointer dereference\\)`,
            ),
          ],
          ['ud2', 132, new RegExp(`#UD \\(invalid opcode, vector 6\\) at rip ${hex('fault_ud2')}, error 0x0`)],
          ['divide', 136, new RegExp(`#DE \\(divide error, vector 0\\) at rip ${hex('fault_divide_div')}, error 0x0`)],
          [
            'read-only',
            139,
            new RegExp(
              `#PF \\(page fault, vector 14\\) at rip ${hex('fault_read_only')}, cr2 0x${(at.get('read_only_table')! + 4n).toString(16)}, error 0x7: a user-mode write of a read-only page`,
            ),
          ],
          [
            'syscall',
            132,
            new RegExp(
              `#UD \\(invalid opcode, vector 6\\) at rip ${hex('fault_syscall')}, error 0x0 \\(the program made Linux system call 60 \\(syscall\\)`,
            ),
          ],
          [
            'stack',
            139,
            /#PF \(page fault, vector 14\) at rip 0x[0-9a-f]+, cr2 0x[0-9a-f]+, error 0x6: a user-mode write of a not-present page \(the page below the stack: a stack overflow\?\)/,
          ],
        ];
        for (const [which, status, message] of cases) {
          const r = await exec(sandboxed, elf['faults'], [which]);
          assert.equal(r.code, status, `${which}: exit status (stderr: ${r.stderr})`);
          assert.match(r.stderr, new RegExp(`^plugvisor: guest fault: ${message.source}`), which);
          assert.doesNotMatch(r.stderr, /triple|shut down/, which);
        }
      });

      test('COM1 raises IRQ 4 through its irqfd once the program enables it', async () => {
        const r = await runGuestProgram(sandboxed, 'uart-irq', elf['uart-irq']);
        assert.deepEqual(r.outcome, { kind: 'exit', status: 0, via: 'exit call' });
        const interrupts = r.interrupts;
        assert.ok(interrupts.length > 0, 'no interrupt reached the stub');
        assert.ok(
          interrupts.every((v) => v === 0x24),
          `vectors: ${interrupts.join(', ')}`,
        );
      });
    });
  }

  test('exec: the debug-exit port, a bad pointer, --cpus, --memory, --timeout', async () => {
    let r = await exec(false, elf['faults'], ['exit-port']);
    assert.equal(r.code, 33, `(0x10 << 1) | 1; stderr: ${r.stderr}`);
    assert.equal(r.stderr, '');

    r = await exec(false, elf['faults'], ['bad-pointer']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^plugvisor: error: write: the range 0x1000\.\.0x1010 is not the program's memory\n/);

    r = await exec(false, elf['float'], [], ['--cpus', '2']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim().split('\n').length, 6, 'the program ran on VCPU 0 of two');

    r = await exec(false, elf['faults'], ['none'], ['--memory', '8']);
    assert.equal(r.code, 0, `an 8 MiB VM runs it: ${r.stderr}`);

    r = await exec(false, elf['faults'], ['spin'], ['--timeout', '1']);
    assert.equal(r.code, 124, r.stderr);
    assert.equal(r.stderr, 'plugvisor: the program did not finish within 1 s\n');
  });

  test('the examples: hello.c under exec, upper.c under run-program.ts (README)', async () => {
    const hello = compileC(path.join(GUEST_HEADER_DIR, 'hello.c'), path.join(dir, 'hello.elf'), GUEST_CFLAGS);
    const upper = compileC(path.join(GUEST_HEADER_DIR, 'upper.c'), path.join(dir, 'upper.elf'), GUEST_CFLAGS);
    let r = await exec(true, hello, ['one', 'two']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      `hello from a plugvisor guest\nargv[0] = ${hello}\nargv[1] = one\nargv[2] = two\nfree memory: 58 MiB\n`,
    );
    r = await runPluginCli(examplePlugin('run-program'), {
      sandboxed: true,
      flags: ['--plugin-mount', `${dir}:${dir}`],
      args: [upper, 'hello', 'World!'],
    });
    assert.equal(r.stdout, 'HELLO\nWORLD!\n');
    assert.equal(r.code, 9, 'the program exits with the number of letters changed');
  });

  test('exec refuses what it cannot run with a reason, before starting a VM', async () => {
    const source = path.join(dir, 'tiny.c');
    writeFileSync(source, 'void _start(void) { for (;;) ; }\n');
    const base = ['-nostdlib', '-ffreestanding', '-O2'];
    const staticElf = compileC(source, path.join(dir, 'tiny-static.elf'), [...base, '-static']);
    const patched = (name: string, offset: number, bytes: number[]): string => {
      const file = path.join(dir, name);
      copyFileSync(staticElf, file);
      const data = readFileSync(file);
      data.set(bytes, offset);
      writeFileSync(file, data);
      return file;
    };
    const cases: [string, RegExp][] = [
      [
        compileC(source, path.join(dir, 'tiny-dynamic.elf'), base),
        /dynamically linked \(it asks for the interpreter \/[^)]+\): link it with -static -nostdlib/,
      ],
      [
        compileC(source, path.join(dir, 'tiny-pie.elf'), [...base, '-static-pie']),
        /a position-independent executable \(ET_DYN, with relocations\); plugvisor loads programs at their link address and does not relocate/,
      ],
      [patched('tiny-32.elf', 4, [1]), /a 32-bit ELF file \(ELFCLASS32\): build it as a 64-bit x86-64 executable/],
      [patched('tiny-arm.elf', 18, [183, 0]), /built for AArch64, not x86-64/],
      [compileC(source, path.join(dir, 'tiny.o'), [...base, '-c']), /an object file \(ET_REL\), not an executable/],
      [source, /not an ELF file/],
      [path.join(dir, 'missing.elf'), /cannot read the program .*missing\.elf: ENOENT/],
    ];
    for (const [file, reason] of cases) {
      const r = await exec(false, file);
      assert.equal(r.code, 1, `${file}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^plugvisor: error: .*${reason.source}`), file);
      assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
    }
  });
});
