/**
 * Where plugvisor is installed: the directory of its package.json. The code
 * runs from several places — dist/src/** as compiled by tsc, and the bundled
 * CLI in dist/bundle/ — so files that ship beside it (the native addon, the
 * seccomp tools, the default policy) are found from the package root, never
 * from a fixed number of `..` above the running file.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: unknown };
      if (pkg.name === 'plugvisor') return dir;
    } catch { /* no readable package.json here: keep looking */ }
    if (path.dirname(dir) === dir) throw new Error(`cannot find the plugvisor package root above ${start}`);
  }
}

export const PACKAGE_ROOT: string = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));
