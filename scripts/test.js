// The test command: builds, lints (typescript-eslint and prettier, so style
// holds without review), then runs every compiled test file with node's test
// runner. Tests are TypeScript under test/, compiled to dist/test by
// `npm run build`. Naming test files (`npm test -- ranges`) runs only those,
// and skips the lint.
import { readdirSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

function findTests(dir) {
  let found = [];
  let names;
  try {
    names = readdirSync(dir);
  } catch {
    return found;
  }
  for (const name of names.sort()) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) found = found.concat(findTests(full));
    else if (name.endsWith('.test.js')) found.push(full);
  }
  return found;
}

const build = spawnSync('npm', ['run', '--silent', 'build'], { stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);

const filter = process.argv.slice(2);
if (filter.length === 0) {
  const lint = spawnSync('npm', ['run', '--silent', 'lint'], { stdio: 'inherit' });
  if (lint.status !== 0) {
    console.error('lint failed: `npm run format` fixes what it can; the rest is named above');
    process.exit(lint.status ?? 1);
  }
}
let files = findTests('dist/test');
if (filter.length > 0) files = files.filter((f) => filter.some((word) => f.includes(word)));
if (files.length === 0) {
  console.error('no test files found under dist/test');
  process.exit(1);
}
const run = spawnSync(process.execPath, ['--test', '--test-concurrency=1', ...files], { stdio: 'inherit' });
process.exit(run.status ?? 1);
