// `npm pack`'s prepack step: the prebuilt native parts for this platform, in
// prebuilds/<platform>-<arch>/ where node-gyp-build finds them. prebuildify
// rebuilds everything binding.gyp builds and stores the addon as
// plugvisor.node (N-API: one build serves every Node version); the rest of
// the set — the sandbox helpers and the C client library's prefix —
// is copied beside it from the same build, stripped like the addon.
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const target = path.join('prebuilds', `${process.platform}-${process.arch}`);
rmSync(target, { recursive: true, force: true });
execFileSync(process.execPath, [require.resolve('prebuildify/bin.js'), '--napi', '--strip'], { stdio: 'inherit' });

const built = path.join('build', 'Release');
// prebuildify moves the addon out of build/Release; a copy goes back, so that
// this checkout goes on loading its own build (node-gyp-build prefers it).
cpSync(path.join(target, 'plugvisor.node'), path.join(built, 'plugvisor.node'));
const parts = [
  ['plugvisor-jail-exec', '--strip-all'],
  ['plugvisor-seccomp-compile', '--strip-all'],
  ['include/crosvm.h', undefined],
  ['lib/libcrosvm_plugin.so', '--strip-unneeded'],
  ['lib/pkgconfig/crosvm_plugin.pc', undefined],
];
for (const [file, strip] of parts) {
  const dest = path.join(target, file);
  mkdirSync(path.dirname(dest), { recursive: true });
  cpSync(path.join(built, file), dest);
  if (strip !== undefined) {
    execFileSync('strip', [strip, dest]);
    chmodSync(dest, 0o755);
  }
}
