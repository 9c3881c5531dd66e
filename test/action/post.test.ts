// The post step: revokes the token the main step issued; a failure to do so only warns.
import { HttpResponse, http } from 'msw';
import { describe, expect, it } from 'vitest';
import { createRunnerFetch } from '../../src/http-fetch.js';
import { runPost } from '../../src/post-run.js';
import { run } from '../../src/run.js';
import { callsRevealingPart } from './support/fake-io.js';
import {
  ACCESS_TOKEN,
  API_URL,
  exchangeAnswers,
  grantBody,
  mainHarness,
  postHarness,
  problem,
  useBroker,
} from './support/harness.js';

const broker = useBroker();
const revokeUrl = `${API_URL}/tokens/revoke`;
// The fake clock starts at 12:00; the token expires at 12:15.
const issuedState = { token: ACCESS_TOKEN, 'expires-at': '2025-06-01T12:15:00.000Z', 'api-url': API_URL };

describe('runPost (post step)', () => {
  it('revokes a token whose expiry the main step could not read, and says when a failed revoke leaves it valid', async () => {
    const unread = { token: ACCESS_TOKEN, 'api-url': API_URL };
    broker.server.use(http.post(revokeUrl, () => new HttpResponse(null, { status: 200 })));
    expect(await runPost(postHarness(unread).deps)).toBe('revoked');
    broker.server.use(http.post(revokeUrl, () => HttpResponse.error()));
    const { io, deps } = postHarness(unread);
    expect(await runPost(deps)).toBe('revoke-failed');
    expect(io.warnings.join('\n')).toContain('it stays valid until it expires.');
    expect(io.summary.join('\n')).toContain('valid until it expires on its own');
  });

  it('revokes the token with RFC 7009, authenticated by the token itself', async () => {
    broker.server.use(http.post(revokeUrl, () => new HttpResponse(null, { status: 200 })));
    const { io, deps } = postHarness(issuedState);

    expect(await runPost(deps)).toBe('revoked');

    expect(broker.requests).toHaveLength(1);
    const [request] = broker.requests;
    expect(request!.url).toBe(revokeUrl);
    expect(request!.headers.get('authorization')).toBe(`Bearer ${ACCESS_TOKEN}`);
    expect(request!.headers.get('content-type')).toBe('application/x-www-form-urlencoded');
    expect(new URLSearchParams(request!.body).get('token')).toBe(ACCESS_TOKEN);
    expect(
      io.calls.find((c) => c.args.some((a) => a.includes(ACCESS_TOKEN)) && c.fn !== 'getState')?.fn,
    ).toBe('setSecret');
    expect(io.warnings).toEqual([]);
  });

  it('revokes what the main step issued, at the broker it used', async () => {
    broker.server.use(
      exchangeAnswers(() => HttpResponse.json(grantBody())),
      http.post(revokeUrl, () => new HttpResponse(null, { status: 200 })),
    );
    const main = mainHarness({ tenant: 'acme', 'api-url': API_URL });
    await run(main.deps);
    const { deps } = postHarness(main.io.state);

    expect(await runPost(deps)).toBe('revoked');
    expect(new URLSearchParams(broker.requests.at(-1)!.body).get('token')).toBe(ACCESS_TOKEN);
  });

  it('shows no part of the token in its log, warning or job summary, revoked or not', async () => {
    broker.server.use(http.post(revokeUrl, () => new HttpResponse(null, { status: 200 })));
    const revoked = postHarness(issuedState);
    expect(await runPost(revoked.deps)).toBe('revoked');
    broker.server.use(http.post(revokeUrl, () => problem(503, 'not_ready')));
    const failed = postHarness(issuedState);
    expect(await runPost(failed.deps)).toBe('revoke-failed');

    expect(callsRevealingPart(revoked.io, ACCESS_TOKEN)).toEqual([]);
    expect(callsRevealingPart(failed.io, ACCESS_TOKEN)).toEqual([]);
  });

  it('does nothing when the main step ran with revoke: false', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const main = mainHarness({ tenant: 'acme', 'api-url': API_URL, revoke: 'false' });
    await run(main.deps);
    broker.requests.length = 0;
    const { io, deps } = postHarness(main.io.state);

    expect(await runPost(deps)).toBe('nothing-to-revoke');
    expect(broker.requests).toEqual([]);
    expect(io.warnings).toEqual([]);
  });

  it('does nothing when no token was issued', async () => {
    const { io, deps } = postHarness({});

    expect(await runPost(deps)).toBe('nothing-to-revoke');
    expect(broker.requests).toEqual([]);
    expect(io.logs.join('\n')).toContain('Nothing to revoke');
  });

  it('skips a token that expired more than 5 minutes ago', async () => {
    const { io, deps } = postHarness({ ...issuedState, 'expires-at': '2025-06-01T11:55:00.000Z' });

    expect(await runPost(deps)).toBe('expired');
    expect(broker.requests).toEqual([]);
    expect(io.warnings).toEqual([]);
    expect(io.logs.join('\n')).toContain('The token expired at 2025-06-01T11:55:00.000Z; nothing to revoke.');
  });

  it("revokes a token that expired moments ago by the runner's clock, which may run ahead of the broker's", async () => {
    broker.server.use(http.post(revokeUrl, () => new HttpResponse(null, { status: 200 })));
    const { io, deps } = postHarness({ ...issuedState, 'expires-at': '2025-06-01T11:59:59.000Z' });

    expect(await runPost(deps)).toBe('revoked');
    expect(broker.requests).toHaveLength(1);
    expect(io.warnings).toEqual([]);
  });

  it("revokes a token still valid at the broker though long expired by a runner's clock that runs ahead", async () => {
    broker.server.use(
      exchangeAnswers(() => HttpResponse.json(grantBody())),
      http.post(revokeUrl, () => new HttpResponse(null, { status: 200 })),
    );
    // The runner's clock is 10 minutes ahead: the broker's 12:00 is its 12:10, and the token lasts 900 s.
    const main = mainHarness({ tenant: 'acme', 'api-url': API_URL });
    main.clock.advance(10 * 60_000);
    await run(main.deps);
    const { io, clock, deps } = postHarness(main.io.state);
    // The job ends 11 minutes later: 12:21 by the runner's clock, 12:11 at the broker, 4 minutes before expiry.
    clock.advance(21 * 60_000);

    expect(await runPost(deps)).toBe('revoked');
    expect(new URLSearchParams(broker.requests.at(-1)!.body).get('token')).toBe(ACCESS_TOKEN);
    expect(io.warnings).toEqual([]);
  });

  it('leaves alone a token issued for 900 s when the job ends 21 minutes later', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const main = mainHarness({ tenant: 'acme', 'api-url': API_URL });
    await run(main.deps);
    broker.requests.length = 0;
    const { io, clock, deps } = postHarness(main.io.state);
    clock.advance(21 * 60_000);

    expect(await runPost(deps)).toBe('expired');
    expect(broker.requests).toEqual([]);
    expect(io.logs.join('\n')).toContain('The token expired at 2025-06-01T12:15:00.000Z; nothing to revoke.');
  });

  it('warns, without failing, when the broker keeps failing; retries a 5xx a few times', async () => {
    broker.server.use(http.post(revokeUrl, () => problem(503, 'unavailable')));
    const { io, clock, deps } = postHarness(issuedState);

    expect(await runPost(deps)).toBe('revoke-failed');

    expect(broker.requests).toHaveLength(3);
    expect(clock.sleeps).toHaveLength(2);
    expect(io.warnings).toHaveLength(1);
    expect(io.warnings[0]).toContain(
      'Could not revoke the StepSecurity API token; it stays valid until 2025-06-01T12:15:00.000Z.',
    );
    expect(io.warnings[0]).toContain('The broker answered 503 unavailable');
    expect(io.warnings[0]).not.toContain(ACCESS_TOKEN);
    // A new run gets a new token; it does not revoke this one.
    expect(io.warnings[0]).not.toContain('Re-run the job later');
    expect(io.warnings[0]).toContain(
      'Nothing keeps the token once this job ends; should a copy turn up, `POST /v1/tokens/revoke` revokes it, with the token itself or an API key with `api-keys:write` as the credential.',
    );
  });

  it('says in the job summary that the token was not revoked, until when it is valid, and what to do', async () => {
    broker.server.use(http.post(revokeUrl, () => problem(503, 'unavailable')));
    const { io, deps } = postHarness(issuedState);

    expect(await runPost(deps)).toBe('revoke-failed');

    expect(io.summary).toHaveLength(1);
    const summary = io.summary[0]!;
    expect(summary).toContain('### StepSecurity API token not revoked');
    expect(summary).toContain('Not revoked; valid until 2025-06-01T12:15:00.000Z');
    expect(summary).toContain(
      'Nothing keeps the token once this job ends; should a copy turn up, `POST /v1/tokens/revoke` revokes it, with the token itself or an API key with `api-keys:write` as the credential.',
    );
    expect(summary).toContain('The broker answered 503 unavailable');
    expect(summary).not.toContain(ACCESS_TOKEN);
    // The annotation stays: the summary is read after the job, the warning shows on the run's page.
    expect(io.warnings).toHaveLength(1);
  });

  it('writes nothing to the job summary when the token was revoked, or there was none to revoke', async () => {
    broker.server.use(http.post(revokeUrl, () => new HttpResponse(null, { status: 200 })));
    for (const state of [issuedState, {}, { ...issuedState, 'expires-at': '2025-06-01T11:59:59.000Z' }]) {
      const { io, deps } = postHarness(state);
      await runPost(deps);
      expect(io.summary).toEqual([]);
    }
  });

  it('on 503 not_ready names the database as the cause, not an exchange the post step never made', async () => {
    broker.server.use(
      http.post(revokeUrl, () =>
        problem(503, 'not_ready', { detail: 'the database does not answer right now' }),
      ),
    );
    const { io, deps } = postHarness(issuedState);

    expect(await runPost(deps)).toBe('revoke-failed');

    expect(io.warnings[0]).toContain('The broker cannot serve this request right now (503 not_ready).');
    expect(io.warnings[0]).toContain('Its database is unavailable.');
    expect(io.warnings[0]).not.toContain('exchange was decided');
    expect(io.warnings[0]).toContain(
      'Nothing keeps the token once this job ends; should a copy turn up, `POST /v1/tokens/revoke` revokes it, with the token itself or an API key with `api-keys:write` as the credential.',
    );
  });

  it('warns once, without retrying, when the broker refuses the revocation', async () => {
    broker.server.use(http.post(revokeUrl, () => problem(403, 'forbidden')));
    const { io, deps } = postHarness(issuedState);

    expect(await runPost(deps)).toBe('revoke-failed');
    expect(broker.requests).toHaveLength(1);
    expect(io.warnings[0]).toContain('The broker answered 403 forbidden');
  });

  it('says, without a warning, when the broker no longer accepts the token: a step revoked it already', async () => {
    broker.server.use(
      http.post(revokeUrl, () =>
        problem(401, 'unauthenticated', { detail: 'access token rejected: revoked' }),
      ),
    );
    const { io, deps } = postHarness(issuedState);

    expect(await runPost(deps)).toBe('no-longer-valid');
    expect(broker.requests).toHaveLength(1);
    expect(io.warnings).toEqual([]);
    expect(io.logs.join('\n')).toContain(
      'The broker no longer accepts the StepSecurity API token (access token rejected: revoked); nothing to revoke.',
    );
  });

  it.each([
    [
      'a redirect',
      () =>
        new HttpResponse(null, {
          status: 308,
          headers: { location: 'https://elsewhere.test/v1/tokens/revoke' },
        }),
    ],
    [
      "a page that is not the broker's",
      () =>
        new HttpResponse('<html>Not found</html>', { status: 404, headers: { 'content-type': 'text/html' } }),
    ],
  ])('warns that the token stays valid when the revocation is answered by %s', async (_what, answer) => {
    broker.server.use(http.post(revokeUrl, answer));
    const { io, deps } = postHarness(issuedState);

    expect(await runPost(deps)).toBe('revoke-failed');

    expect(broker.requests.map((r) => r.url)).toEqual([revokeUrl]);
    expect(io.logs.join('\n')).not.toContain('Revoked the StepSecurity API token.');
    expect(io.warnings[0]).toContain(
      'Could not revoke the StepSecurity API token; it stays valid until 2025-06-01T12:15:00.000Z.',
    );
  });

  it('warns that the token stays valid on a 401 that is not the broker refusing the token', async () => {
    // E.g. a gateway in front of the broker that asks for credentials of its own: the token was never checked.
    broker.server.use(http.post(revokeUrl, () => problem(401, 'gateway_unauthorized')));
    const { io, deps } = postHarness(issuedState);

    expect(await runPost(deps)).toBe('revoke-failed');

    expect(io.logs.join('\n')).not.toContain('nothing to revoke');
    expect(io.warnings[0]).toContain('Could not revoke the StepSecurity API token; it stays valid until');
  });

  it('warns, without sending anything or retrying, when the proxy setting cannot be used', async () => {
    const { io, clock, deps } = postHarness(issuedState);
    deps.fetch = createRunnerFetch({ HTTPS_PROXY: 'socks5://proxy.corp:1080' });

    expect(await runPost(deps)).toBe('revoke-failed');

    expect(broker.requests).toEqual([]);
    expect(clock.sleeps).toEqual([]);
    expect(io.warnings[0]).toContain('The proxy setting HTTPS_PROXY cannot be used, so nothing was sent.');
  });

  it('warns when the broker cannot be reached', async () => {
    broker.server.use(http.post(revokeUrl, () => HttpResponse.error()));
    const { io, deps } = postHarness(issuedState);

    expect(await runPost(deps)).toBe('revoke-failed');
    expect(io.warnings[0]).toContain(`Could not reach the broker at ${revokeUrl}`);
  });

  it('warns, and says in the job summary, when revoking fails in a way it did not expect; never fails the job', async () => {
    const { io, deps } = postHarness(issuedState);
    deps.now = () => {
      throw new TypeError("Cannot read properties of undefined (reading 'now')");
    };

    expect(await runPost(deps)).toBe('revoke-failed');

    expect(io.calls.map((c) => c.fn)).not.toContain('setFailed');
    expect(io.warnings).toHaveLength(1);
    expect(io.warnings[0]).toContain(
      'Could not revoke the StepSecurity API token; it stays valid until 2025-06-01T12:15:00.000Z.\n' +
        "oidc-auth failed unexpectedly: Cannot read properties of undefined (reading 'now')",
    );
    const summary = io.summary.join('\n');
    expect(summary).toContain('### StepSecurity API token not revoked');
    expect(summary).toContain('**Not revoked; valid until 2025-06-01T12:15:00.000Z**');
    expect(summary).not.toContain(ACCESS_TOKEN);
  });
});
