/**
 * How the benchmark's programs (bench/run.ts, bench/plugins/exit-loop.ts)
 * read their command lines: one argument at a time, an option taking the
 * argument after it as its value.
 */

/**
 * Calls `handle` with each argument of `argv` in turn. Its `value()` takes
 * the next argument as this one's value, and throws (naming the option)
 * when there is none.
 */
export function forEachArgument(argv: readonly string[], handle: (arg: string, value: () => string) => void): void {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    handle(arg, () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    });
  }
}
