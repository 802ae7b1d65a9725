// Runs after tsc: plugins and the CLI are executables.
import { chmodSync, readdirSync } from 'node:fs';
import path from 'node:path';

const executables = ['dist/bundle/plugvisor.cjs', 'dist/bundle/exec-plugin.js'];
for (const dir of ['dist/examples', 'dist/test/plugins', 'dist/bench/plugins']) {
  let names = [];
  try {
    names = readdirSync(dir);
  } catch {
    continue;
  }
  for (const name of names) if (name.endsWith('.js')) executables.push(path.join(dir, name));
}
for (const file of executables) {
  try {
    chmodSync(file, 0o755);
  } catch {
    /* not built (yet) */
  }
}
