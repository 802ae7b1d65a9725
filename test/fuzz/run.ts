/**
 * The fuzz driver: runs the real `plugvisor` CLI on the fuzz plugin
 * (test/plugins/fuzz.ts) round after round until the time budget is spent,
 * alternating the sandbox modes, and judges each round from outside: the
 * host must end the round with exit 0 (no crash, no hang: a hard timeout
 * per round), log no error, and the plugin must report no finding.
 *
 * Used by the suite (test/fuzz.test.ts, seconds) and by `npm run fuzz`:
 *
 *   npm run fuzz -- [--minutes M] [--seed S] [--corpus DIR] [--round-seconds R] [--sandbox both|on|off]
 *
 * The corpus directory holds inputs as files (NAME.main.bin, NAME.vcpu.bin):
 * each round replays them first, and the driver adds one input per outcome
 * the plugin saw for the first time (errno and member, or a drop), and every
 * input behind a finding (finding-*.bin, with a .json beside it saying what).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { FuzzReport } from '../support/reports.js';
import { CLI, testPlugin } from '../support/run.js';

export interface FuzzOptions {
  /** Total time, in seconds. */
  seconds: number;
  seed: number;
  /** How long one VM (one host process) lives. */
  roundSeconds: number;
  sandboxModes: readonly boolean[];
  corpusDir?: string;
  /** Progress lines (the npm script prints them). */
  progress?: (line: string) => void;
}

export interface FuzzSummary {
  rounds: number;
  mainSent: Record<string, number>;
  mainAnswered: number;
  mainDropped: number;
  probes: number;
  fdsAttached: number;
  connectionsOpened: number;
  vcpuSent: Record<string, number>;
  vcpuAnswered: number;
  vcpuSilent: number;
  /** Everything that went wrong, one line each (empty on success). */
  findings: string[];
}

/** Runs the fuzz rounds; resolves to what was sent and what was found. */
export async function fuzz(options: FuzzOptions): Promise<FuzzSummary> {
  const summary: FuzzSummary = {
    rounds: 0,
    mainSent: {},
    mainAnswered: 0,
    mainDropped: 0,
    probes: 0,
    fdsAttached: 0,
    connectionsOpened: 0,
    vcpuSent: {},
    vcpuAnswered: 0,
    vcpuSilent: 0,
    findings: [],
  };
  if (options.corpusDir !== undefined) mkdirSync(options.corpusDir, { recursive: true });
  const until = Date.now() + options.seconds * 1000;
  for (let round = 0; Date.now() < until; round++) {
    const sandboxed = options.sandboxModes[round % options.sandboxModes.length];
    const seed = (options.seed + round * 0x9e3779b1) >>> 0;
    const budgetMs = Math.max(500, Math.min(options.roundSeconds * 1000, until - Date.now()));
    const result = await runRound(seed, budgetMs, sandboxed, readCorpus(options.corpusDir));
    summary.rounds++;
    const where = `round ${round} (seed ${seed}, ${sandboxed ? 'sandboxed' : 'unsandboxed'})`;
    for (const problem of result.problems) summary.findings.push(`${where}: ${problem}`);
    const report = result.report;
    if (report !== undefined) {
      add(summary.mainSent, report.main.sent);
      add(summary.vcpuSent, report.vcpu.sent);
      summary.mainAnswered += report.main.answered;
      summary.mainDropped += report.main.dropped;
      summary.probes += report.main.probes + report.vcpu.probes;
      summary.fdsAttached += report.main.fdsAttached;
      summary.connectionsOpened += report.main.connectionsOpened;
      summary.vcpuAnswered += report.vcpu.answered;
      summary.vcpuSilent += report.vcpu.silent;
      for (const f of report.findings) summary.findings.push(`${where}: ${f.what} [${f.kind}] ${f.hex.slice(0, 120)}`);
      if (options.corpusDir !== undefined) saveToCorpus(options.corpusDir, report, where);
    }
    options.progress?.(
      `${where}: ${describeRound(report)}${result.problems.length > 0 ? ` — ${result.problems.join('; ')}` : ''}`,
    );
  }
  return summary;
}

function add(total: Record<string, number>, part: Record<string, number>): void {
  for (const [key, n] of Object.entries(part)) total[key] = (total[key] ?? 0) + n;
}

function describeRound(report: FuzzReport | undefined): string {
  if (report === undefined) return 'no report';
  const main = Object.values(report.main.sent).reduce((a, b) => a + b, 0);
  const vcpu = Object.values(report.vcpu.sent).reduce((a, b) => a + b, 0);
  return `${main} main requests (${report.main.dropped} dropped), ${vcpu} VCPU requests, ${report.findings.length} findings`;
}

interface CorpusEntry {
  kind: 'main' | 'vcpu';
  hex: string;
}

