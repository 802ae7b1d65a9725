// npm's install step for plugvisor. node-gyp-build does the work, as for any
// prebuildify package: when the prebuilt native parts in prebuilds/ work on
// this machine (scripts/prebuild-test.cjs checks them), nothing is built;
// otherwise `node-gyp rebuild` builds them from source into build/Release/.
// This wrapper only turns a failed build into one line that says what to
// install, after node-gyp's own output.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const run = spawnSync(process.execPath, [require.resolve('node-gyp-build/bin.js')], { stdio: 'inherit' });
if (run.status === 0) process.exit(0);

function onPath(name) {
  return (process.env.PATH ?? '').split(':').some((dir) => {
    try {
      return dir !== '' && statSync(path.join(dir, name)).isFile();
    } catch {
      return false;
    }
  });
}

// Each Debian package a build from source needs (src/native/locate.ts names
// the same ones), with something that shows it is there.
const requirements = [
  ['build-essential', () => onPath('cc') && onPath('make')],
  ['python3', () => onPath('python3')],
  ['protobuf-c-compiler', () => onPath('protoc-c')],
  ['libprotobuf-c-dev', () => existsSync('/usr/include/protobuf-c/protobuf-c.h')],
  ['libseccomp-dev', () => existsSync('/usr/include/seccomp.h')],
];
const missing = requirements.filter(([, present]) => !present()).map(([name]) => name);
console.error(
  `plugvisor: no prebuilt native parts work on this machine (${process.platform}-${process.arch}) and building them from source failed` +
    (missing.length > 0 ? ` (missing: ${missing.join(' ')})` : '') +
    `; on Debian/Ubuntu install ${requirements.map(([name]) => name).join(' ')} (apt-get install), then run \`npm rebuild plugvisor\``,
);
process.exit(run.status ?? 1);
