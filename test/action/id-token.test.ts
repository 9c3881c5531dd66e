// The job's OIDC token from the runner's token service: the request, the mask, retries and failure messages.
import { describe, expect, it } from 'vitest';
import type { Fetch, FetchInit } from '../../src/deps.js';
import { type IdTokenError, idTokenAvailable, requestIdToken } from '../../src/id-token.js';

const REQUEST_URL = 'https://pipelines.actions.example/_apis/distributedtask/token?api-version=2.0';
const ENV = {
  ACTIONS_ID_TOKEN_REQUEST_URL: REQUEST_URL,
  ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'runner-request-token',
};

/** A token service answering each request with the next answer (repeating the last), recording calls. */
function tokenService(...answers: { status: number; body: string; headers?: Record<string, string> }[]) {
  const requests: { url: string; init: FetchInit }[] = [];
  const events: string[] = [];
  const sleeps: number[] = [];
  let now = 0;
  const fetch: Fetch = async (url, init) => {
    requests.push({ url, init });
    events.push('request');
    const { status, body, headers = {} } = answers[Math.min(requests.length - 1, answers.length - 1)]!;
    return {
      status,
      headers: { get: (name) => headers[name.toLowerCase()] ?? null },
      text: async () => body,
    };
  };
  const deps = {
    env: ENV,
    fetch,
    now: () => now,
    sleep: async (ms: number) => {
      sleeps.push(ms);
      now += ms;
    },
    io: {
      debug: (message: string) => events.push(`debug ${message}`),
      setSecret: (value: string) => events.push(`mask ${value}`),
    },
  };
  return { deps, requests, events, sleeps };
}

/** The time limit of an attempt of the exchange, which the token request must keep to. */
const LIMIT_MS = 20_000;
const ok = (value: string) => ({ status: 200, body: JSON.stringify({ count: 1, value }) });

