// The result of a run: the targets it is judged by, a Markdown table for the README, and the files it is kept in.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ActionStart } from './action-start.js';
import type { InBroker } from './broker-metrics.js';
import type { CryptoLimit } from './crypto-limit.js';
import type { PhaseResult } from './phase.js';

export interface Environment {
  cpus: number;
  cpuModel: string;
  node: string;
  platform: string;
  commit: string;
  /** Paths that differ from the commit (modified or new; at most 20), the results directory aside. */
  changed: string[];
}

export interface Target {
  name: string;
  value: string;
  status: 'PASS' | 'FAIL' | 'n/a';
}

export interface RunResult {
  schema: 1;
  startedAt: string;
  finishedAt: string;
  options: Record<string, unknown>;
  environment: Environment;
  broker: {
    database: string;
    logLevel: string;
    rateLimitPerMinute: number;
    rateLimitBurst: number;
    /** BENCH_BROKER_ENV: what an experiment added to every server's environment. */
    experimentEnv?: Record<string, string>;
  };
  cryptoLimit?: CryptoLimit;
  phases: PhaseResult[];
  /** The straightforward jose + SQLite handler (bench/reference-broker.ts), measured in the same rounds. */
  reference?: PhaseResult;
  ratios: {
    exchangeOverLimit?: number;
    largeOverSmall?: number;
    referenceOverLimit?: number;
    exchangeOverReference?: number;
  };
  action?: ActionStart;
  targets: Target[];
  /** Anything that makes the run itself invalid; the exit code is 1 when there is one. */
  problems: string[];
}

const f = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

const verdict = (pass: boolean): Target['status'] => (pass ? 'PASS' : 'FAIL');

export function evaluateTargets(run: Omit<RunResult, 'targets'>, profiled: boolean): Target[] {
  const [small, large] = run.phases;
  const targets: Target[] = [];
  const sqlite = run.broker.database === 'sqlite';
  if (small && run.cryptoLimit) {
    const ratio = run.ratios.exchangeOverLimit!;
    targets.push({
      name: `exchanges/s ≥ 0.50 × raw limit (SQLite${profiled ? ', broker profiled' : ''})`,
      value: `${f(ratio, 2)} (${f(small.load.exchangesPerSecond)} / ${f(run.cryptoLimit.pairsPerSecond)})`,
      status: sqlite ? verdict(ratio >= 0.5) : 'n/a',
    });
  }
  if (small && large) {
    const ratio = run.ratios.largeOverSmall!;
    targets.push({
      name: `throughput at ${f(large.policies)} policies ≥ 0.90 × at ${f(small.policies)}`,
      value: `${f(ratio, 3)} (${f(large.load.exchangesPerSecond)} / ${f(small.load.exchangesPerSecond)})`,
      status: verdict(ratio >= 0.9),
    });
    // rssMb is in MiB (2^20 bytes); the target's 250 MB is 250 × 10^6 bytes.
    const peakMb = (large.rssMb.peak * 2 ** 20) / 1e6;
    targets.push({
      name: `broker RSS at ${f(large.policies)} policies ≤ 250 MB`,
      value: `${f(peakMb, 1)} MB peak (${f(large.rssMb.peak, 1)} MiB)`,
      status: verdict(peakMb <= 250),
    });
  }
  for (const phase of run.phases) {
    const failed = phase.rounds.reduce((sum, r) => sum + r.load.errors + r.load.non2xx, 0);
    // Judged on the worst round, not the median one: a p99 holds only if it holds in every round.
    const p99 = worstP99(phase);
    targets.push({
      name: `p99 ≤ 25 ms at 64 connections, zero errors (${f(phase.policies)} policies)`,
      value: `${f(p99, 1)} ms in the worst round at ${run.options.connections}, ${failed} errors`,
      status: run.options.connections === 64 ? verdict(p99 <= 25 && failed === 0) : 'n/a',
    });
  }
  if (run.action) {
    targets.push({
      name: "action start ≤ 1.5 × bare `node -e ''`",
      value: `${f(run.action.ratio, 2)} (${f(run.action.action.meanMs)} / ${f(run.action.bareNode.meanMs)} ms)`,
      status: verdict(run.action.ratio <= 1.5),
    });
  }
  return targets;
}

