// Runs after tsc: bundles into dist/bundle/ the entry points that start a
// process — the `plugvisor` CLI, the plugin SDK (`plugvisor/plugin`, which
// every TypeScript plugin process loads first) and `plugvisor exec`'s plugin
// — plus the SDK once more as CommonJS, for plugins that `require()` it, and
// the guest toolkit (`plugvisor/guest`).
//
// Why: node's ESM loader resolves, reads and compiles every module
// separately, and the host loads ~40 of them. On the benchmark machine that
// was ~90 ms of a 250 ms start-up (bench/README.md). One file cuts it to a
// single read and compile. The host library (`plugvisor`, dist/src/) stays
// unbundled. A bundle needs nothing from node_modules at run time, which is
// also what lets a jailed plugin outside any package load the SDK.
//
// Source maps (with the TypeScript sources inlined, see tsconfig.json) go
// beside each bundle: `node --enable-source-maps` then reports src/ lines.
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';

const common = {
  outdir: 'dist/bundle',
  bundle: true,
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  logLevel: 'warning',
};

// A CommonJS bundle of ES modules: the sources find the package (and the
// addon) from their own file's URL, which CommonJS gives as __filename.
const commonJs = {
  outExtension: { '.js': '.cjs' },
  format: 'cjs',
  define: { 'import.meta.url': 'plugvisorModuleUrl' },
  banner: { js: "const plugvisorModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
};

// The host's bundle is CommonJS and minified: its code is resident for a
// VM's whole life. Node's ES module loader costs an entry point ~1.1 MiB of
// RSS that a CommonJS one does not pay, and minifying saves 0.3-0.4 MiB more
// (bench/README.md, memory); the source map still names src/ lines. The SDK
// a user's plugin loads is not minified, so that a plugin's own stack traces
// read plainly.
//
// node:child_process is loaded at its first use, not when the bundle starts:
// the CLI starts its plugin and the sandbox's helpers through the addon
// (src/child.ts), and loading it (with net and stream, which it brings) was
// ~2 ms of every start. commander requires it at load for executable
// subcommands, which the CLI has none of; --plugin-gid-map spawns a
// user-namespace holder with it. An import of any other name from it fails
// the build here.
const lazyChildProcess = {
  name: 'lazy-child-process',
  setup(b) {
    b.onResolve({ filter: /^(node:)?child_process$/ }, (args) =>
      args.namespace === 'lazy-child-process'
        ? { path: 'node:child_process', external: true }
        : { path: 'child_process', namespace: 'lazy-child-process' },
    );
    b.onLoad({ filter: /.*/, namespace: 'lazy-child-process' }, () => ({
      contents: [
        'let loaded;',
        "const load = () => (loaded ??= require('node:child_process'));",
        'export const spawn = (...args) => load().spawn(...args);',
      ].join('\n'),
      loader: 'js',
      resolveDir: '.',
    }));
  },
};

await build({
  ...common,
  ...commonJs,
  entryPoints: { host: 'dist/src/cli/main.js' },
  minify: true,
  plugins: [lazyChildProcess],
});

// The `plugvisor` command itself: a few lines that run host.cjs through a V8
// code cache (src/cli/launch.ts says why). The caches of the bundle just
// replaced are stale: remove them.
await build({
  ...common,
  ...commonJs,
  entryPoints: { plugvisor: 'dist/src/cli/launch.js' },
});
for (const name of readdirSync('dist/bundle')) {
  if (/^host\.cjs\..*\.cache/.test(name)) rmSync(path.join('dist/bundle', name));
}
// launch.ts reads the bundle as latin1, which is only right for ASCII.
if (readFileSync('dist/bundle/host.cjs').some((byte) => byte > 0x7f)) {
  throw new Error('dist/bundle/host.cjs is not ASCII: src/cli/launch.ts reads it as latin1');
}

// commander and node-gyp-build are CommonJS: in an ES module their require()
// calls need a real `require`.
const esmRequire = {
  js: "import { createRequire as plugvisorCreateRequire } from 'node:module'; const require = plugvisorCreateRequire(import.meta.url);",
};

await build({
  ...common,
  entryPoints: {
    plugin: 'dist/src/plugin/index.js',
    'exec-plugin': 'dist/src/cli/exec-plugin.js',
  },
  format: 'esm',
  banner: esmRequire,
});

await build({
  ...common,
  entryPoints: { plugin: 'dist/src/plugin/index.js' },
  ...commonJs,
});

// `plugvisor/guest` uses the SDK of `plugvisor/plugin` (./plugin.js beside
// it) instead of a copy of its own: a plugin imports both, and two copies
// would hand out the same object ids and fail each other's instanceof.
await build({
  ...common,
  entryPoints: { guest: 'dist/src/guest/index.js' },
  format: 'esm',
  banner: esmRequire,
  plugins: [
    {
      name: 'sdk-from-plugin-bundle',
      setup(b) {
        b.onResolve({ filter: /\/plugin\/index\.js$/ }, () => ({ path: './plugin.js', external: true }));
      },
    },
  ],
});
