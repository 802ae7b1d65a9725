#!/usr/bin/env node
/**
 * Test plugin for crosvm's command-line options: reports, as one JSON line,
 * what it was given. Its arguments (-p), its VCPUs (-c), a file a
 * --plugin-mount(-file) bound at /crosvm-test, the errno of statfs (which a
 * test policy refuses) and its gid map (--plugin-gid-map-file).
 */
import fs from 'node:fs';
import { Connection } from '../../src/plugin/index.js';
import type { CrosvmOptionsReport } from '../support/reports.js';
import { finish } from '../support/test-plugin.js';

function attempt<T>(fn: () => T): T | string {
  try {
    return fn();
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

const conn = Connection.connect();
finish<CrosvmOptionsReport>({
  args: process.argv.slice(2),
  vcpus: conn.getVcpus().length,
  file: attempt(() => fs.readFileSync('/crosvm-test/hello.txt', 'utf8')),
  statfs: attempt(() => (fs.statfsSync('/'), 'ok')),
  gidMap: fs
    .readFileSync('/proc/self/gid_map', 'utf8')
    .trim()
    .split('\n')
    .map((line) => line.trim().split(/\s+/).join(' ')),
});
