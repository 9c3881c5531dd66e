// Retries: only what can succeed, with a fresh OIDC token each time, jittered backoff and an overall deadline.
import { HttpResponse } from 'msw';
import { describe, expect, it } from 'vitest';
import { IdTokenError } from '../../src/id-token.js';
import { parseRetryAfter } from '../../src/retry.js';
import { run } from '../../src/run.js';
import {
  API_URL,
  exchangeAnswers,
  exchangeBodies,
  grantBody,
  mainHarness,
  oidcToken,
  problem,
  type TokenServiceAnswer,
  useBroker,
} from './support/harness.js';

const broker = useBroker();
const ok = () => HttpResponse.json(grantBody());

async function runWith(...responders: (() => Response)[]) {
  broker.server.use(exchangeAnswers(...responders));
  const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
  const issued = await run(h.deps);
  const tokensSent = exchangeBodies(broker.requests).map((b) => b.oidc_token);
  return { issued, h, tokensSent };
}

/** The main step against a broker that grants the token and a token service that gives `answers` in turn. */
async function runWithTokenService(...answers: TokenServiceAnswer[]) {
  broker.server.use(exchangeAnswers(ok));
  const h = mainHarness({ tenant: 'acme', 'api-url': API_URL }, { tokenService: answers });
  const issued = await run(h.deps);
  const tokensSent = exchangeBodies(broker.requests).map((b) => b.oidc_token);
  return { issued, h, tokensSent };
}