function readCorpus(dir: string | undefined): CorpusEntry[] {
  if (dir === undefined || !existsSync(dir)) return [];
  const entries: CorpusEntry[] = [];
  for (const name of readdirSync(dir).sort()) {
    const kind = name.endsWith('.main.bin') ? 'main' : name.endsWith('.vcpu.bin') ? 'vcpu' : undefined;
    if (kind !== undefined) entries.push({ kind, hex: readFileSync(path.join(dir, name)).toString('hex') });
  }
  return entries;
}

function saveToCorpus(dir: string, report: FuzzReport, where: string): void {
  for (const input of report.novel) {
    const name = `outcome-${createHash('sha1').update(input.key).digest('hex').slice(0, 16)}.${input.kind}.bin`;
    const file = path.join(dir, name);
    if (!existsSync(file)) writeFileSync(file, Buffer.from(input.hex, 'hex'));
  }
  report.findings.forEach((f, i) => {
    const base = path.join(dir, `finding-${report.seed}-${i}`);
    const kind = f.kind.startsWith('vcpu') ? 'vcpu' : 'main';
    writeFileSync(`${base}.${kind}.bin`, Buffer.from(f.hex, 'hex'));
    writeFileSync(`${base}.json`, `${JSON.stringify({ where, ...f }, null, 2)}\n`);
  });
}

interface RoundResult {
  report: FuzzReport | undefined;
  problems: string[];
}

/** How long past its budget a round may take before the host counts as hung. */
const ROUND_GRACE_MS = 30_000;

function runRound(seed: number, budgetMs: number, sandboxed: boolean, corpus: CorpusEntry[]): Promise<RoundResult> {
  const argv = [CLI, 'run', '--plugin', testPlugin('fuzz')];
  if (!sandboxed) argv.push('--disable-sandbox');
  argv.push('--', String(seed), String(budgetMs));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    const hostErrors: string[] = [];
    let partial = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    // The host warns once per dropped connection: keep only its error lines.
    child.stderr.on('data', (d: Buffer) => {
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop()!;
      for (const line of lines)
        if (/^plugvisor: (error|.*uncaught|.*failed unexpectedly)/i.test(line) && hostErrors.length < 20) hostErrors.push(line);
    });
    child.stdin.on('error', () => {});
    child.stdin.end(corpus.map((entry) => JSON.stringify(entry)).join('\n'));
    const timer = setTimeout(() => child.kill('SIGKILL'), budgetMs + ROUND_GRACE_MS);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const problems: string[] = [];
      if (signal === 'SIGKILL') problems.push(`the host did not finish within ${budgetMs + ROUND_GRACE_MS} ms (killed)`);
      else if (code !== 0) problems.push(`the host exited with ${signal ?? code}`);
      problems.push(...hostErrors);
      let report: FuzzReport | undefined;
      try {
        report = JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as FuzzReport;
      } catch {
        problems.push(`no report from the plugin: ${JSON.stringify(stdout.slice(-500))}`);
      }
      if (report?.vmEnded) problems.push('the VM ended during the run (a VCPU was let go)');
      resolve({ report, problems });
    });
  });
}

/** `npm run fuzz`: parses its flags, fuzzes, prints the counts; exit 1 on any finding. */
async function main(argv: string[]): Promise<void> {
  const flag = (name: string, fallback: string): string => {
    const at = argv.indexOf(`--${name}`);
    return at >= 0 && argv[at + 1] !== undefined ? argv[at + 1] : fallback;
  };
  if (argv.includes('--help')) {
    process.stdout.write(
      'usage: npm run fuzz -- [--minutes 10] [--seed N] [--corpus DIR] [--round-seconds 60] [--sandbox both|on|off]\n',
    );
    return;
  }
  const sandbox = flag('sandbox', 'both');
  const modes = sandbox === 'on' ? [true] : sandbox === 'off' ? [false] : [false, true];
  const started = Date.now();
  const summary = await fuzz({
    seconds: Number(flag('minutes', '10')) * 60,
    seed: Number(flag('seed', String(Date.now() % 2 ** 31))),
    roundSeconds: Number(flag('round-seconds', '60')),
    sandboxModes: modes,
    corpusDir: flag('corpus', 'fuzz-corpus'),
    progress: (line) => process.stdout.write(`${line}\n`),
  });
  const minutes = ((Date.now() - started) / 60_000).toFixed(1);
  process.stdout.write(
    `\nfuzzed for ${minutes} min, ${summary.rounds} rounds\n${JSON.stringify({ ...summary, findings: summary.findings.length }, null, 2)}\n`,
  );
  for (const line of summary.findings) process.stdout.write(`FINDING ${line}\n`);
  process.exitCode = summary.findings.length > 0 ? 1 : 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main(process.argv.slice(2));
