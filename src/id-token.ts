// Asks the runner's token service for the job's OIDC token, as @actions/core's getIDToken does, and masks it.
import { parseJson } from './broker-client.js';
import type { ActionIO, Clock, Fetch } from './deps.js';
import { describeNetworkError } from './network-error.js';
import { isProxyError } from './proxy.js';

type Env = Record<string, string | undefined>;

export interface IdTokenDeps extends Pick<Clock, 'now' | 'sleep'> {
  env: Env;
  fetch: Fetch;
  io: Pick<ActionIO, 'debug' | 'setSecret'>;
}

// The toolkit retries 502, 503 and 504 up to 10 times, waiting 5 ms × 2^n (n capped at 10) before retry n.
const RETRY_STATUSES = new Set([502, 503, 504]);
const MAX_RETRIES = 10;
const BACKOFF_SLICE_MS = 5;
const BACKOFF_CEILING = 10;

export function idTokenAvailable(env: Env): boolean {
  return Boolean(env.ACTIONS_ID_TOKEN_REQUEST_URL && env.ACTIONS_ID_TOKEN_REQUEST_TOKEN);
}

/**
 * The OIDC token for `audience`, masked before it is returned; rejects with the toolkit's messages. Retries
 * included, it takes at most `timeoutMs` (the toolkit allows 3 minutes, longer than the whole exchange may
 * take): past it, it rejects with an error named `TimeoutError`. The proxy's errors (ProxySettingError,
 * ProxyRefusedError, ProxyUnreachableError) pass through as they are.
 */
export async function requestIdToken(
  audience: string,
  timeoutMs: number,
  deps: IdTokenDeps,
): Promise<string> {
  const deadline = deps.now() + timeoutMs;
  const requestToken = deps.env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (!requestToken) throw failed('Unable to get ACTIONS_ID_TOKEN_REQUEST_TOKEN env variable');
  let url = deps.env.ACTIONS_ID_TOKEN_REQUEST_URL;
  if (!url) throw failed('Unable to get ACTIONS_ID_TOKEN_REQUEST_URL env variable');
  // GitHub's request URL already carries a query string (api-version).
  if (audience) url = `${url}&audience=${encodeURIComponent(audience)}`;
  deps.io.debug(`ID token url is ${url}`);

  for (let retry = 0; ; retry++) {
    let status: number;
    let retryAfter: string | undefined;
    let text: string;
    try {
      const response = await deps.fetch(url, {
        method: 'GET',
        headers: {
          accept: 'application/json',
          authorization: `Bearer ${requestToken}`,
          'user-agent': 'actions/oidc-client',
        },
        redirect: 'manual',
        signal: AbortSignal.timeout(Math.max(0, deadline - deps.now())),
      });
      status = response.status;
      retryAfter = response.headers.get('retry-after') ?? undefined;
      text = await response.text();
    } catch (error) {
      // The proxy's own failures are explained, and retried or not, as the proxy's rather than GitHub's.
      if (isProxyError(error)) throw error;
      if ((error as { name?: unknown }).name === 'TimeoutError') throw timedOut(timeoutMs);
      const { code, message, tls } = describeNetworkError(error);
      // No answer at all (a reset, a refused connection): another attempt may well get one. A certificate the
      // runner cannot verify now, it cannot verify in a few seconds either.
      throw requestFailed(code, message, { retryable: !tls, tlsCode: tls ? code : undefined });
    }
    if (RETRY_STATUSES.has(status) && retry < MAX_RETRIES) {
      const delay = BACKOFF_SLICE_MS * 2 ** Math.min(BACKOFF_CEILING, retry + 1);
      // No retry that could not finish in time: this answer is then the last one, and is reported below.
      if (deps.now() + delay < deadline) {
        await deps.sleep(delay);
        continue;
      }
    }
    const parsed = parseJson(text);
    const json =
      typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : undefined;
    if (status > 299 && status !== 404) {
      const message = typeof json?.message === 'string' && json.message ? json.message : text;
      throw requestFailed(status, message || `Failed request: (${status})`, {
        retryable: status >= 500,
        status,
        retryAfter,
      });
    }
    const token = status === 404 ? undefined : json?.value;
    if (typeof token !== 'string' || token === '') {
      throw failed('Response json body do not have ID Token field');
    }
    deps.io.setSecret(token);
    return token;
  }
}

function timedOut(timeoutMs: number): Error {
  const seconds = (timeoutMs / 1000).toFixed(timeoutMs % 1000 === 0 ? 0 : 1);
  const error = new Error(`GitHub's OIDC token service did not answer within ${seconds} s.`);
  error.name = 'TimeoutError';
  return error;
}

/** What the exchange's retries and its failure message need to know of a failed request. */
export interface IdTokenFailureDetails {
  /** No answer (but for a TLS failure) or a 5xx: the service or the network to it is in trouble. */
  retryable?: boolean;
  /** The TLS error's code, when the connection to the service failed its TLS handshake. */
  tlsCode?: string;
  /** The service's HTTP status, when it answered: the exchange retries it as it would the broker's. */
  status?: number;
  /** The service's Retry-After header, when it sent one. */
  retryAfter?: string;
}

/** The token service's refusal or failure, in the toolkit's words. */
export class IdTokenError extends Error {
  readonly retryable: boolean;
  readonly tlsCode?: string;
  readonly status?: number;
  readonly retryAfter?: string;

  constructor(message: string, details: IdTokenFailureDetails = {}) {
    super(`Error message: ${message}`);
    this.retryable = details.retryable ?? false;
    this.tlsCode = details.tlsCode;
    this.status = details.status;
    this.retryAfter = details.retryAfter;
  }
}

function requestFailed(
  code: number | string | undefined,
  message: string,
  details: IdTokenFailureDetails,
): Error {
  return new IdTokenError(
    `Failed to get ID Token. Error Code : ${code ?? 'none'} Error Message: ${message}`,
    details,
  );
}

function failed(message: string): Error {
  return new IdTokenError(message);
}