/** A figure of the broker's own timing of a round, or a dash where there is none (the reference handler). */
function inBroker(round: { inBroker?: InBroker }, show: (b: InBroker) => string): string {
  return round.inBroker ? show(round.inBroker) : '–';
}

/** The highest p99 of a phase's measured rounds. */
function worstP99(phase: PhaseResult): number {
  return Math.max(...phase.rounds.map((r) => r.load.latencyMs.p99));
}

export function markdown(run: RunResult): string {
  const env = run.environment;
  const lines = [
    `### Token-exchange benchmark (${run.broker.database})`,
    '',
    `${run.startedAt.slice(0, 10)} · commit ${env.commit.slice(0, 10)}` +
      `${env.changed.length ? ` + changes to ${env.changed.join(', ')}` : ''} · ` +
      `Node ${env.node} · ${env.cpus} × ${env.cpuModel} · ${env.platform}. The broker and the load generator ` +
      `(${run.options.load}, ${run.options.connections} keep-alive connections, its own process) share these CPUs; ` +
      'the action opens a new connection for each exchange, which costs more per exchange on both ends. ' +
      `${run.options.rounds} round(s) of ${run.options.durationSeconds} s per phase, alternating between the phases, each round starting with the next phase. Broker: ` +
      `\`LOG_LEVEL=${run.broker.logLevel}\`, rate limits raised to ${f(run.broker.rateLimitPerMinute)}/min ` +
      `(burst ${f(run.broker.rateLimitBurst)}) so that they never refuse.`,
    ...(run.broker.experimentEnv
      ? [
          '',
          `**Experiment** (not kept in bench/results): every server ran with \`BENCH_BROKER_ENV=${JSON.stringify(run.broker.experimentEnv)}\`.`,
        ]
      : []),
    '',
  ];
  const columns = [...run.phases, ...(run.reference ? [run.reference] : [])];
  if (columns.length > 0) {
    const col = (pick: (p: PhaseResult) => string) => columns.map(pick).join(' | ');
    lines.push(
      `| | ${col((p) => (p === run.reference ? `reference handler, ${f(p.policies)} policies` : `${f(p.policies)} policies`))} |`,
      `|---|${columns.map(() => '---:').join('|')}|`,
      `| exchanges/s, median round | ${col((p) => f(p.load.exchangesPerSecond))} |`,
      `| exchanges/s, each round in order | ${col((p) => p.rounds.map((r) => f(r.load.exchangesPerSecond)).join(' · '))} |`,
      `| latency p50 / p99 (ms), median round | ${col((p) => `${f(p.load.latencyMs.p50, 1)} / ${f(p.load.latencyMs.p99, 1)}`)} |`,
      `| latency p99 (ms), each round in order | ${col((p) => p.rounds.map((r) => f(r.load.latencyMs.p99, 1)).join(' · '))} |`,
      `| latency mean (ms): at the load generator / inside the broker, median round | ${col((p) => `${f(p.load.latencyMs.mean, 1)} / ${inBroker(p, (b) => f(b.meanMs, 1))}`)} |`,
      `| answered within 25 ms inside the broker, each round in order | ${col((p) => p.rounds.map((r) => inBroker(r, (b) => `${f(b.within25Ms * 100, 1)} %`)).join(' · '))} |`,
      `| garbage collection inside the broker per 1,000 exchanges: ms of pauses (major collections), median round | ${col((p) => inBroker(p, (b) => `${f(b.gcPerThousand.ms, 1)} (${f(b.gcPerThousand.major, 2)})`))} |`,
      `| exchanges measured (s) | ${col((p) => `${f(p.load.ok)} (${f(p.load.seconds, 1)})`)} |`,
      `| errors / non-2xx | ${col((p) => `${p.load.errors} / ${p.load.non2xx}`)} |`,
      `| broker CPU (% of a core) | ${col((p) => f(p.brokerCpuPercent))} |`,
      `| load generator CPU (% of a core) | ${col((p) => f(p.load.loadGeneratorCpuPercent))} |`,
      `| broker RSS idle / peak / after (MiB) | ${col((p) => `${f(p.rssMb.idle)} / ${f(p.rssMb.peak)} / ${f(p.rssMb.after)}`)} |`,
      '',
    );
    if (run.phases.some((p) => p.rounds.some((r) => r.inBroker))) {
      lines.push(
        "Inside the broker: from its first middleware until the answer is built, by the broker's own " +
          '`http_request_duration_seconds` (successful exchanges), read from `/metrics` before and after each round. ' +
          "The rest of the load generator's latency passes outside it: in the kernel, in the load generator, " +
          'and waiting for the broker to read the request and to write the answer. Garbage collection is ' +
          '`nodejs_gc_duration_seconds` of every kind, read the same way: its pauses are wall time, which a busy ' +
          'machine stretches, while the count of major collections follows what the broker keeps alive.',
        '',
      );
    }
  }
  if (run.cryptoLimit) {
    const c = run.cryptoLimit;
    const measured = c.measurements
      ? ` (mean of ${c.measurements.map((m) => f(m)).join(' before and ')} after the phases)`
      : '';
    const ratio = run.ratios.exchangeOverLimit;
    lines.push(
      `Raw limit, one core, \`node:crypto\`: ${f(c.pairsPerSecond)} RS256-verify + ES256-sign pairs/s${measured} ` +
        `for a ${f(c.oidcTokenBytes)}-byte GitHub token and a ${f(c.accessTokenSigningInputBytes)}-byte access ` +
        `token.${ratio === undefined ? '' : ` **exchange/limit = ${f(ratio, 2)}**.`}`,
    );
  }
  const { referenceOverLimit, exchangeOverReference } = run.ratios;
  if (referenceOverLimit !== undefined) {
    lines.push(
      `The straightforward jose + SQLite handler (\`bench/reference-broker.ts\`) in the same rounds: ` +
        `reference/limit = ${f(referenceOverLimit, 2)}` +
        `${exchangeOverReference === undefined ? '' : `; **broker/reference = ${f(exchangeOverReference, 2)}**`}.`,
    );
  }
  if (run.ratios.largeOverSmall !== undefined) {
    lines.push(
      `Throughput ${f(run.phases[1]!.policies)} / ${f(run.phases[0]!.policies)} policies = **${f(run.ratios.largeOverSmall, 3)}**.`,
    );
  }
  if (run.action) {
    const a = run.action;
    const sizes = Object.entries(a.bundleBytes)
      .map(([file, bytes]) => `\`${file}\` ${f(bytes)} B`)
      .join(', ');
    lines.push(
      `Bundled action start-to-exit (fake GitHub and broker on loopback), mean of ${a.runs}: ` +
        `${f(a.action.meanMs)} ms vs \`node -e ''\` ${f(a.bareNode.meanMs)} ms → **${f(a.ratio, 2)}×** ` +
        `(first output at ${f(a.firstOutputMs)} ms, last at ${f(a.lastOutputMs)} ms). ` +
        `Bundles: ${sizes}.`,
    );
  }
  lines.push('', '| target | value | |', '|---|---|---|');
  for (const t of run.targets) lines.push(`| ${t.name} | ${t.value} | ${t.status} |`);
  const profiled = run.phases.find((p) => p.profile);
  if (profiled?.profile) {
    const p = profiled.profile;
    lines.push(
      '',
      `CPU profile of the broker, ${f(profiled.policies)} policies (${p.window}, ${f(p.sampledMs)} ms sampled, \`${p.file}\`), top self time:`,
      '',
      '| self % | function | location |',
      '|---:|---|---|',
      ...p.top.map((e) => `| ${f(e.selfPercent, 1)} | \`${e.function}\` | ${e.location} |`),
      '',
      `By area: ${p.byArea.map((a) => `${a.area} ${f(a.selfPercent, 1)} %`).join(' · ')}`,
    );
  }
  if (run.problems.length > 0)
    lines.push('', '**The run is invalid:**', ...run.problems.map((p) => `- ${p}`));
  return `${lines.join('\n')}\n`;
}

/** Rounds fractions so that the committed JSON stays short. */
const compact = (_key: string, value: unknown) =>
  typeof value === 'number' && !Number.isInteger(value) ? Math.round(value * 100) / 100 : value;

export async function writeResults(dir: string, run: RunResult, table: string): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const stamp = run.startedAt.replace(/[:.]/g, '-').replace(/-\d{3}Z$/, 'Z');
  const json = `${JSON.stringify(run, compact, 2)}\n`;
  const files = [join(dir, `${stamp}-${run.broker.database}.json`), join(dir, 'latest.json')];
  await Promise.all(files.map((file) => writeFile(file, json)));
  const md = join(dir, 'latest.md');
  await writeFile(md, table);
  return [...files, md];
}