describe('requestIdToken', () => {
  it('asks for the audience with the request token and masks the token before returning it', async () => {
    const service = tokenService(ok('oidc-token'));

    const token = await requestIdToken('acme.api.stepsecurity.io', LIMIT_MS, service.deps);

    expect(token).toBe('oidc-token');
    expect(service.requests).toHaveLength(1);
    const [{ url, init }] = service.requests as [{ url: string; init: FetchInit }];
    expect(url).toBe(`${REQUEST_URL}&audience=acme.api.stepsecurity.io`);
    expect(init).toMatchObject({
      method: 'GET',
      headers: { accept: 'application/json', authorization: 'Bearer runner-request-token' },
      redirect: 'manual',
    });
    expect(init.signal).toBeInstanceOf(AbortSignal);
    expect(service.events).toEqual([`debug ID token url is ${url}`, 'request', 'mask oidc-token']);
  });

  it('encodes the audience, and asks for the default audience when it is empty', async () => {
    const service = tokenService(ok('t'));

    await requestIdToken('https://aud.example/a b&c', LIMIT_MS, service.deps);
    await requestIdToken('', LIMIT_MS, service.deps);

    expect(service.requests.map((r) => r.url)).toEqual([
      `${REQUEST_URL}&audience=https%3A%2F%2Faud.example%2Fa%20b%26c`,
      REQUEST_URL,
    ]);
  });

  it('retries 502, 503 and 504 with the toolkit backoff, up to 10 times', async () => {
    const service = tokenService(
      { status: 502, body: '' },
      { status: 503, body: '' },
      { status: 504, body: '' },
      ok('after-retries'),
    );

    expect(await requestIdToken('aud', LIMIT_MS, service.deps)).toBe('after-retries');
    expect(service.sleeps).toEqual([10, 20, 40]);

    const down = tokenService({ status: 503, body: '{"message":"Service Unavailable"}' });
    await expect(requestIdToken('aud', LIMIT_MS, down.deps)).rejects.toThrow(
      'Error message: Failed to get ID Token. Error Code : 503 Error Message: Service Unavailable',
    );
    expect(down.requests).toHaveLength(11);
    expect(down.sleeps).toEqual([10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120]);
  });

  it('fails at once on another error status, with the service message or body', async () => {
    const denied = tokenService({ status: 401, body: '{"message":"Token is not valid"}' });
    await expect(requestIdToken('aud', LIMIT_MS, denied.deps)).rejects.toThrow(
      'Failed to get ID Token. Error Code : 401 Error Message: Token is not valid',
    );

    const broken = tokenService({ status: 500, body: 'upstream failure' });
    await expect(requestIdToken('aud', LIMIT_MS, broken.deps)).rejects.toThrow(
      'Error Code : 500 Error Message: upstream failure',
    );

    const empty = tokenService({ status: 400, body: '' });
    await expect(requestIdToken('aud', LIMIT_MS, empty.deps)).rejects.toThrow(
      'Error Message: Failed request: (400)',
    );
    expect([denied, broken, empty].map((s) => s.requests.length)).toEqual([1, 1, 1]);
    expect(denied.events.some((e) => e.startsWith('mask'))).toBe(false);
  });

  it('marks a failure the next attempt may get past: no answer or a 5xx, never a refusal or a bad answer', async () => {
    const retryable = async (service: ReturnType<typeof tokenService>) =>
      ((await requestIdToken('aud', 100, service.deps).catch((e: unknown) => e)) as IdTokenError).retryable;
    const unreachable = tokenService(ok('t'));
    unreachable.deps.fetch = async () => {
      throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    };
    expect(await retryable(unreachable)).toBe(true);
    expect(await retryable(tokenService({ status: 500, body: 'upstream failure' }))).toBe(true);
    expect(await retryable(tokenService({ status: 503, body: '' }))).toBe(true);
    expect(await retryable(tokenService({ status: 401, body: '{"message":"Token is not valid"}' }))).toBe(
      false,
    );
    expect(await retryable(tokenService({ status: 200, body: 'not json' }))).toBe(false);
  });

  it('fails at once on 408 and 429 too, with the status and Retry-After by which the exchange may ask again', async () => {
    const failure = (service: ReturnType<typeof tokenService>) =>
      requestIdToken('aud', LIMIT_MS, service.deps).catch((e: unknown) => e);
    const limited = tokenService({ status: 429, body: '', headers: { 'retry-after': '7' } });
    const timedOut = tokenService({ status: 408, body: '' });

    expect(await failure(limited)).toMatchObject({
      message: 'Error message: Failed to get ID Token. Error Code : 429 Error Message: Failed request: (429)',
      status: 429,
      retryAfter: '7',
    });
    expect(await failure(timedOut)).toMatchObject({ status: 408, retryAfter: undefined });
    expect([limited, timedOut].map((s) => [s.requests.length, s.sleeps])).toEqual([
      [1, []],
      [1, []],
    ]);
  });

  it('fails at once, naming the TLS error, when the certificate cannot be verified', async () => {
    for (const error of [
      // The bundle's client rejects with the socket's error; the global fetch keeps it as its cause.
      Object.assign(new Error('certificate has expired'), { code: 'CERT_HAS_EXPIRED' }),
      new TypeError('fetch failed', {
        cause: Object.assign(new Error('certificate has expired'), { code: 'CERT_HAS_EXPIRED' }),
      }),
    ]) {
      const service = tokenService(ok('t'));
      service.deps.fetch = async () => {
        throw error;
      };

      const failure = await requestIdToken('aud', LIMIT_MS, service.deps).catch((e: unknown) => e);

      expect(failure).toMatchObject({
        message:
          'Error message: Failed to get ID Token. Error Code : CERT_HAS_EXPIRED Error Message: certificate has expired',
        retryable: false,
        tlsCode: 'CERT_HAS_EXPIRED',
      });
      expect(service.sleeps).toEqual([]);
    }
  });

  it('fails when the answer carries no token, or is not found', async () => {
    for (const answer of [
      { status: 200, body: '{"count":0}' },
      { status: 200, body: 'not json' },
      { status: 404, body: '{"value":"x"}' },
    ]) {
      await expect(requestIdToken('aud', LIMIT_MS, tokenService(answer).deps)).rejects.toThrow(
        'Error message: Response json body do not have ID Token field',
      );
    }
  });

  it('stops at the time limit when the service does not answer, with an error of its own', async () => {
    const service = tokenService(ok('t'));
    service.deps.fetch = (_url, init) =>
      new Promise((_resolve, reject) => {
        init.signal?.addEventListener('abort', () => reject(init.signal?.reason));
      });

    const started = Date.now();
    const error = await requestIdToken('aud', 100, service.deps).catch((e: unknown) => e);

    expect(Date.now() - started).toBeLessThan(5_000);
    expect(error).toMatchObject({
      name: 'TimeoutError',
      message: "GitHub's OIDC token service did not answer within 0.1 s.",
    });
  });

  it('stops retrying 502, 503 and 504 when the next wait would pass the time limit, with the last answer', async () => {
    const down = tokenService({ status: 503, body: '{"message":"Service Unavailable"}' });

    await expect(requestIdToken('aud', 100, down.deps)).rejects.toThrow(
      'Error message: Failed to get ID Token. Error Code : 503 Error Message: Service Unavailable',
    );
    // 10 + 20 + 40 ms fit in 100 ms; the next wait, 80 ms, would end after it.
    expect(down.sleeps).toEqual([10, 20, 40]);
    expect(down.requests).toHaveLength(4);
  });

  it('fails with the network error code and message when the service cannot be reached', async () => {
    const service = tokenService(ok('t'));
    service.deps.fetch = async () => {
      throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    };

    await expect(requestIdToken('aud', LIMIT_MS, service.deps)).rejects.toThrow(
      'Failed to get ID Token. Error Code : ECONNREFUSED Error Message: connect ECONNREFUSED 127.0.0.1:1',
    );
  });

  it('fails without a request when the runner offers no token service', async () => {
    const service = tokenService(ok('t'));

    await expect(
      requestIdToken('aud', LIMIT_MS, {
        ...service.deps,
        env: { ACTIONS_ID_TOKEN_REQUEST_URL: REQUEST_URL },
      }),
    ).rejects.toThrow('Unable to get ACTIONS_ID_TOKEN_REQUEST_TOKEN env variable');
    await expect(
      requestIdToken('aud', LIMIT_MS, { ...service.deps, env: { ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'x' } }),
    ).rejects.toThrow('Unable to get ACTIONS_ID_TOKEN_REQUEST_URL env variable');
    expect(service.requests).toEqual([]);
  });
});

describe('idTokenAvailable', () => {
  it('needs both the request URL and the request token', () => {
    expect(idTokenAvailable(ENV)).toBe(true);
    expect(idTokenAvailable({ ACTIONS_ID_TOKEN_REQUEST_URL: REQUEST_URL })).toBe(false);
    expect(idTokenAvailable({ ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'x' })).toBe(false);
    expect(idTokenAvailable({ ...ENV, ACTIONS_ID_TOKEN_REQUEST_URL: '' })).toBe(false);
  });
});