describe('retries', () => {
  it.each([
    ['a 503', () => problem(503, 'issuer_unavailable')],
    ['a 500 without a problem body', () => new HttpResponse('oops', { status: 500 })],
    [
      'a 502 from a proxy',
      () =>
        new HttpResponse('<html>bad gateway</html>', {
          status: 502,
          headers: { 'content-type': 'text/html' },
        }),
    ],
    ['a 408', () => new HttpResponse(null, { status: 408 })],
    ['a network error', () => HttpResponse.error()],
  ])('retries after %s with a fresh OIDC token', async (_name, failure) => {
    const { issued, h, tokensSent } = await runWith(failure, ok);

    expect(issued).toBe(true);
    expect(tokensSent).toEqual(['oidc-token-1', 'oidc-token-2']);
    expect(h.clock.sleeps).toHaveLength(1);
    expect(h.io.logs.join('\n')).toContain('retrying in');
  });

  it("retries when GitHub's OIDC token service loses the connection or fails with a 5xx", async () => {
    broker.server.use(exchangeAnswers(ok));
    const h = mainHarness(
      { tenant: 'acme', 'api-url': API_URL },
      {
        idTokenErrors: [
          new IdTokenError('Failed to get ID Token. Error Code : ECONNRESET Error Message: socket hang up', {
            retryable: true,
          }),
          new IdTokenError('Failed to get ID Token. Error Code : 500 Error Message: upstream failure', {
            retryable: true,
            status: 500,
          }),
        ],
      },
    );

    expect(await run(h.deps)).toBe(true);
    expect(h.oidcAudiences).toHaveLength(3);
    expect(exchangeBodies(broker.requests).map((b) => b.oidc_token)).toEqual(['oidc-token-3']);
    expect(h.io.logs.join('\n')).toContain("GitHub's OIDC token service failed; retrying in 0.8 s");
    expect(h.io.logs.join('\n')).toContain("GitHub's OIDC token service answered 500; retrying in 1.5 s");
  });

  it("asks GitHub's OIDC token service again when it does not answer within the attempt's time limit", async () => {
    const { issued, h, tokensSent } = await runWithTokenService('stall', oidcToken('after-the-stall'));

    expect(issued).toBe(true);
    expect(h.oidcTimeLimits).toEqual([20_000, 20_000]);
    expect(tokensSent).toEqual(['after-the-stall']);
    expect(h.clock.sleeps).toEqual([750]);
    expect(h.io.logs).toContain(
      "GitHub's OIDC token service did not answer in time; retrying in 0.8 s (attempt 2 of 6).",
    );
    expect(h.io.failures).toEqual([]);
  });

  it.each([
    ['a 408', () => new Response(null, { status: 408 }), 750],
    ['a 500', () => Response.json({ message: 'upstream failure' }, { status: 500 }), 750],
    [
      'a 429 with Retry-After, waiting as long as it asks',
      () => Response.json({ message: 'slow down' }, { status: 429, headers: { 'retry-after': '7' } }),
      7_000,
    ],
  ])("asks GitHub's OIDC token service again after %s", async (_name, failure, wait) => {
    const { issued, h, tokensSent } = await runWithTokenService(failure, oidcToken('second'));

    expect(issued).toBe(true);
    expect(h.oidcAudiences).toHaveLength(2);
    expect(tokensSent).toEqual(['second']);
    expect(h.clock.sleeps).toEqual([wait]);
  });

  it.each([
    ['a 403', () => Response.json({ message: 'Forbidden' }, { status: 403 }), 'Error Code : 403'],
    ['a 429 without Retry-After', () => new Response('', { status: 429 }), 'Error Code : 429'],
    [
      'a 429 whose Retry-After is not a time',
      () => new Response('', { status: 429, headers: { 'retry-after': 'later' } }),
      'Error Code : 429',
    ],
  ])("does not ask GitHub's OIDC token service again after %s", async (_name, failure, quoted) => {
    const { issued, h, tokensSent } = await runWithTokenService(failure, oidcToken('never-asked-for'));

    expect(issued).toBe(false);
    expect(h.oidcAudiences).toHaveLength(1);
    expect(h.clock.sleeps).toEqual([]);
    expect(tokensSent).toEqual([]);
    expect(h.io.failures[0]).toContain('GitHub did not issue an OIDC token for this job.');
    expect(h.io.failures[0]).toContain(quoted);
    expect(h.io.failures[0]).not.toContain('Tried');
  });

  it("does not retry the token service's refusal: it fails at once, without calling the broker", async () => {
    const refusal = new IdTokenError(
      'Failed to get ID Token. Error Code : 401 Error Message: Token is not valid',
    );
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL }, { idTokenErrors: [refusal] });

    expect(await run(h.deps)).toBe(false);
    expect(h.oidcAudiences).toHaveLength(1);
    expect(h.clock.sleeps).toEqual([]);
    expect(h.io.failures[0]).toContain('Error Code : 401');
    expect(h.io.failures[0]).not.toContain('id-token: write');
    expect(broker.requests).toEqual([]);
  });

  it('waits as long as Retry-After asks on a 429', async () => {
    const { issued, h, tokensSent } = await runWith(
      () => problem(429, 'rate_limited', {}, { 'retry-after': '7' }),
      ok,
    );

    expect(issued).toBe(true);
    expect(tokensSent).toEqual(['oidc-token-1', 'oidc-token-2']);
    expect(h.clock.sleeps).toEqual([7000]);
  });

  it('keeps coming back as a 429 asks until the deadline, not only six times', async () => {
    // A broker refusing a large matrix paces it with Retry-After: 1; its budget refills within the step's 90 s.
    const limited = () => problem(429, 'rate_limited', {}, { 'retry-after': '1' });
    const { issued, h, tokensSent } = await runWith(...Array.from({ length: 8 }, () => limited), ok);

    expect(issued).toBe(true);
    expect(tokensSent).toHaveLength(9);
    expect(new Set(tokensSent).size).toBe(9);
    // The backoff still doubles from 1 s (random() is 0.5), capped at 15 s; the broker's 1 s is the floor.
    expect(h.clock.sleeps).toEqual([1000, 1500, 3000, 6000, 11_250, 11_250, 11_250, 11_250]);
    expect(h.io.logs.join('\n')).toContain('retrying in 11.3 s (attempt 9).');
  });

  it('gives up on a broker that keeps rate-limiting only at the deadline, saying how often it tried', async () => {
    const { issued, h, tokensSent } = await runWith(() =>
      problem(429, 'rate_limited', {}, { 'retry-after': '1' }),
    );

    expect(issued).toBe(false);
    // Attempts start at 0, 1, 2.5, 5.5, 11.5, 22.75, 34, 45.25, 56.5, 67.75 and 79 s; the next would pass 90 s.
    expect(tokensSent).toHaveLength(11);
    expect(h.io.failures[0]).toContain(
      'Tried 11 times within the time limit of this step. The broker asked to wait 1 s.',
    );
  });

  it('still stops after six attempts when a 429 is mixed with 5xx answers', async () => {
    const limited = () => problem(429, 'rate_limited', {}, { 'retry-after': '1' });
    const down = () => problem(503, 'not_ready');
    const { issued, tokensSent } = await runWith(limited, limited, down, down, down, down, down, down, ok);

    expect(issued).toBe(false);
    // Two paced waits, then six 503s: the sixth counted failure ends it.
    expect(tokensSent).toHaveLength(8);
  });

  it.each([
    ['a 429 rate_limited without Retry-After', () => problem(429, 'rate_limited')],
    [
      'a 429 with a Retry-After that is not a time',
      () => problem(429, 'rate_limited', {}, { 'retry-after': 'whenever' }),
    ],
    ['a 429 with a negative Retry-After', () => problem(429, 'rate_limited', {}, { 'retry-after': '-1' })],
    ['a 429 from a proxy without Retry-After', () => new HttpResponse('slow down', { status: 429 })],
  ])('does not retry %s: nothing says when a retry could succeed', async (_name, failure) => {
    const { issued, h, tokensSent } = await runWith(failure, ok);

    expect(issued).toBe(false);
    expect(tokensSent).toEqual(['oidc-token-1']);
    expect(h.clock.sleeps).toEqual([]);
    expect(h.io.logs.join('\n')).not.toContain('retrying');
  });

  it('reads Retry-After as seconds or as an HTTP date, in any of its three forms', () => {
    const now = Date.parse('2025-06-01T12:00:00Z');
    expect(parseRetryAfter('12', now)).toBe(12_000);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('Sun, 01 Jun 2025 12:00:30 GMT', now)).toBe(30_000);
    // The obsolete forms, which RFC 9110 still asks recipients to read: asctime's is in GMT too.
    expect(parseRetryAfter('Sunday, 01-Jun-25 12:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Sun Jun  1 12:00:30 2025', now)).toBe(30_000);
    expect(parseRetryAfter('Sun, 01 Jun 2025 11:00:00 GMT', now)).toBe(0);
    // A leap second, which only ever ends a day (RFC 9110 allows second 60): one second before the next day.
    expect(parseRetryAfter('Sun, 01 Jun 2025 23:59:60 GMT', now)).toBe(12 * 3_600_000);
  });

  it.each([
    'whenever',
    '-1',
    '1.5',
    '1e3',
    '0x10',
    '2, 2',
    '',
    'Sun, 01 Jun 2025 12:00:30',
    'Sun, 01 Jun 2025 12:00:30 +0000',
    '2025-06-01T12:00:30Z',
    'Sun, 31 Jun 2025 12:00:30 GMT',
    'Sun, 01 Jun 2025 24:00:30 GMT',
  ])('finds no time in Retry-After %j', (value) => {
    expect(parseRetryAfter(value, Date.parse('2025-06-01T12:00:00Z'))).toBeUndefined();
  });

  it('backs off exponentially with jitter, capped, and stops after six attempts', async () => {
    const { issued, h, tokensSent } = await runWith(() => problem(503, 'issuer_unavailable'));

    expect(issued).toBe(false);
    expect(tokensSent).toHaveLength(6);
    expect(new Set(tokensSent).size).toBe(6);
    // random() is 0.5: half the backoff plus a quarter; the backoff doubles from 1 s and is capped at 15 s.
    expect(h.clock.sleeps).toEqual([750, 1500, 3000, 6000, 11_250]);
  });

  it.each([
    [0, [500, 1000, 2000, 4000, 7500]],
    [0.999_999, [1000, 2000, 4000, 8000, 15_000]],
  ])(
    'spreads each wait from half the backoff to all of it by the random draw (random() %f)',
    async (random, sleeps) => {
      broker.server.use(exchangeAnswers(() => problem(503, 'issuer_unavailable')));
      const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
      h.deps.random = () => random;

      expect(await run(h.deps)).toBe(false);

      // Runners that failed together come back at different times, none sooner than half the backoff.
      expect(h.clock.sleeps).toEqual(sleeps);
    },
  );

  it('gives up at the deadline rather than waiting past it', async () => {
    const { issued, h, tokensSent } = await runWith(() =>
      problem(503, 'issuer_unavailable', {}, { 'retry-after': '30' }),
    );

    expect(issued).toBe(false);
    expect(h.clock.sleeps).toEqual([30_000, 30_000]);
    expect(tokensSent).toHaveLength(3);
    expect(h.io.failures[0]).toContain('Tried 3 times within the time limit of this step.');
  });

  it("asks for each OIDC token within the attempt's time limit, which ends by the deadline", async () => {
    const { h } = await runWith(() => problem(503, 'issuer_unavailable', {}, { 'retry-after': '40' }));

    // Attempts start at 0, 40 and 80 s; an attempt has at most 20 s, and the deadline is at 90 s.
    expect(h.clock.sleeps).toEqual([40_000, 40_000]);
    expect(h.oidcTimeLimits).toEqual([20_000, 20_000, 10_000]);
  });

  it('does not wait at all when Retry-After is beyond the deadline', async () => {
    const { h, tokensSent } = await runWith(() =>
      problem(429, 'rate_limited', {}, { 'retry-after': '3600' }),
    );

    expect(tokensSent).toHaveLength(1);
    expect(h.clock.sleeps).toEqual([]);
    expect(h.io.failures[0]).toContain('The broker asked to wait 3600 s.');
  });

  it.each([
    [400, 'invalid_request'],
    [401, 'invalid_token'],
    [401, 'audience_mismatch'],
    [401, 'token_replayed'],
    [403, 'no_matching_policy'],
    [403, 'permission_not_allowed'],
    [409, 'ambiguous_policy'],
  ])('does not retry %i %s', async (status, code) => {
    const { issued, h, tokensSent } = await runWith(() => problem(status, code), ok);

    expect(issued).toBe(false);
    expect(tokensSent).toEqual(['oidc-token-1']);
    expect(h.clock.sleeps).toEqual([]);
  });
});
