// The post step: revoke the token the main step issued, unless it has long expired; never fails the job.
import { createBrokerClient } from './broker-client.js';
import { type PostDeps, STATE_KEYS } from './deps.js';
import { type Explanation, explain, explainCrash, formatExplanation } from './explain.js';
import { classifyBrokerAnswer, REVOKE_RETRY, withRetry } from './retry.js';
import { notRevokedSummary, writeSummary } from './summary.js';

export type PostOutcome = 'nothing-to-revoke' | 'expired' | 'no-longer-valid' | 'revoked' | 'revoke-failed';

/**
 * How far this runner's clock may run ahead of the broker's (a self-hosted runner without time synchronisation): a
 * token that expired by the broker's time less than this long ago by this clock may still be valid at the broker,
 * so it is revoked all the same. The broker says so if it no longer takes it.
 */
const RUNNER_CLOCK_AHEAD_MS = 5 * 60_000;

/** What to do about a token that stays valid: a revocation names the token, which nothing keeps once the job ends. */
const WHAT_TO_DO =
  'Nothing keeps the token once this job ends; should a copy turn up, `POST /v1/tokens/revoke` revokes it, with the token itself or an API key with `api-keys:write` as the credential.';

export async function runPost(deps: PostDeps): Promise<PostOutcome> {
  const { io } = deps;
  try {
    return await revoke(deps);
  } catch (error) {
    // Not an answer of the broker (a bug): the token is as unrevoked as after one, and said so the same way.
    return notRevoked(io, io.getState(STATE_KEYS.expiresAt), explainCrash(error));
  }
}

async function revoke(deps: PostDeps): Promise<PostOutcome> {
  const { io } = deps;
  const token = io.getState(STATE_KEYS.token);
  if (!token) {
    io.info('Nothing to revoke: no token was issued by this step, or `revoke` is false.');
    return 'nothing-to-revoke';
  }
  io.setSecret(token);
  const expiresAt = io.getState(STATE_KEYS.expiresAt);
  // Left alone only when it expired by both measures: the broker's time, which a runner's clock further ahead
  // than the margin misreads, and its lifetime counted on this runner's clock, which a clock set meanwhile does.
  const now = deps.now();
  // False also when the main step saved no such time: the broker's time then decides alone.
  const validByRunnerClock = Date.parse(io.getState(STATE_KEYS.expiresAtRunnerClock)) > now;
  if (now >= Date.parse(expiresAt) + RUNNER_CLOCK_AHEAD_MS && !validByRunnerClock) {
    io.info(`The token expired at ${expiresAt}; nothing to revoke.`);
    return 'expired';
  }

  const client = createBrokerClient(deps.fetch, io.getState(STATE_KEYS.apiUrl));
  const { result, attempts, gaveUp } = await withRetry(
    (_attempt, timeoutMs) => client.revoke(token, timeoutMs),
    (answer) => classifyBrokerAnswer(answer, deps.now()),
    REVOKE_RETRY,
    {
      now: () => deps.now(),
      sleep: (ms) => deps.sleep(ms),
      random: () => deps.random(),
      log: (message) => io.info(message),
    },
  );
  if (result.kind === 'ok') {
    io.info('Revoked the StepSecurity API token.');
    return 'revoked';
  }
  // The revocation is authenticated by the token itself: the broker refusing it as a credential means a step
  // revoked it already, or it expired since the check above. Either way it is no longer valid.
  if (result.kind === 'problem' && result.status === 401 && result.problem.code === 'unauthenticated') {
    const why = result.problem.detail ? ` (${result.problem.detail})` : '';
    io.info(`The broker no longer accepts the StepSecurity API token${why}; nothing to revoke.`);
    return 'no-longer-valid';
  }
  const explanation = explain({ ...result, attempts, gaveUp }, undefined, 'revoke');
  return notRevoked(io, expiresAt, explanation);
}

/** A warning, never a failed job, and a job summary section under the main step's promise to revoke the token. */
async function notRevoked(
  io: PostDeps['io'],
  expiresAt: string,
  explanation: Explanation,
): Promise<'revoke-failed'> {
  io.warning(
    `Could not revoke the StepSecurity API token; it stays valid until ${expiresAt || 'it expires'}.\n` +
      `${formatExplanation(explanation)}\n${WHAT_TO_DO}`,
  );
  await writeSummary(io, notRevokedSummary(expiresAt, WHAT_TO_DO, explanation));
  return 'revoke-failed';
}
