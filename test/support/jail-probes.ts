/**
 * What the jail's probes (test/plugins/jail-probe.ts, sandbox-probe.ts) share:
 * the outcome of an attempt, and what a process reads about itself in /proc.
 * Node's own modules only: sandbox-probe loads nothing of plugvisor before it
 * tries the native addon.
 */
import fs from 'node:fs';
import type { Attempt } from './reports.js';

/** Runs `fn`: 'ok', or the errno name it failed with (a SystemError's, such as os.setPriority's, from its info). */
export function attempt(fn: () => unknown): Attempt {
  try {
    fn();
    return 'ok';
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { info?: { code?: string } };
    return err.info?.code ?? err.code ?? String(e);
  }
}

/** A field of /proc/self/status (`CapEff`, `NoNewPrivs`, ...), or undefined where there is none. */
export function statusField(name: string): string | undefined {
  const line = fs
    .readFileSync('/proc/self/status', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(name + ':'));
  return line?.slice(name.length + 1).trim();
}

/** The pids this process sees in /proc, in order. */
export function procPids(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((n) => /^[0-9]+$/.test(n))
    .map(Number)
    .sort((a, b) => a - b);
}
