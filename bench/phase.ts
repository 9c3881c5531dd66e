// One exchange phase: fresh database, tenant and policies, the broker as a process and a warm-up; then measured
// rounds, which run.ts interleaves with the other phase's so that the machine's drift falls on both alike.
import { execFileSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { GITHUB_ISSUER, type LocalIssuer } from '../test/support/local-issuer.js';
import { type InBroker, inBrokerBetween, scrapeExchangeHistogram } from './broker-metrics.js';
import { type BrokerProcess, startBroker } from './broker-process.js';
import type { DatabaseServer } from './database.js';
import { fleetEntry, OWNERS } from './fleet.js';
import { type LoadGenerator, type LoadResult, loadProblems, runLoad } from './load.js';
import { monotonicMicros, type ProfileSummary, summariseProfile } from './profile-summary.js';
import { AUDIENCE, createTenantWithCli, insertPolicies } from './setup.js';
import { signTokens } from './tokens.js';

/** Far above any rate a bench reaches: the limiter is on the path but never refuses. */
export const RATE_LIMIT = { perMinute: 10_000_000, burst: 10_000_000 };
export const LOG_LEVEL = 'info';

export interface PhaseSpec {
  label: string;
  /** The broker, or the straightforward jose + SQLite handler of bench/reference-broker.ts it is compared with. */
  server: 'broker' | 'reference';
  policies: number;
  durationSeconds: number;
  connections: number;
  load: LoadGenerator;
  warmUpTokens: number;
  profile: boolean;
}

export interface PhaseContext {
  root: string;
  /** Scratch directory of this run (git-ignored). */
  tmp: string;
  db: DatabaseServer;
  issuer: LocalIssuer;
  keyEncryptionKey: string;
}

export interface Round {
  load: LoadResult;
  /** Broker CPU during the round's load, in percent of one core. */
  brokerCpuPercent: number;
  /** Tokens signed for the round. */
  tokens: number;
  /** The broker's own timing of the round's exchanges (its /metrics); the reference handler has none. */
  inBroker?: InBroker;
}

export interface PhaseResult {
  label: string;
  policies: number;
  owners: number;
  policyInsertSeconds: number;
  /** `warmUp`: signed for the warm-up; `measured`: used by the rounds; `signed`: signed for them (up to ~2.5× used). */
  tokens: { warmUp: number; measured: number; signed: number; signSeconds: number };
  warmUp: { exchangesPerSecond: number; seconds: number };
  /** Every measured round, in order. */
  rounds: Round[];
  /** The round with the median throughput: what the targets judge. */
  load: LoadResult;
  /** Broker CPU during the median round's load, in percent of one core. */
  brokerCpuPercent: number;
  /** The broker's own timing of the median round's exchanges. */
  inBroker?: InBroker;
  /** Peak over all rounds, in MiB (2^20 bytes). */
  rssMb: { idle: number; peak: number; after: number };
  /** Problems that make the run invalid (refused exchanges, connection errors). */
  problems: string[];
  notes: string[];
  profile?: ProfileSummary;
}

const mb = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A few exchanges, one per kind of pin, that must each succeed with the expected policy before any load. */
async function preflight(url: string, issuer: LocalIssuer, policies: number): Promise<void> {
  for (let k = 0; k < Math.min(10, policies); k++) {
    const entry = fleetEntry(k);
    const response = await fetch(`${url}/v1/oidc/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ oidc_token: issuer.sign(entry.token) }),
    });
    const body = (await response.json()) as { policy?: string; code?: string; detail?: string };
    if (response.status !== 200 || body.policy !== entry.policy.name) {
      throw new Error(
        `preflight exchange for ${entry.policy.name} (${entry.kind}) answered ${response.status} ` +
          `${body.code ?? ''} ${body.detail ?? body.policy ?? ''}`,
      );
    }
  }
}

/** A broker ready for measured rounds: its tenant and policies in place, warmed up. */
export interface PreparedPhase {
  spec: PhaseSpec;
  ctx: PhaseContext;
  broker: BrokerProcess;
  policyInsertSeconds: number;
  idleRss: number;
  peakRss: number;
  warmUp: LoadResult;
  /** Tokens per second the issuer signs; bounds how many a round may use before the first expires. */
  signRate: number;
  signSeconds: number;
  /** The next token index (each token is for policy index % policies, with a fresh jti). */
  nextToken: number;
  rounds: Round[];
  problems: string[];
  notes: string[];
  profile?: { file: string; window?: { startUs: number; endUs: number } };
}

interface ServerSetup {
  env: Record<string, string>;
  policyInsertSeconds: number;
}

/** The broker's environment, on a fresh database holding the tenant and its policies. */
async function brokerSetup(spec: PhaseSpec, ctx: PhaseContext): Promise<ServerSetup> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOST: '127.0.0.1',
    DATABASE_URL: await ctx.db.fresh(`bench_${spec.label}`),
    BROKER_PUBLIC_URL: 'http://127.0.0.1',
    BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB_ISSUER, jwks_uri: ctx.issuer.jwksUri }]),
    BROKER_KEY_ENCRYPTION_KEY: ctx.keyEncryptionKey,
    BROKER_RATE_LIMIT_PER_MINUTE: String(RATE_LIMIT.perMinute),
    BROKER_RATE_LIMIT_BURST: String(RATE_LIMIT.burst),
    LOG_LEVEL,
  };
  await createTenantWithCli(ctx.root, env);
  const insertStarted = performance.now();
  await insertPolicies(env, spec.policies);
  return { env, policyInsertSeconds: (performance.now() - insertStarted) / 1000 };
}

/** The reference handler's environment: it creates its SQLite file and policies itself as it starts. */
function referenceSetup(spec: PhaseSpec, ctx: PhaseContext): ServerSetup {
  const env = {
    PATH: process.env.PATH ?? '',
    REFERENCE_DATABASE: join(ctx.tmp, `reference-${spec.label}.db`),
    REFERENCE_POLICIES: String(spec.policies),
    REFERENCE_ISSUER: GITHUB_ISSUER,
    REFERENCE_JWKS_URI: ctx.issuer.jwksUri,
    REFERENCE_AUDIENCE: AUDIENCE,
  };
  return { env, policyInsertSeconds: 0 };
}

export async function preparePhase(spec: PhaseSpec, ctx: PhaseContext): Promise<PreparedPhase> {
  const { root, tmp, issuer } = ctx;
  const { env, policyInsertSeconds } =
    spec.server === 'broker' ? await brokerSetup(spec, ctx) : referenceSetup(spec, ctx);

  const profileDir = join(tmp, 'profiles');
  const profileName = `broker-${spec.label}.cpuprofile`;
  const broker = await startBroker({
    root,
    script:
      spec.server === 'broker' ? ['build/broker/main.js', 'serve'] : ['build/bench/reference-broker.js'],
    env,
    logFile: join(tmp, `broker-${spec.label}.log`),
    cpuProfile: spec.profile ? { dir: profileDir, name: profileName } : undefined,
  });
  try {
    await preflight(broker.url, issuer, spec.policies);
    const idleRss = broker.rss();
    const file = join(tmp, `tokens-${spec.label}-warm-up.txt`);
    const batch = await signTokens(issuer, {
      policies: spec.policies,
      first: 0,
      count: spec.warmUpTokens,
      file,
    });
    const warmUp = await runLoad(root, {
      url: broker.url,
      tokensFile: file,
      connections: spec.connections,
      generator: spec.load,
    }).finally(() => rm(file, { force: true }));
    return {
      spec,
      ctx,
      broker,
      policyInsertSeconds,
      idleRss,
      peakRss: idleRss,
      warmUp,
      signRate: batch.count / batch.seconds,
      signSeconds: batch.seconds,
      nextToken: spec.warmUpTokens,
      rounds: [],
      problems: loadProblems(`${spec.label} warm-up`, warmUp),
      notes: [],
      profile: spec.profile ? { file: join(profileDir, profileName) } : undefined,
    };
  } catch (error) {
    await broker.stop();
    throw error;
  }
}

/** One measured round of `--duration` seconds on fresh tokens. */
export async function measureRound(phase: PreparedPhase): Promise<Round> {
  const { spec } = phase;
  const n = phase.rounds.length + 1;
  const seen = Math.max(
    phase.warmUp.exchangesPerSecond,
    ...phase.rounds.map((r) => r.load.exchangesPerSecond),
  );
  let attempt = await runRound(phase, n, tokensFor(phase, n, seen));
  if (attempt.round.load.tokensExhausted) {
    // A phase's first round is sized by its warm-up, whose code is not yet optimised: a short warm-up (--quick)
    // has run at little more than half the rate of the round after it. Measured again, sized by the rate it
    // reached; the attempt's errors and refusals still count.
    const { round } = attempt;
    phase.problems.push(
      ...loadProblems(`${spec.label} round ${n}, first attempt`, { ...round.load, tokensExhausted: false }),
    );
    phase.notes.push(
      `round ${n}: the ${round.tokens} tokens ran out at ${Math.round(round.load.exchangesPerSecond)} ` +
        'exchanges/s; measured again with more',
    );
    attempt = await runRound(phase, n, tokensFor(phase, n, round.load.exchangesPerSecond));
  }
  const { round, window } = attempt;
  if (phase.profile && !phase.profile.window) phase.profile.window = window;
  phase.problems.push(...loadProblems(`${spec.label} round ${n}`, round.load));
  if (round.load.seconds < spec.durationSeconds * 0.98) {
    phase.notes.push(
      `round ${n}: the ${round.tokens} tokens lasted ${round.load.seconds.toFixed(1)} s, less than --duration`,
    );
  }
  phase.rounds.push(round);
  return round;
}

/**
 * Enough tokens for round `n` at 2.5 × `rate`, but no more than can be signed while the first of them stays
 * valid (exp = iat + 300 s) until the round's end.
 */
function tokensFor(phase: PreparedPhase, n: number, rate: number): number {
  const { spec } = phase;
  const wanted = Math.ceil(rate * spec.durationSeconds * 2.5) + spec.connections * 2;
  const affordable = Math.floor(phase.signRate * Math.max(30, 240 - spec.durationSeconds));
  if (affordable < wanted) {
    phase.notes.push(
      `round ${n}: token pool capped at ${affordable} (signing ${Math.round(phase.signRate)}/s)`,
    );
  }
  return Math.min(wanted, affordable);
}

/** Signs `count` tokens and drives them at the broker for `--duration` seconds. */
async function runRound(
  phase: PreparedPhase,
  n: number,
  count: number,
): Promise<{ round: Round; window: { startUs: number; endUs: number } }> {
  const { spec, ctx, broker } = phase;
  const file = join(ctx.tmp, `tokens-${spec.label}-${n}.txt`);
  const batch = await signTokens(ctx.issuer, {
    policies: spec.policies,
    first: phase.nextToken,
    count,
    file,
  });
  phase.nextToken += count;
  phase.signSeconds += batch.seconds;
  // What was written before the round (the token file, setting up, the phase before) is flushed now, so that
  // the kernel's write-back of it does not fall into this round and slow its commits.
  execFileSync('sync');

  const timedByBroker = spec.server === 'broker';
  const histogramBefore = timedByBroker ? await scrapeExchangeHistogram(broker.url) : undefined;
  const cpuBefore = broker.cpuSeconds();
  const stopWatching = broker.watchRss();
  const startUs = monotonicMicros();
  const load = await runLoad(ctx.root, {
    url: broker.url,
    tokensFile: file,
    connections: spec.connections,
    generator: spec.load,
    durationSeconds: spec.durationSeconds,
  }).finally(() => rm(file, { force: true }));
  const endUs = monotonicMicros();
  phase.peakRss = Math.max(phase.peakRss, stopWatching());
  const brokerCpuPercent = ((broker.cpuSeconds() - cpuBefore) / load.seconds) * 100;
  const inBroker = histogramBefore
    ? inBrokerBetween(histogramBefore, await scrapeExchangeHistogram(broker.url))
    : undefined;
  const round: Round = { load, brokerCpuPercent, tokens: count, ...(inBroker ? { inBroker } : {}) };
  return { round, window: { startUs, endUs } };
}

/** Stops the broker and summarises the phase by its median round. */
export async function finishPhase(phase: PreparedPhase): Promise<PhaseResult> {
  const { spec, broker } = phase;
  try {
    await sleep(2000);
    const after = broker.rss();
    await broker.stop();
    const byRate = [...phase.rounds].sort((a, b) => a.load.exchangesPerSecond - b.load.exchangesPerSecond);
    // --rounds is odd, so this is the median.
    const median = byRate[(byRate.length - 1) >> 1];
    if (!median) throw new Error('no measured round');
    return {
      label: spec.label,
      policies: spec.policies,
      owners: Math.min(OWNERS, spec.policies),
      policyInsertSeconds: phase.policyInsertSeconds,
      tokens: {
        warmUp: spec.warmUpTokens,
        measured: phase.rounds.reduce((sum, r) => sum + r.load.tokensUsed, 0),
        signed: phase.rounds.reduce((sum, r) => sum + r.tokens, 0),
        signSeconds: phase.signSeconds,
      },
      warmUp: {
        exchangesPerSecond: phase.warmUp.exchangesPerSecond,
        seconds: phase.warmUp.seconds,
      },
      rounds: phase.rounds,
      load: median.load,
      brokerCpuPercent: median.brokerCpuPercent,
      ...(median.inBroker ? { inBroker: median.inBroker } : {}),
      rssMb: { idle: mb(phase.idleRss), peak: mb(phase.peakRss), after: mb(after) },
      problems: phase.problems,
      notes: phase.notes,
      profile: phase.profile?.window
        ? summariseProfile(phase.profile.file, phase.ctx.root, phase.profile.window)
        : undefined,
    };
  } finally {
    await broker.stop();
  }
}
