// Wires run()/runPost() to a fake runner, a fake clock, a counting OIDC source and an msw-faked broker.
import { HttpResponse, http } from 'msw';
import { setupServer } from 'msw/node';
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { Fetch, PostDeps, RunDeps } from '../../../src/deps.js';
import { requestIdToken } from '../../../src/id-token.js';
import { createFakeClock, type FakeClock } from './fake-clock.js';
import { createFakeIO, type FakeIO } from './fake-io.js';

export const API_URL = 'https://broker.test/v1';
export const ACCESS_TOKEN = 'eyJhbGciOiJFUzI1NiJ9.access-token-for-tests.c2lnbmF0dXJl';

export interface RecordedRequest {
  url: string;
  headers: Headers;
  body: string;
}

/** Starts msw for the file and records every request it sees; fails on any request without a handler. */
export function useBroker() {
  const server = setupServer();
  const requests: RecordedRequest[] = [];
  server.events.on('request:start', async ({ request }) => {
    requests.push({ url: request.url, headers: request.headers, body: await request.clone().text() });
  });
  beforeAll(() => server.listen({ onUnhandledRequest: 'error' }));
  afterEach(() => {
    server.resetHandlers();
    requests.length = 0;
  });
  afterAll(() => server.close());
  return { server, requests };
}

export function grantBody(overrides: Record<string, unknown> = {}) {
  return {
    access_token: ACCESS_TOKEN,
    token_type: 'Bearer',
    issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    expires_in: 900,
    expires_at: '2025-06-01T12:15:00Z',
    scope: 'audit-log:read harden-runner:read',
    permissions: ['audit-log:read', 'harden-runner:read'],
    policy: 'deploy-main',
    tenant: 'acme',
    ...overrides,
  };
}

export function problem(
  status: number,
  code: string,
  extensions: Record<string, unknown> = {},
  headers = {},
) {
  return HttpResponse.json(
    {
      type: 'about:blank',
      title: code,
      status,
      detail: `${code} detail`,
      code,
      request_id: 'req-123',
      ...extensions,
    },
    { status, headers: { 'content-type': 'application/problem+json', ...headers } },
  );
}

/** Answers the exchange endpoint with each responder in turn, repeating the last one. */
export function exchangeAnswers(...responders: (() => Response)[]) {
  let n = 0;
  return http.post(`${API_URL}/oidc/token`, () => responders[Math.min(n++, responders.length - 1)]!());
}

export interface Harness {
  io: FakeIO;
  clock: FakeClock;
  deps: RunDeps;
  /** The audience of every OIDC token requested, in order. */
  oidcAudiences: string[];
  /** The time limit each OIDC token was requested within, in order. */
  oidcTimeLimits: number[];
}

/** An answer of the runner's token service, or `'stall'` for none: the request's time limit passes. */
export type TokenServiceAnswer = (() => Response) | 'stall';

/** The token service's answer with an OIDC token, as GitHub gives it. */
export const oidcToken = (value: string) => () => Response.json({ count: 1, value });

export function mainHarness(
  inputs: Record<string, string>,
  /**
   * idTokenError: every OIDC token request fails with it; idTokenErrors: the first ones fail, one each.
   * tokenService: the tokens are asked for as the bundle asks (requestIdToken), of a token service that answers
   * each request with the next answer, repeating the last.
   */
  options: {
    idTokenAvailable?: boolean;
    idTokenError?: Error;
    idTokenErrors?: Error[];
    tokenService?: TokenServiceAnswer[];
  } = {},
): Harness {
  const io = createFakeIO(inputs);
  const clock = createFakeClock();
  const oidcAudiences: string[] = [];
  const oidcTimeLimits: number[] = [];
  let tokenRequests = 0;
  const deps: RunDeps = {
    ...clock,
    io,
    // Looked up at call time, so msw's interception of the global fetch applies.
    fetch: (input, init) => globalThis.fetch(input, init),
    idTokenAvailable: options.idTokenAvailable ?? true,
    async getIdToken(audience, timeoutMs) {
      oidcAudiences.push(audience);
      oidcTimeLimits.push(timeoutMs);
      const answers = options.tokenService;
      if (answers) {
        const fetch: Fetch = async () => {
          const answer = answers[Math.min(tokenRequests++, answers.length - 1)]!;
          if (answer !== 'stall') return answer();
          // No answer: the request's time limit passes, and fetch fails as it does then.
          clock.advance(timeoutMs);
          throw new DOMException('The operation was aborted due to timeout', 'TimeoutError');
        };
        return requestIdToken(audience, timeoutMs, { env: TOKEN_SERVICE, fetch, ...clock, io });
      }
      if (options.idTokenError) throw options.idTokenError;
      const failure = options.idTokenErrors?.[oidcAudiences.length - 1];
      if (failure) throw failure;
      return `oidc-token-${oidcAudiences.length}`;
    },
  };
  return { io, clock, deps, oidcAudiences, oidcTimeLimits };
}

const TOKEN_SERVICE = {
  ACTIONS_ID_TOKEN_REQUEST_URL: 'https://pipelines.actions.test/_apis/distributedtask/token?api-version=2.0',
  ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'runner-request-token',
};

export function postHarness(state: Record<string, string>) {
  const io = createFakeIO({}, state);
  const clock = createFakeClock();
  const deps: PostDeps = { ...clock, io, fetch: (input, init) => globalThis.fetch(input, init) };
  return { io, clock, deps };
}

/** The JSON bodies the exchange endpoint received. */
export function exchangeBodies(requests: RecordedRequest[]): Record<string, unknown>[] {
  return requests.filter((r) => r.url.endsWith('/oidc/token')).map((r) => JSON.parse(r.body));
}
