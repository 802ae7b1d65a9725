// Runs after tsc: bundles into dist/bundle/ the entry points that start a
// thread or a process — the `plugvisor` CLI, the VCPU thread, the plugin SDK
// (`plugvisor/plugin`, which every TypeScript plugin process loads first),
// and `plugvisor exec`'s plugin — plus the guest toolkit (`plugvisor/guest`).
//
// Why: node's ESM loader resolves, reads and compiles every module
// separately, and the host loads ~40 of them — in the main thread and again
// in every VCPU thread. On the benchmark machine that was ~90 ms of a 250 ms
// start-up (bench/README.md). One file per thread cuts it to a single read
// and compile. The host library (`plugvisor`, dist/src/) stays unbundled.
//
// The two host bundles sit side by side because the host starts its VCPU
// threads from `new URL('./vcpu-worker.js', import.meta.url)`, which resolves
// next to whichever file is running: dist/src/host/ for the library,
// dist/bundle/ here.
import { build } from 'esbuild';

const common = {
  outdir: 'dist/bundle',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  logLevel: 'warning',
};

await build({
  ...common,
  entryPoints: {
    plugvisor: 'dist/src/cli/main.js',
    'vcpu-worker': 'dist/src/host/vcpu-worker.js',
    plugin: 'dist/src/plugin/index.js',
    'exec-plugin': 'dist/src/cli/exec-plugin.js',
  },
  // commander is CommonJS: its require() calls of node's built-ins need a
  // real `require` in an ES module.
  banner: { js: "import { createRequire as plugvisorCreateRequire } from 'node:module'; const require = plugvisorCreateRequire(import.meta.url);" },
});

// `plugvisor/guest` uses the SDK of `plugvisor/plugin` (./plugin.js beside
// it) instead of a copy of its own: a plugin imports both, and two copies
// would hand out the same object ids and fail each other's instanceof.
await build({
  ...common,
  entryPoints: { guest: 'dist/src/guest/index.js' },
  plugins: [{
    name: 'sdk-from-plugin-bundle',
    setup(b) {
      b.onResolve({ filter: /\/plugin\/index\.js$/ }, () => ({ path: './plugin.js', external: true }));
    },
  }],
});
