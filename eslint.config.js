// Lint rules for the TypeScript: typescript-eslint's recommended type-aware
// rules (the ones that catch bugs: floating promises, unsafe any at
// boundaries, misused promises), run by `npm test` (scripts/test.js).
// Formatting is prettier's (.prettierrc.json), not eslint's.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/', 'src/protocol/gen/', 'clients/', 'native/', 'bench/results/', 'prebuilds/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // node:test's test() and describe() return promises the runner itself awaits.
      // The KVM layer defines its accessors on the prototype from a layout table
      // and declares them in an interface of the class's name (src/kvm/views.ts).
      '@typescript-eslint/no-unsafe-declaration-merging': 'off',
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] }] },
      ],
    },
  },
  {
    // Scripts and the packed package's fixtures are outside the TypeScript project.
    files: ['**/*.js', '**/*.cjs', '**/*.mjs', 'test/fixtures/package/*'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', require: 'readonly', __filename: 'readonly' },
    },
  },
  {
    // CommonJS is what these files demonstrate or need (a require()d package, node-gyp-build).
    files: ['**/*.cjs'],
    languageOptions: { globals: { exports: 'writable', module: 'writable' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
