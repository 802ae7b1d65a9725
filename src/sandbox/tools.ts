/**
 * Finding the programs the jail is made with: bubblewrap and other system
 * tools on PATH, and plugvisor's own sandbox helpers (native/seccomp).
 * A missing one is an Error that names it and how to get it.
 */
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { join } from 'node:path';
import { nativeDir, NATIVE_FIX } from '../native/locate.js';

/** The first executable file called `name` on PATH (or on `searchPath`, a list in PATH's form). */
export function findOnPath(name: string, searchPath: string = process.env.PATH ?? ''): string | undefined {
  for (const dir of searchPath.split(':')) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/** The path of tool `name` on PATH; throws, saying `what` it is (and `install`: how to get it), if there is none. */
export function requireTool(name: string, what: string, install = ''): string {
  const found = findOnPath(name);
  if (found === undefined) {
    throw new Error(
      `cannot sandbox the plugin: ${what} ('${name}') is not installed or not on PATH${install}` +
        ' (or run the plugin unsandboxed with --disable-sandbox)',
    );
  }
  return found;
}

/** The sandbox's C helpers, built from native/seccomp with the addon. */
export type HelperName = 'plugvisor-seccomp-compile' | 'plugvisor-jail-exec';

/** Where a helper may be, most specific first: $PLUGVISOR_HELPER_DIR, then beside the addon. */
export function helperCandidates(name: HelperName): string[] {
  const list: string[] = [];
  if (process.env.PLUGVISOR_HELPER_DIR) list.push(join(process.env.PLUGVISOR_HELPER_DIR, name));
  list.push(join(nativeDir(), name));
  return list;
}

/** The first helper `name` found by {@link helperCandidates}; throws, saying where it looked, if there is none. */
export function findHelper(name: HelperName): string {
  for (const candidate of helperCandidates(name)) {
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      /* next */
    }
  }
  throw new Error(
    `cannot sandbox the plugin: ${name} is missing (looked for ${helperCandidates(name).join(', ')}); ${NATIVE_FIX}`,
  );
}
