// Runs after tsc: bundles into dist/bundle/ the three entry points that start
// a thread — the `plugvisor` CLI, the VCPU thread, and the plugin SDK
// (`plugvisor/plugin`, which every TypeScript plugin process loads first).
//
// Why: node's ESM loader resolves, reads and compiles every module
// separately, and the host loads ~40 of them — in the main thread and again
// in every VCPU thread. On the benchmark machine that was ~90 ms of a 250 ms
// start-up (bench/README.md). One file per thread cuts it to a single read
// and compile. The host library (`plugvisor`, dist/src/) stays unbundled.
//
// The two bundles sit side by side because the host starts its VCPU threads
// from `new URL('./vcpu-worker.js', import.meta.url)`, which resolves next to
// whichever file is running: dist/src/host/ for the library, dist/bundle/ here.
import { build } from 'esbuild';

await build({
  entryPoints: {
    plugvisor: 'dist/src/cli/main.js',
    'vcpu-worker': 'dist/src/host/vcpu-worker.js',
    plugin: 'dist/src/plugin/index.js',
  },
  outdir: 'dist/bundle',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  logLevel: 'warning',
  // commander is CommonJS: its require() calls of node's built-ins need a
  // real `require` in an ES module.
  banner: { js: "import { createRequire as plugvisorCreateRequire } from 'node:module'; const require = plugvisorCreateRequire(import.meta.url);" },
});
