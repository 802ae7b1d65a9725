/**
 * The flags for building a C plugin against the installed libcrosvm_plugin,
 * read from its pkg-config file so that the .pc (written by
 * clients/c/Makefile) stays the one place that says what they are. Users
 * without pkg-config get them from `plugvisor c-flags`.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { cLibraryPrefix } from '../native/locate.js';

/** The directory holding crosvm_plugin.pc, for PKG_CONFIG_PATH. */
export function pkgConfigDir(): string {
  return join(cLibraryPrefix(), 'lib', 'pkgconfig');
}

/**
 * `Cflags` and `Libs` of crosvm_plugin.pc, as `pkg-config --cflags --libs`
 * would print them. Only what the file uses is understood: `name=value`
 * variables, `${name}` references and the built-in `${pcfiledir}`.
 */
export function cLibraryFlags(): string {
  const pcFile = join(pkgConfigDir(), 'crosvm_plugin.pc');
  const variables = new Map<string, string>([['pcfiledir', dirname(pcFile)]]);
  const fields = new Map<string, string>();
  const expand = (text: string): string =>
    text.replace(/\$\{(\w+)\}/g, (_, name: string) => {
      const value = variables.get(name);
      if (value === undefined) throw new Error(`${pcFile}: unknown variable \${${name}}`);
      return value;
    });
  for (const line of readFileSync(pcFile, 'utf8').split('\n')) {
    const m = /^(\w+)\s*([=:])\s*(.*)$/.exec(line.trim());
    if (m === null) continue;
    const [, key, kind, value] = m as unknown as [string, string, string, string];
    // Paths like ${pcfiledir}/../.. are normalized, so the flags read well.
    const expanded = expand(value).replace(
      /(^|\s|-[IL]|-Wl,-rpath,)(\/\S*)/g,
      (_, lead: string, p: string) => lead + normalize(p),
    );
    if (kind === '=') variables.set(key, expanded);
    else fields.set(key, expanded);
  }
  return [fields.get('Cflags'), fields.get('Libs')].filter((f) => f !== undefined && f !== '').join(' ');
}
