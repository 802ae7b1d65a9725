#!/usr/bin/env node
/**
 * Test plugin that ends badly on purpose, chosen by its first argument:
 *   exit N      connect, then exit with code N
 *   signal      connect, then die by SIGKILL
 *   hang        connect, start a grandchild (sleep), print both pids, and never start the VM
 *   stderr N    connect, write N "x" to stderr without a newline, then "\nend\n", and exit 0
 *   flood N     connect, print "flooding", write N MiB to stderr in 1 KiB lines (blocking
 *               writes), printing "wrote K KiB" on stdout after every 64 KiB and "flood done"
 *               at the end; exit 0
 *   chatter     connect, print "pid <plugin>", then write a line to stderr every 10 ms, forever
 *               (and live on if stderr breaks: only the host may end it); print
 *               "shutdown eventfd signalled" when the host asks it to exit
 * Pids are printed as "pids <plugin> <grandchild>" so the test can check that
 * nothing is left behind.
 */
import { spawn } from 'node:child_process';
import { writeSync } from 'node:fs';
import { Connection } from '../../src/plugin/index.js';
import { C, native } from '../../src/native/index.js';

const [mode, value] = process.argv.slice(2);
const conn = Connection.connect();
conn.checkExtension(0);

switch (mode) {
  case 'exit':
    process.exit(Number(value));
    break;
  case 'signal':
    process.kill(process.pid, 'SIGKILL');
    break;
  case 'hang': {
    const child = spawn('sleep', ['600'], { stdio: 'ignore' });
    process.stdout.write(`pids ${process.pid} ${child.pid}\n`);
    setInterval(() => {}, 1000);
    break;
  }
  case 'stderr':
    process.stderr.write('x'.repeat(Number(value)));
    process.stderr.write('\nend\n');
    process.exit(0);
    break;
  case 'flood': {
    const line = Buffer.from(`${'y'.repeat(1023)}\n`);
    const pause = new Int32Array(new SharedArrayBuffer(4));
    writeSync(1, 'flooding\n');
    for (let kib = 64; kib <= Number(value) * 1024; kib += 64) {
      for (let i = 0; i < 64; i++) {
        for (let written = 0; written < line.length;) {
          try {
            written += writeSync(2, line, written);
          } catch (e) {
            // The host made the pipe non-blocking on its side of the open file.
            if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
            Atomics.wait(pause, 0, 0, 1);
          }
        }
      }
      writeSync(1, `wrote ${kib} KiB\n`);
    }
    writeSync(1, 'flood done\n');
    process.exit(0);
    break;
  }
  case 'chatter': {
    process.stdout.write(`pid ${process.pid}\n`);
    process.stderr.on('error', () => {});
    const shutdown = conn.getShutdownEventfd();
    let told = false;
    setInterval(() => {
      process.stderr.write('chatter\n');
      if (!told && native.poll(shutdown, C.POLLIN, 0) & C.POLLIN) {
        told = true;
        process.stdout.write('shutdown eventfd signalled\n');
      }
    }, 10);
    break;
  }
  default:
    process.stderr.write(`exit-status: unknown mode ${String(mode)}\n`);
    process.exit(2);
}
