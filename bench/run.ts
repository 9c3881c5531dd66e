// `npm run bench`: raw crypto limit, exchange phases at 1,000 and 100,000 policies, action start, report.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { cpus, platform, release } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startLocalIssuer } from '../test/support/local-issuer.js';
import { type ActionStart, measureActionStart } from './action-start.js';
import { experimentEnv } from './broker-process.js';
import { type CryptoLimit, measureCryptoLimit } from './crypto-limit.js';
import { type DatabaseServer, startDatabaseServer } from './database.js';
import { OptionsError, parseOptions, USAGE } from './options.js';
import {
  finishPhase,
  LOG_LEVEL,
  measureRound,
  type PhaseResult,
  type PhaseSpec,
  type PreparedPhase,
  preparePhase,
  RATE_LIMIT,
} from './phase.js';
import { type Environment, evaluateTargets, markdown, type RunResult, writeResults } from './report.js';
import { AUDIENCE } from './setup.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

const say = (text: string) =>
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${text}\n`);

function git(args: string[]): string {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' });
  } catch {
    return '';
  }
}

function environment(): Environment {
  const cores = cpus();
  return {
    cpus: cores.length,
    cpuModel: cores[0]?.model.trim() ?? 'unknown',
    node: process.version,
    platform: `${platform()} ${release()}`,
    commit: git(['rev-parse', 'HEAD']).trim() || 'unknown',
    changed: git(['status', '--porcelain', '--', '.', ':!bench/results'])
      .split('\n')
      .filter(Boolean)
      .map((line) => line.slice(3))
      .slice(0, 20),
  };
}

const describe = (spec: PhaseSpec) =>
  spec.server === 'broker' ? `${spec.policies} policies` : `reference handler, ${spec.policies} policies`;

async function main(): Promise<number> {
  let options: ReturnType<typeof parseOptions>;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof OptionsError)) throw error;
    process.stderr.write(`error: ${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (options.help) {
    process.stdout.write(USAGE);
    return 0;
  }

  const startedAt = new Date().toISOString();
  // Read now, right after the build: files edited while the bench runs are not what it measures.
  const env = environment();
  const tmp = join(ROOT, 'bench/.tmp', startedAt.replace(/[:.]/g, '-'));
  await mkdir(join(tmp, 'profiles'), { recursive: true });
  const problems: string[] = [];
  const phases: PhaseResult[] = [];
  let cryptoLimit: CryptoLimit | undefined;
  let action: ActionStart | undefined;
  let reference: PhaseResult | undefined;

  const issuer = await startLocalIssuer({ audience: AUDIENCE });
  let db: DatabaseServer | undefined;
  const interrupted = () => {
    say('interrupted; stopping the database server');
    void (db?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  try {
    say(`database: ${options.db}`);
    db = await startDatabaseServer(options.db, tmp, ROOT);
    say('raw crypto limit (one core)');
    const limitSeconds = options.quick ? 1 : 3;
    const before = await measureCryptoLimit(ROOT, issuer, limitSeconds);
    cryptoLimit = before;
    say(`  ${Math.round(before.pairsPerSecond)} verify+sign pairs/s`);

    const specs: PhaseSpec[] = [1_000, ...(options.skip100k ? [] : [options.largePolicies])].map(
      (policies, i) => ({
        label: policies >= 1000 ? `${policies / 1000}k` : String(policies),
        server: 'broker',
        policies,
        durationSeconds: options.durationSeconds,
        connections: options.connections,
        load: options.load,
        warmUpTokens: options.quick ? 2000 : 10_000,
        profile: i === 0 && options.profile,
      }),
    );
    // The yardstick is a SQLite handler: it compares with the broker on SQLite only.
    if (!options.skipReference && options.db === 'sqlite') {
      specs.push({ ...specs[0]!, label: 'reference', server: 'reference', profile: false });
    }
    const prepared: PreparedPhase[] = [];
    try {
      for (const spec of specs) {
        say(`phase: ${describe(spec)}${spec.profile ? ' (under --cpu-prof)' : ''}: setup and warm-up`);
        const phase = await preparePhase(spec, {
          root: ROOT,
          tmp,
          db,
          issuer,
          keyEncryptionKey: randomBytes(32).toString('hex'),
        });
        prepared.push(phase);
        say(
          `  ${spec.server === 'broker' ? `${phase.policyInsertSeconds.toFixed(1)} s to insert the policies; ` : ''}` +
            `warm-up ${Math.round(phase.warmUp.exchangesPerSecond)}/s`,
        );
      }
      // Rounds alternate between the phases, so that the machine's drift over minutes falls on all alike, and
      // each round starts with the next phase, so that no phase always follows the same one.
      for (let round = 1; round <= options.rounds; round++) {
        const shift = (round - 1) % prepared.length;
        for (const phase of [...prepared.slice(shift), ...prepared.slice(0, shift)]) {
          const r = await measureRound(phase);
          say(
            `  round ${round}, ${describe(phase.spec)}: ${Math.round(r.load.exchangesPerSecond)} exchanges/s, ` +
              `p99 ${r.load.latencyMs.p99.toFixed(1)} ms`,
          );
        }
      }
    } finally {
      // Every broker is stopped, even after a failure; a phase that could not be summarised (it has no round
      // when a round failed) is a problem of the run, and never hides the error that stopped it.
      for (const phase of prepared) {
        const result = await finishPhase(phase).catch((error: Error) => {
          problems.push(`${describe(phase.spec)}: ${error.message}`);
          return undefined;
        });
        if (!result) continue;
        if (phase.spec.server === 'broker') phases.push(result);
        else reference = result;
        problems.push(...result.problems);
        say(
          `${describe(phase.spec)}, median round: ${Math.round(result.load.exchangesPerSecond)} exchanges/s, ` +
            `p99 ${result.load.latencyMs.p99.toFixed(1)} ms, RSS peak ${result.rssMb.peak} MiB`,
        );
        for (const note of result.notes) say(`  note: ${note}`);
      }
    }
    await db.stop();
    // Measured again after the phases: this machine's speed drifts, and the limit is the mean of the two.
    const after = await measureCryptoLimit(ROOT, issuer, limitSeconds);
    say(`raw crypto limit again: ${Math.round(after.pairsPerSecond)} pairs/s`);
    cryptoLimit = {
      ...before,
      pairsPerSecond: (before.pairsPerSecond + after.pairsPerSecond) / 2,
      measurements: [before.pairsPerSecond, after.pairsPerSecond],
    };

    if (!options.skipAction) {
      say(`bundled action start, ${options.actionRuns} runs`);
      action = await measureActionStart(ROOT, options.actionRuns);
    }
  } catch (error) {
    problems.push(`harness: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    process.off('SIGINT', interrupted);
    await db?.stop().catch((error: Error) => problems.push(`stopping the database: ${error.message}`));
    await issuer.close();
  }

  const experiment = experimentEnv();
  const isExperiment = Object.keys(experiment).length > 0;
  const [small, large] = phases;
  const partial: Omit<RunResult, 'targets'> = {
    schema: 1,
    startedAt,
    finishedAt: new Date().toISOString(),
    options: { ...options, help: undefined },
    environment: env,
    broker: {
      database: options.db,
      logLevel: experiment.LOG_LEVEL ?? LOG_LEVEL,
      rateLimitPerMinute: Number(experiment.BROKER_RATE_LIMIT_PER_MINUTE ?? RATE_LIMIT.perMinute),
      rateLimitBurst: Number(experiment.BROKER_RATE_LIMIT_BURST ?? RATE_LIMIT.burst),
      ...(isExperiment ? { experimentEnv: experiment } : {}),
    },
    cryptoLimit,
    phases,
    reference,
    ratios: {
      exchangeOverLimit:
        small && cryptoLimit ? small.load.exchangesPerSecond / cryptoLimit.pairsPerSecond : undefined,
      largeOverSmall:
        small && large ? large.load.exchangesPerSecond / small.load.exchangesPerSecond : undefined,
      referenceOverLimit:
        reference && cryptoLimit ? reference.load.exchangesPerSecond / cryptoLimit.pairsPerSecond : undefined,
      exchangeOverReference:
        small && reference ? small.load.exchangesPerSecond / reference.load.exchangesPerSecond : undefined,
    },
    action,
    problems,
  };
  const run: RunResult = { ...partial, targets: evaluateTargets(partial, options.profile) };
  const table = markdown(run);
  process.stdout.write(`\n${table}`);
  // Quick runs and experiments are kept apart from the results the README reports.
  const dir = options.quick || isExperiment ? join(tmp, 'results') : join(ROOT, 'bench/results');
  const written = await writeResults(dir, run, table);
  say(`wrote ${written.map((file) => file.slice(ROOT.length)).join(', ')}`);
  if (problems.length > 0) say(`the run is invalid: ${problems.length} problem(s)`);
  return problems.length > 0 ? 1 : 0;
}

process.exitCode = await main();
