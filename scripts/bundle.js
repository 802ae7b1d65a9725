// Runs after tsc: bundles into dist/bundle/ the two entry points that start a
// process — the `plugvisor` CLI, and the plugin SDK (`plugvisor/plugin`,
// which every TypeScript plugin process loads first).
//
// Why: node's ESM loader resolves, reads and compiles every module
// separately, and the host loads ~40 of them. On the benchmark machine that
// was ~90 ms of a 250 ms start-up (bench/README.md). One file cuts it to a
// single read and compile. The host library (`plugvisor`, dist/src/) stays
// unbundled.
import { build } from 'esbuild';

await build({
  entryPoints: {
    plugvisor: 'dist/src/cli/main.js',
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
