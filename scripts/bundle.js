// Runs after tsc: bundles the `plugvisor` CLI and the VCPU thread into one
// file each, in dist/bin/.
//
// Why: node's ESM loader resolves, reads and compiles every module
// separately, and the host loads ~40 of them — in the main thread and again
// in every VCPU thread. On the benchmark machine that was ~90 ms of a 250 ms
// start-up (bench/README.md). One file per thread cuts it to a single read
// and compile. The library (dist/src/) stays unbundled for `import`.
//
// The two bundles sit side by side because the host starts its VCPU threads
// from `new URL('./vcpu-worker.js', import.meta.url)`, which resolves next to
// whichever file is running: dist/src/host/ for the library, dist/bin/ here.
import { build } from 'esbuild';

await build({
  entryPoints: {
    plugvisor: 'dist/src/cli/main.js',
    'vcpu-worker': 'dist/src/host/vcpu-worker.js',
  },
  outdir: 'dist/bin',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  logLevel: 'warning',
  // commander is CommonJS: its require() calls of node's built-ins need a
  // real `require` in an ES module.
  banner: { js: "import { createRequire as plugvisorCreateRequire } from 'node:module'; const require = plugvisorCreateRequire(import.meta.url);" },
});
