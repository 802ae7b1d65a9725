/**
 * Where plugvisor is installed: the directory of its package.json. The code
 * runs from several places — dist/src/** as compiled by tsc, and the bundled
 * CLI in dist/bundle/ — so files that ship beside it (the native addon, the
 * seccomp tools, the default policy) are found from the package root, never
 * from a fixed number of `..` above the running file.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface Package {
  root: string;
  version: string;
}

function findPackage(start: string): Package {
  for (let dir = start; ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'plugvisor') return { root: dir, version: String(pkg.version) };
    } catch {
      /* no readable package.json here: keep looking */
    }
    if (dirname(dir) === dir) throw new Error(`cannot find the plugvisor package root above ${start}`);
  }
}

const found = findPackage(dirname(fileURLToPath(import.meta.url)));
export const PACKAGE_ROOT: string = found.root;
/** plugvisor's version, from the same package.json. */
export const PACKAGE_VERSION: string = found.version;
