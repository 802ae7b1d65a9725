/**
 * Open-file limits: this process's RLIMIT_NOFILE, and the one the jail gives
 * the plugin.
 */
import { readFileSync } from 'node:fs';

/** RLIMIT_NOFILE (soft and hard) inside the jail, as crosvm gave its plugins (see pluginNofileLimit). */
export const PLUGIN_NOFILE_LIMIT = 32768;

/** This process's RLIMIT_NOFILE, the soft (in force) or the hard one, or Infinity. */
export function openFileLimit(which: 'soft' | 'hard'): number {
  let limits = '';
  try {
    limits = readFileSync('/proc/self/limits', 'utf8');
  } catch {
    /* no /proc: no known limit */
  }
  const line = limits.split('\n').find((l) => l.startsWith('Max open files'));
  const value = line?.trim().split(/\s+/)[which === 'soft' ? 3 : 4];
  if (value === undefined || value === 'unlimited') return Infinity;
  return Number(value);
}

/**
 * The RLIMIT_NOFILE (soft = hard) the plugin gets: 32768, or this process's
 * hard limit when that is lower (raising a hard limit needs CAP_SYS_RESOURCE,
 * which even root may lack in a container). It is a ceiling on the plugin.
 */
export function pluginNofileLimit(): number {
  return Math.min(PLUGIN_NOFILE_LIMIT, openFileLimit('hard'));
}
