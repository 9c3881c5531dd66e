// Retries a call while a retry can succeed: capped, jittered exponential backoff within a deadline.
import type { BrokerAnswer } from './broker-client.js';
import type { Clock } from './deps.js';
import type { Failure } from './explain.js';

export interface RetryPolicy {
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** Time budget for all attempts and waits together, from the first attempt. */
  deadlineMs: number;
  /** Time limit for one attempt (shortened to what is left of the deadline). */
  attemptTimeoutMs: number;
}

export const EXCHANGE_RETRY: RetryPolicy = {
  maxAttempts: 6,
  baseDelayMs: 1_000,
  maxDelayMs: 15_000,
  deadlineMs: 90_000,
  attemptTimeoutMs: 20_000,
};

export const REVOKE_RETRY: RetryPolicy = {
  maxAttempts: 3,
  baseDelayMs: 1_000,
  maxDelayMs: 4_000,
  deadlineMs: 20_000,
  attemptTimeoutMs: 10_000,
};

/** The shortest time limit an attempt is given: less is too short for a request to succeed. */
export const MIN_ATTEMPT_MS = 1_000;

/**
 * `paced`: a 429 that says when to come back. Such a wait is the server spreading its load over time, not a sign
 * that retries are failing, so it does not use up `maxAttempts`: only the deadline ends it.
 */
export type Verdict = { retry: false } | { retry: true; reason: string; afterMs?: number; paced?: boolean };

export interface RetryOutcome<T> {
  result: T;
  attempts: number;
  /** Why the last retryable result was not retried; absent when the result was final on its own. */
  gaveUp?: 'attempts' | 'deadline';
  /** The wait the broker last asked for with Retry-After, when it did. */
  retryAfterMs?: number;
}

export interface RetryDeps extends Clock {
  log(message: string): void;
}

export async function withRetry<T>(
  attempt: (attemptNumber: number, timeoutMs: number) => Promise<T>,
  classify: (result: T) => Verdict,
  policy: RetryPolicy,
  deps: RetryDeps,
): Promise<RetryOutcome<T>> {
  const deadline = deps.now() + policy.deadlineMs;
  let counted = 0;
  let paced = 0;
  for (let n = 1; ; n++) {
    const timeoutMs = Math.max(MIN_ATTEMPT_MS, Math.min(policy.attemptTimeoutMs, deadline - deps.now()));
    const result = await attempt(n, timeoutMs);
    const verdict = classify(result);
    if (!verdict.retry) return { result, attempts: n };
    const retryAfterMs = verdict.afterMs;
    if (verdict.paced) paced++;
    else counted++;
    if (counted >= policy.maxAttempts) return { result, attempts: n, gaveUp: 'attempts', retryAfterMs };
    // Equal jitter keeps at least half the backoff while spreading out runners that failed together.
    const backoff = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (n - 1));
    const delay = Math.max(retryAfterMs ?? 0, Math.round(backoff / 2 + deps.random() * (backoff / 2)));
    if (deps.now() + delay + MIN_ATTEMPT_MS > deadline) {
      return { result, attempts: n, gaveUp: 'deadline', retryAfterMs };
    }
    const of = paced === 0 ? ` of ${policy.maxAttempts}` : '';
    deps.log(`${verdict.reason}; retrying in ${(delay / 1000).toFixed(1)} s (attempt ${n + 1}${of}).`);
    await deps.sleep(delay);
  }
}

/**
 * Retries network failures (except TLS verification), on the way to the broker or to the proxy, 408, 429 with
 * Retry-After and 5xx, and a proxy's 5xx to CONNECT; any other answer is final, and so are a proxy setting that
 * cannot be used and a proxy that refuses the tunnel (407, 403).
 */
export function classifyBrokerAnswer(answer: BrokerAnswer<unknown>, nowMs: number): Verdict {
  if (answer.kind === 'ok' || answer.kind === 'proxy') return { retry: false };
  if (answer.kind === 'tunnel') {
    // A refusal is the proxy's rule or its credentials, and stands; a 5xx is the proxy failing to reach the target.
    if (answer.status < 500) return { retry: false };
    return {
      retry: true,
      reason: `The proxy could not open a tunnel to ${answer.target} (HTTP ${answer.status})`,
    };
  }
  if (answer.kind === 'proxy-unreachable') {
    // As for the broker: a certificate the proxy shows now, it shows in a few seconds too.
    if (answer.tls) return { retry: false };
    return {
      retry: true,
      reason: `The proxy ${answer.proxy} (${answer.variable}) could not be reached (${answer.code ?? answer.message})`,
    };
  }
  if (answer.kind === 'network') {
    // A certificate that fails verification now will fail the same way in a few seconds.
    if (answer.tls) return { retry: false };
    return { retry: true, reason: `The broker could not be reached (${answer.code ?? answer.message})` };
  }
  const code = answer.kind === 'problem' && answer.problem.code ? ` ${answer.problem.code}` : '';
  return classifyStatus(answer, nowMs, `The broker answered ${answer.status}${code}`);
}

