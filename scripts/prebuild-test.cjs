// node-gyp-build's check (package.json "prebuild.test") that the prebuilt
// native parts work on this machine; if it throws, `npm install` builds them
// from source instead. It runs in the package directory.
const { spawnSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');
const nodeGypBuild = require('node-gyp-build');

const root = process.cwd();
const addon = nodeGypBuild.path(root);
if (typeof require(addon).constants !== 'object') throw new Error(`${addon} is not plugvisor's addon`);

const dir = path.dirname(addon);
function check(name, args) {
  const run = spawnSync(path.join(dir, name), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  if (run.error !== undefined || run.status !== 0) {
    throw new Error(`${name} does not run here: ${run.error?.message ?? run.stderr.toString().trim()}`);
  }
}
check('plugvisor-seccomp-compile', [path.join(root, 'src/sandbox/plugin-seccomp.policy')]);
check('plugvisor-jail-exec', ['--nofile', '1024', '--keep-fds-below', '3', '--', process.execPath, '--version']);
for (const file of ['include/crosvm.h', 'lib/libcrosvm_plugin.so', 'lib/pkgconfig/crosvm_plugin.pc']) {
  if (!existsSync(path.join(dir, file))) throw new Error(`${path.join(dir, file)} is missing`);
}
