/**
 * crosvm's list files (--plugin-mount-file, --plugin-gid-map-file): one entry
 * a line, in the form of the matching option; '#' starts a comment anywhere
 * on a line; blank lines are skipped and entries are trimmed.
 */
import { readFileSync } from 'node:fs';

/** Parses every entry of `file`; an error names the file and line. */
export function parseListFile<T>(file: string, option: string, parse: (entry: string) => T): T[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${option} ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  const entries: T[] = [];
  text.split('\n').forEach((line, index) => {
    const entry = line.split('#', 1)[0].trim();
    if (entry === '') return;
    try {
      entries.push(parse(entry));
    } catch (e) {
      throw new Error(`${option} ${file}:${index + 1}: ${e instanceof Error ? e.message : String(e)}`);
    }
  });
  return entries;
}
