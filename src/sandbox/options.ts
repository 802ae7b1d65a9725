/**
 * The sandbox's options: what `RunOptions.sandbox` holds, and the parsers of
 * the command-line forms crosvm gave them (--plugin-mount, --plugin-gid-map).
 */
import { isAbsolute, normalize, posix } from 'node:path';

/** A host path bound into the jail (`--plugin-mount SRC:DST[:WRITABLE]`). */
export interface BindMount {
  /** The host path (absolute). */
  source: string;
  /** Where the plugin sees it (absolute, not `/`, not under /proc or /dev). */
  target: string;
  /** True for a read-write bind; binds are read-only otherwise. */
  writable: boolean;
}
/** A range of host groups mapped into the jail's user namespace (`--plugin-gid-map`; plugvisor must run as root). */
export interface GidMap {
  /** The first gid inside the jail. */
  inner: number;
  /** The host gid it maps to. */
  outer: number;
  /** How many consecutive gids the range covers. */
  count: number;
}
/** How to jail the plugin (`RunOptions.sandbox`); see the README's "Sandbox" section. */
export interface SandboxConfig {
  /** A directory bound read-only as the plugin's `/` instead of the default empty root. */
  pluginRoot?: string;
  /** Host paths to bind in, after the automatic binds. */
  mounts: BindMount[];
  /** Extra gid ranges (root only). */
  gidMaps: GidMap[];
  /** A seccomp policy file replacing src/sandbox/plugin-seccomp.policy. */
  seccompPolicyFile?: string;
  /** crosvm's --seccomp-log-failures: calls the policy would kill the plugin for are logged and allowed instead. */
  seccompLogFailures?: boolean;
}

const MAX_ID = 0xffffffff; // (uid_t)-1 is never a valid id

/**
 * Parses `SRC[:DST[:WRITABLE]]` (WRITABLE = true/false, default false; DST
 * defaults to SRC), the form crosvm's --plugin-mount took.
 */
export function parseBindMount(spec: string): BindMount {
  const parts = spec.split(':');
  if (parts.length > 3 || parts[0] === '') {
    throw new Error(`bad --plugin-mount '${spec}': expected SRC[:DST[:WRITABLE]] (paths cannot contain ':')`);
  }
  const [source, targetText, writableText] = parts as [string, string | undefined, string | undefined];
  const target = targetText === undefined || targetText === '' ? source : targetText;
  if (!isAbsolute(source)) throw new Error(`bad --plugin-mount '${spec}': the source '${source}' must be an absolute path`);
  if (!isAbsolute(target)) throw new Error(`bad --plugin-mount '${spec}': the target '${target}' must be an absolute path`);
  if (target.split('/').includes('..')) throw new Error(`bad --plugin-mount '${spec}': the target must not contain '..'`);
  const normalTarget = posix.normalize(target).replace(/\/+$/, '');
  if (normalTarget === '') throw new Error(`bad --plugin-mount '${spec}': the target cannot be '/' (use --plugin-root)`);
  let writable = false;
  if (writableText !== undefined) {
    if (writableText === 'true') writable = true;
    else if (writableText !== 'false') {
      throw new Error(`bad --plugin-mount '${spec}': WRITABLE must be 'true' or 'false', not '${writableText}'`);
    }
  }
  return { source: normalize(source), target: normalTarget, writable };
}

function parseId(text: string, what: string, spec: string): number {
  if (!/^[0-9]+$/.test(text)) throw new Error(`bad --plugin-gid-map '${spec}': ${what} '${text}' is not a non-negative integer`);
  const n = Number(text);
  if (n >= MAX_ID) throw new Error(`bad --plugin-gid-map '${spec}': ${what} ${text} is too large`);
  return n;
}

/** Parses `INNER[:OUTER[:COUNT]]` (OUTER defaults to INNER, COUNT to 1), as crosvm's --plugin-gid-map. */
export function parseGidMap(spec: string): GidMap {
  const parts = spec.split(':');
  if (parts.length > 3 || parts[0] === '') {
    throw new Error(`bad --plugin-gid-map '${spec}': expected INNER[:OUTER[:COUNT]], e.g. 1000:1000:1`);
  }
  const inner = parseId(parts[0], 'INNER', spec);
  const outer = parts[1] === undefined || parts[1] === '' ? inner : parseId(parts[1], 'OUTER', spec);
  const count = parts[2] === undefined ? 1 : parseId(parts[2], 'COUNT', spec);
  if (count === 0) throw new Error(`bad --plugin-gid-map '${spec}': COUNT must be at least 1`);
  if (inner + count > MAX_ID || outer + count > MAX_ID) {
    throw new Error(`bad --plugin-gid-map '${spec}': the range runs past the largest gid`);
  }
  return { inner, outer, count };
}
