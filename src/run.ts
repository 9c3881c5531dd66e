// The main step: validate inputs, exchange a fresh OIDC token for an API token, and hand it on masked.
import { type BrokerAnswer, createBrokerClient, proxyFailure, type TokenGrant } from './broker-client.js';
import { type ActionIO, type RunDeps, STATE_KEYS } from './deps.js';
import { explain, explainCrash, type Failure, formatExplanation } from './explain.js';
import { IdTokenError } from './id-token.js';
import { type ActionInputs, parseInputs } from './inputs.js';
import { isProxyError } from './proxy.js';
import {
  classifyBrokerAnswer,
  classifyIdTokenFailure,
  EXCHANGE_RETRY,
  MIN_ATTEMPT_MS,
  withRetry,
} from './retry.js';
import { failureSummary, successSummary, writeSummary } from './summary.js';

export const TOKEN_ENV_VAR = 'STEPSECURITY_API_TOKEN';

/** Runs the main step; returns whether a token was issued (failures are reported through `io.setFailed`). */
export async function run(deps: RunDeps): Promise<boolean> {
  const issued: Issued = {};
  try {
    return await issue(deps, issued);
  } catch (error) {
    // Not a failure of the exchange (a runner file that is gone, a bug): reported all the same, error and summary.
    const explanation = explainCrash(
      error,
      issued.grant && { ...issued.grant, saved: issued.saved === true },
    );
    deps.io.setFailed(formatExplanation(explanation));
    await writeSummary(deps.io, failureSummary(explanation));
    return false;
  }
}

/** How far the main step got, for a failure it did not expect: the token the broker issued, and whether post has it. */
interface Issued {
  grant?: TokenGrant;
  saved?: boolean;
}

async function issue(deps: RunDeps, issued: Issued): Promise<boolean> {
  const { io } = deps;
  const parsed = parseInputs((name) => io.getInput(name));
  if (!parsed.ok) return fail(io, { kind: 'inputs', errors: parsed.errors });
  const inputs = parsed.inputs;
  if (!deps.idTokenAvailable) return fail(io, { kind: 'no-id-token' }, inputs);

  io.info(`Exchanging this job's OIDC token (audience ${inputs.audience}) at ${inputs.apiUrl}/oidc/token.`);
  const answer = await exchange(deps, inputs);
  if (answer.kind !== 'ok') {
    if (answer.kind === 'unexpected' && answer.issuedToken !== undefined)
      keepUnread(io, inputs, answer.issuedToken);
    return fail(io, answer, inputs);
  }
  const grant = answer.value;
  issued.grant = grant;
  const expiresByRunnerClock = new Date(deps.now() + grant.expiresIn * 1000).toISOString();

  // Masked before it is written anywhere, so no log line, output or file shows it in clear.
  io.setSecret(grant.accessToken);
  // Saved for the post step first: a token whose outputs then cannot be written reached nobody, and is revoked.
  if (inputs.revoke) {
    io.saveState(STATE_KEYS.token, grant.accessToken);
    io.saveState(STATE_KEYS.expiresAt, grant.expiresAt);
    io.saveState(STATE_KEYS.expiresAtRunnerClock, expiresByRunnerClock);
    io.saveState(STATE_KEYS.apiUrl, inputs.apiUrl);
    issued.saved = true;
  }
  io.setOutput('token', grant.accessToken);
  io.setOutput('expires-at', grant.expiresAt);
  io.setOutput('permissions', grant.permissions.join(','));
  io.setOutput('policy', grant.policy);
  if (inputs.exportEnv) io.exportVariable(TOKEN_ENV_VAR, grant.accessToken);

  io.info(
    `Issued a token for tenant ${grant.tenant} by trust policy ${grant.policy} with permissions ` +
      `${grant.permissions.join(', ') || '(none)'}; it expires at ${grant.expiresAt}.`,
  );
  if (inputs.durationSeconds !== undefined && grant.expiresIn < inputs.durationSeconds) {
    io.info(
      `The token lasts ${grant.expiresIn} s rather than the ${inputs.durationSeconds} s asked for: the trust ` +
        "policy's maximum session duration caps it, or, for a policy that sets none, the broker's default " +
        'session duration (BROKER_DEFAULT_SESSION_SECONDS).',
    );
  }
  if (!inputs.revoke) io.info('`revoke` is false: the token stays valid until it expires.');
  await writeSummary(io, successSummary(grant, inputs));
  return true;
}

type ExchangeResult = BrokerAnswer<TokenGrant> | Extract<Failure, { kind: 'id-token' }>;

async function exchange(
  deps: RunDeps,
  inputs: ActionInputs,
): Promise<{ kind: 'ok'; value: TokenGrant } | Failure> {
  const client = createBrokerClient(deps.fetch, inputs.apiUrl);
  const outcome = await withRetry(
    async (_attempt, timeoutMs): Promise<ExchangeResult> => {
      // The OIDC token and the exchange share the attempt's time limit, which ends by the overall deadline.
      const attemptEnds = deps.now() + timeoutMs;
      // A fresh OIDC token every attempt: the broker accepts each token once, even if the answer was lost.
      let oidcToken: string;
      try {
        oidcToken = await deps.getIdToken(inputs.audience, timeoutMs);
      } catch (error) {
        if (isProxyError(error)) return proxyFailure(error);
        const details = error instanceof IdTokenError ? error : undefined;
        return {
          kind: 'id-token',
          message: error instanceof Error ? error.message : String(error),
          timedOut: error instanceof Error && error.name === 'TimeoutError',
          retryable: details?.retryable ?? false,
          tlsCode: details?.tlsCode,
          status: details?.status,
          retryAfter: details?.retryAfter,
        };
      }
      return client.exchange(
        {
          oidcToken,
          tenant: inputs.tenant,
          permissions: inputs.permissions,
          durationSeconds: inputs.durationSeconds,
          policy: inputs.policy,
        },
        Math.max(MIN_ATTEMPT_MS, attemptEnds - deps.now()),
      );
    },
    (result) =>
      result.kind === 'id-token'
        ? classifyIdTokenFailure(result, deps.now())
        : classifyBrokerAnswer(result, deps.now()),
    EXCHANGE_RETRY,
    {
      now: () => deps.now(),
      sleep: (ms) => deps.sleep(ms),
      random: () => deps.random(),
      log: (message) => deps.io.info(message),
    },
  );
  const { result, attempts, gaveUp, retryAfterMs } = outcome;
  if (result.kind === 'ok') return result;
  return { ...result, attempts, gaveUp, retryAfterMs };
}

/**
 * A token in an answer the step could not read (a broker of another version, a proxy rewriting answers): handed to
 * nobody, so masked and left for the post step to revoke, as an issued one is; its expiry is not known.
 */
function keepUnread(io: ActionIO, inputs: ActionInputs, token: string): void {
  io.setSecret(token);
  if (!inputs.revoke) return;
  io.saveState(STATE_KEYS.token, token);
  io.saveState(STATE_KEYS.apiUrl, inputs.apiUrl);
}

async function fail(io: ActionIO, failure: Failure, inputs?: ActionInputs): Promise<false> {
  const explanation = explain(failure, inputs);
  io.setFailed(formatExplanation(explanation));
  await writeSummary(io, failureSummary(explanation));
  return false;
}
