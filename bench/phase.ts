// One exchange phase: fresh database, tenant and policies, the broker as a process, warm-up, then measured load.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { GITHUB_ISSUER, type LocalIssuer } from '../test/support/local-issuer.js';
import { startBroker } from './broker-process.js';
import type { DatabaseServer } from './database.js';
import { fleetEntry, OWNERS } from './fleet.js';
import { type LoadGenerator, type LoadResult, loadProblems, runLoad } from './load.js';
import { monotonicMicros, type ProfileSummary, summariseProfile } from './profile-summary.js';
import { createTenantWithCli, insertPolicies } from './setup.js';
import { signTokens } from './tokens.js';

/** Far above any rate a bench reaches: the limiter is on the path but never refuses. */
export const RATE_LIMIT = { perMinute: 10_000_000, burst: 10_000_000 };
export const LOG_LEVEL = 'info';

export interface PhaseSpec {
  label: string;
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

export interface PhaseResult {
  label: string;
  policies: number;
  owners: number;
  policyInsertSeconds: number;
  tokens: { warmUp: number; measured: number; signSeconds: number };
  warmUp: { exchangesPerSecond: number; secondHalfExchangesPerSecond: number; seconds: number };
  load: LoadResult;
  /** Broker CPU during the measured load, in percent of one core. */
  brokerCpuPercent: number;
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

export async function runPhase(spec: PhaseSpec, ctx: PhaseContext): Promise<PhaseResult> {
  const { root, tmp, issuer } = ctx;
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOST: '127.0.0.1',
    DATABASE_URL: await ctx.db.fresh(`bench_${spec.label}`),
    BROKER_PUBLIC_URL: 'http://127.0.0.1',
    BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB_ISSUER, jwks_uri: issuer.jwksUri }]),
    BROKER_KEY_ENCRYPTION_KEY: ctx.keyEncryptionKey,
    BROKER_RATE_LIMIT_PER_MINUTE: String(RATE_LIMIT.perMinute),
    BROKER_RATE_LIMIT_BURST: String(RATE_LIMIT.burst),
    LOG_LEVEL,
  };
  await createTenantWithCli(root, env);
  const insertStarted = performance.now();
  await insertPolicies(env, spec.policies);
  const policyInsertSeconds = (performance.now() - insertStarted) / 1000;

  const profileName = `broker-${spec.label}.cpuprofile`;
  const profileDir = join(tmp, 'profiles');
  const broker = await startBroker({
    root,
    env,
    logFile: join(tmp, `broker-${spec.label}.log`),
    cpuProfile: spec.profile ? { dir: profileDir, name: profileName } : undefined,
  });
  const files = [join(tmp, `tokens-${spec.label}-warm-up.txt`), join(tmp, `tokens-${spec.label}.txt`)];
  const notes: string[] = [];
  try {
    await preflight(broker.url, issuer, spec.policies);
    const idle = broker.rss();

    const warmBatch = await signTokens(issuer, {
      policies: spec.policies,
      first: 0,
      count: spec.warmUpTokens,
      file: files[0]!,
    });
    const warmUp = await runLoad(root, {
      url: broker.url,
      tokensFile: files[0]!,
      connections: spec.connections,
      generator: spec.load,
    });
    const problems = loadProblems(`${spec.label} warm-up`, warmUp);

    // Enough tokens for the measured seconds at 2.5 × the warm-up's rate (a warm broker is faster still), but no
    // more than can be signed while the first of them stays valid (exp = iat + 300 s) until the end.
    const signRate = warmBatch.count / warmBatch.seconds;
    const rate = Math.max(warmUp.exchangesPerSecond, warmUp.secondHalfExchangesPerSecond);
    const wanted = Math.ceil(rate * spec.durationSeconds * 2.5) + spec.connections * 2;
    const affordable = Math.floor(signRate * Math.max(30, 240 - spec.durationSeconds));
    const count = Math.min(wanted, affordable);
    if (count < wanted) notes.push(`token pool capped at ${count} (signing ${Math.round(signRate)}/s)`);
    const batch = await signTokens(issuer, {
      policies: spec.policies,
      first: spec.warmUpTokens,
      count,
      file: files[1]!,
    });

    const cpuBefore = broker.cpuSeconds();
    const stopWatching = broker.watchRss();
    const startUs = monotonicMicros();
    const load = await runLoad(root, {
      url: broker.url,
      tokensFile: files[1]!,
      connections: spec.connections,
      generator: spec.load,
      durationSeconds: spec.durationSeconds,
    });
    const endUs = monotonicMicros();
    const peak = stopWatching();
    const brokerCpuPercent = ((broker.cpuSeconds() - cpuBefore) / load.seconds) * 100;
    problems.push(...loadProblems(spec.label, load));
    if (load.seconds < spec.durationSeconds * 0.98) {
      notes.push(`the ${count} tokens lasted ${load.seconds.toFixed(1)} s, less than --duration`);
    }
    await sleep(2000);
    const after = broker.rss();
    await broker.stop();

    return {
      label: spec.label,
      policies: spec.policies,
      owners: Math.min(OWNERS, spec.policies),
      policyInsertSeconds,
      tokens: {
        warmUp: warmBatch.count,
        measured: batch.count,
        signSeconds: warmBatch.seconds + batch.seconds,
      },
      warmUp: {
        exchangesPerSecond: warmUp.exchangesPerSecond,
        secondHalfExchangesPerSecond: warmUp.secondHalfExchangesPerSecond,
        seconds: warmUp.seconds,
      },
      load,
      brokerCpuPercent,
      rssMb: { idle: mb(idle), peak: mb(peak), after: mb(after) },
      problems,
      notes,
      profile: spec.profile
        ? summariseProfile(join(profileDir, profileName), root, { startUs, endUs })
        : undefined,
    };
  } finally {
    await broker.stop();
    await Promise.all(files.map((file) => rm(file, { force: true })));
  }
}