/**
 * Retries GitHub's OIDC token service by the same rules: its answers as the broker's, and, when it gave none, a
 * lost connection or no answer within the attempt's time limit; never a certificate the runner cannot verify,
 * nor an answer without a token.
 */
export function classifyIdTokenFailure(
  failure: Extract<Failure, { kind: 'id-token' }>,
  nowMs: number,
): Verdict {
  const service = "GitHub's OIDC token service";
  const { status, retryAfter } = failure;
  if (status !== undefined) {
    return classifyStatus({ status, retryAfter }, nowMs, `${service} answered ${status}`);
  }
  if (failure.timedOut) return { retry: true, reason: `${service} did not answer in time` };
  return failure.retryable ? { retry: true, reason: `${service} failed` } : { retry: false };
}

/** Retries 408, 5xx and a 429 that says when (Retry-After, then waited for); any other status is final. */
function classifyStatus(
  answer: { status: number; retryAfter?: string },
  nowMs: number,
  reason: string,
): Verdict {
  const { status } = answer;
  if (status !== 408 && status !== 429 && status < 500) return { retry: false };
  const afterMs = answer.retryAfter === undefined ? undefined : parseRetryAfter(answer.retryAfter, nowMs);
  // A 429 is retried only when it says when: without a readable Retry-After, an early retry adds to the load
  // that the server is refusing, and a late one would only use up the step's time.
  if (status === 429 && afterMs === undefined) return { retry: false };
  return { retry: true, reason, afterMs, paced: status === 429 };
}

/**
 * Retry-After (RFC 9110 §10.2.3) in milliseconds from now: delta-seconds, or an HTTP date in its preferred form
 * or one of the two obsolete ones. Anything else, such as `-1`, `1.5` or an ISO 8601 date, is unreadable:
 * undefined, not a guess (Date.parse would read `-1` as a day in 2001, i.e. "now").
 */
export function parseRetryAfter(value: string, nowMs: number): number | undefined {
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = parseHttpDate(trimmed, nowMs);
  return date === undefined ? undefined : Math.max(0, date - nowMs);
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAY = '(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)';
const LONG_DAY = '(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)';
const MONTH = `(?<month>${MONTHS.join('|')})`;
const TIME = '(?<hour>\\d\\d):(?<minute>\\d\\d):(?<second>\\d\\d)';
const HTTP_DATES = [
  // IMF-fixdate, the form servers send: `Sun, 06 Nov 1994 08:49:37 GMT`.
  new RegExp(`^${DAY}, (?<day>\\d\\d) ${MONTH} (?<year>\\d{4}) ${TIME} GMT$`),
  // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`.
  new RegExp(`^${LONG_DAY}, (?<day>\\d\\d)-${MONTH}-(?<year>\\d\\d) ${TIME} GMT$`),
  // asctime: `Sun Nov  6 08:49:37 1994`, in GMT although it does not say so.
  new RegExp(`^${DAY} ${MONTH} (?<day>[ \\d]\\d) ${TIME} (?<year>\\d{4})$`),
];

/** An HTTP-date in milliseconds since the epoch; undefined for any other text, or a day that does not exist. */
function parseHttpDate(text: string, nowMs: number): number | undefined {
  const parts = HTTP_DATES.map((format) => format.exec(text)?.groups).find((groups) => groups !== undefined);
  if (!parts) return undefined;
  let year = Number(parts.year);
  // A two-digit year that would be more than 50 years ahead is in the past century (RFC 9110 §5.6.7).
  if (parts.year!.length === 2) {
    year += 2000;
    if (year > new Date(nowMs).getUTCFullYear() + 50) year -= 100;
  }
  const month = MONTHS.indexOf(parts.month!);
  const day = Number(parts.day);
  const [hour, minute, second] = [Number(parts.hour), Number(parts.minute), Number(parts.second)];
  if (hour > 23 || minute > 59 || second > 60) return undefined;
  // Date.UTC would roll 31 June over into 1 July, and a leap second (23:59:60) into the next day: the day is
  // checked without it, and it is added after.
  const ms = Date.UTC(year, month, day, hour, minute, Math.min(second, 59));
  const date = new Date(ms);
  if (date.getUTCMonth() !== month || date.getUTCDate() !== day) return undefined;
  return ms + (second === 60 ? 1000 : 0);
}
