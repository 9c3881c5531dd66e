// Every failure ends in one message that says what went wrong and how to fix it.
import dns from 'node:dns';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { type AddressInfo, createServer } from 'node:net';
import { HttpResponse, http } from 'msw';
import { describe, expect, it } from 'vitest';
import { explain, formatExplanation } from '../../src/explain.js';
import { createRunnerFetch } from '../../src/http-fetch.js';
import { requestIdToken } from '../../src/id-token.js';
import { run } from '../../src/run.js';
import { callsRevealing } from './support/fake-io.js';
import { startFakeProxy } from './support/fake-proxy.js';
import {
  ACCESS_TOKEN,
  API_URL,
  exchangeAnswers,
  grantBody,
  mainHarness,
  problem,
  useBroker,
} from './support/harness.js';
import { selfSignedCertificate } from './support/tls-cert.js';

const broker = useBroker();

async function failureFor(response: () => Response, inputs: Record<string, string> = {}) {
  broker.server.use(exchangeAnswers(response));
  const h = mainHarness({ tenant: 'acme', 'api-url': API_URL, ...inputs });
  expect(await run(h.deps)).toBe(false);
  expect(h.io.failures).toHaveLength(1);
  expect(h.io.outputs).toEqual({});
  expect(h.io.state).toEqual({});
  return { message: h.io.failures[0]!, summary: h.io.summary.join('\n'), h };
}

describe('explained failures', () => {
  it('without ACTIONS_ID_TOKEN_REQUEST_URL: shows the permissions YAML and names forks and Dependabot', async () => {
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL }, { idTokenAvailable: false });

    expect(await run(h.deps)).toBe(false);

    const message = h.io.failures[0]!;
    expect(message).toContain('ACTIONS_ID_TOKEN_REQUEST_URL is not set');
    expect(message).toContain('    permissions:\n      id-token: write');
    expect(message).toContain('Pull requests from forks never get an OIDC token');
    expect(message).toContain('Runs that Dependabot triggers start with read-only permissions');
    // A called workflow gets no permission its caller does not grant.
    expect(message).toContain(
      'In a reusable workflow, the job that calls it (`uses: ./.github/workflows/…`) must grant `id-token: write` too',
    );
    expect(message).toContain('replaces the default permissions');
    expect(h.io.summary[0]).toContain('```yaml\npermissions:\n  id-token: write');
    expect(h.oidcAudiences).toEqual([]);
    expect(broker.requests).toEqual([]);
  });

  it('when GitHub does not issue the OIDC token: says so, without calling the broker', async () => {
    const h = mainHarness(
      { tenant: 'acme', 'api-url': API_URL },
      { idTokenError: new Error('Error message: Failed to get ID Token. Error Code : 500') },
    );

    expect(await run(h.deps)).toBe(false);

    expect(h.io.failures[0]).toContain('GitHub did not issue an OIDC token for this job.');
    expect(h.io.failures[0]).toContain('Failed to get ID Token. Error Code : 500');
    expect(broker.requests).toEqual([]);
  });

  it("an error page from GitHub's token service is quoted as text, cut short, never rendered in the summary", async () => {
    const page = `<html><body><h1>Service unavailable</h1><img src="https://tracker.example/x.png">${'<p>more</p>'.repeat(100)}</body></html>`;
    const h = mainHarness(
      { tenant: 'acme', 'api-url': API_URL },
      { tokenService: [() => new Response(page, { status: 403, headers: { 'content-type': 'text/html' } })] },
    );

    expect(await run(h.deps)).toBe(false);

    const summary = h.io.summary.join('\n');
    expect(h.io.failures[0]).toContain('GitHub did not issue an OIDC token for this job.');
    expect(summary).toContain("The runner's token service answered: `Error message: Failed to get ID Token.");
    expect(summary).toContain('Error Code : 403 Error Message: <html><body><h1>Service unavailable</h1>');
    // One span of inline code, in which Markdown shows the tags as text; outside, it would render the page and load
    // its image. Cut short after 300 characters.
    const quoted = /answered: `([^`]*)`$/m.exec(summary)?.[1];
    expect(quoted).toContain('<img src=');
    expect(quoted).toMatch(/^Error message: .{270,}…$/);
    expect(Array.from(quoted ?? '')).toHaveLength(301);
  });

  it("when GitHub's token service never answers in time: says so and how often it asked, not a missing permission", async () => {
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL }, { tokenService: ['stall'] });

    expect(await run(h.deps)).toBe(false);

    const message = h.io.failures[0]!;
    expect(message).toContain("GitHub's OIDC token service did not answer within 20 s.");
    // Attempts start at 0, 20.75, 42.25 and 65.25 s; the next would start after the deadline at 90 s.
    expect(message).toContain('Tried 4 times within the time limit of this step.');
    expect(message).toContain('Re-run the job');
    expect(message).not.toContain('id-token: write');
    expect(message).not.toContain('did not issue');
    expect(h.oidcTimeLimits).toEqual([20_000, 20_000, 20_000, 20_000]);
    expect(broker.requests).toEqual([]);
  });

  it('audience_mismatch: names the audience sent and the one the tenant expects', async () => {
    const { message, summary } = await failureFor(() =>
      problem(401, 'audience_mismatch', {
        audience: 'acme.api.stepsecurity.io',
        expected_audience: 'https://github.com/acme',
      }),
    );
    expect(message).toContain(
      'the token carried `acme.api.stepsecurity.io` but tenant `acme` expects `https://github.com/acme`',
    );
    expect(message).toContain('      audience: https://github.com/acme');
    expect(summary).toContain('audience: https://github.com/acme');
  });

  it('audience_mismatch without the expected audience: says the broker knows no such tenant, in its words', async () => {
    const { message, summary } = await failureFor(
      () =>
        problem(401, 'audience_mismatch', {
          audience: 'acmee.api.stepsecurity.io',
          detail: 'there is no tenant "acmee" on this broker',
        }),
      { tenant: 'acmee' },
    );
    expect(message).toContain('The broker does not know tenant `acmee`');
    expect(message).toContain('Reason given: `there is no tenant "acmee" on this broker`');
    expect(message).toContain('Check that `tenant` is spelled right');
    expect(message).not.toContain('did not say which audience');
    expect(summary).toContain('there is no tenant "acmee" on this broker');
  });

  it("no_matching_policy: lists the job's claims and how matching works", async () => {
    const claims = {
      iss: 'https://ghe.example.com/_services/token',
      repository_owner: 'acme',
      repository: 'acme/infra',
      job_workflow_ref: 'acme/infra/.github/workflows/deploy.yml@refs/heads/feature',
      ref: 'refs/heads/feature',
      event_name: 'push',
      repository_owner_id: '1',
      repository_id: '2',
    };
    const { message } = await failureFor(() => problem(403, 'no_matching_policy', { claims }), {
      permissions: 'harden-runner:write',
    });
    expect(message).toContain('No trust policy of tenant `acme` matches this job');
    expect(message).toContain('  - repository_owner: `acme`');
    expect(message).toContain('  - repository: `acme/infra`');
    expect(message).toContain(
      '  - job_workflow_ref: `acme/infra/.github/workflows/deploy.yml@refs/heads/feature`',
    );
    expect(message).toContain('  - ref: `refs/heads/feature`');
    expect(message).toContain('  - environment: (none)');
    expect(message).toContain('  - event_name: `push`');
    // Everything a policy can pin, so that the claims can be checked with the dry run as they are.
    expect(message).toContain('  - iss: `https://ghe.example.com/_services/token`');
    expect(message).toContain('  - repository_owner_id: `1`');
    expect(message).toContain('  - repository_id: `2`');
    expect(message).toContain('compare case-insensitively');
    expect(message).toContain('a `job_workflow_ref` without `@ref` matches that workflow file at any ref');
    expect(message).toContain('`allow_pull_request_target`');
    expect(message).toContain('POST /v1/oidc/policies/evaluate');
    expect(message).toContain('audit log');
    expect(message).toContain('requested permissions (`harden-runner:write`)');
    expect(message).toContain('Request id: `req-123`');
  });

  it('no_matching_policy for a job on no branch or tag: says what its empty ref means', async () => {
    const claims = {
      repository: 'acme/infra',
      job_workflow_ref: `acme/infra/.github/workflows/deploy.yml@${'3'.repeat(40)}`,
      ref: '',
      event_name: 'deployment',
    };
    const { message, summary } = await failureFor(() => problem(403, 'no_matching_policy', { claims }));
    expect(message).toContain(
      '  - ref: (empty: the job runs on no branch or tag, as one a deployment created for a commit sha starts; only a policy that sets no `ref` matches it)',
    );
    expect(message).not.toContain('``');
    expect(summary).not.toContain('ref: ``');
    expect(message).toContain('  - environment: (none)');
  });

  it('no_matching_policy with the policy input set: says only that policy was considered', async () => {
    const { message } = await failureFor(() => problem(403, 'no_matching_policy', { claims: {} }), {
      policy: 'deploy-main',
    });
    expect(message).toContain('Only policy `deploy-main` was considered');
  });

  it("permission_not_allowed: names the permissions the policy's allowlist lacks", async () => {
    const { message } = await failureFor(
      () =>
        problem(403, 'permission_not_allowed', {
          not_allowed: ['harden-runner:write', 'api-keys:write'],
          claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
        }),
      { permissions: 'harden-runner:write api-keys:write audit-log:read' },
    );
    expect(message).toContain(
      'No trust policy that matches this job allows `harden-runner:write`, `api-keys:write` (403 permission_not_allowed).',
    );
    expect(message).toContain("not in the policy's allowlist");
    // The claims let an admin find the policy that matched with the dry run.
    expect(message).toContain('  - repository: `acme/infra`');
    expect(message).toContain('  - ref: `refs/heads/main`');
    expect(message).toContain('POST /v1/oidc/policies/evaluate');
  });

  it('permission_not_allowed for permissions a shortcut asked for: says the shortcut did, not to remove them', async () => {
    const { message, summary } = await failureFor(
      () =>
        problem(403, 'permission_not_allowed', {
          not_allowed: ['api-keys:read', 'oidc-federation:read'],
          claims: { repository: 'acme/infra' },
        }),
      { permissions: 'read-all' },
    );
    expect(message).toContain(
      'No trust policy that matches this job allows `api-keys:read`, `oidc-federation:read` (403 permission_not_allowed).',
    );
    const advice =
      "Those permissions are not in the policy's allowlist, and a policy can only grant what it lists. The " +
      '`permissions` input asks for them through a shortcut: `read-all` asks for every read permission the tenant ' +
      'has. Name only the permissions the job needs instead (leave it empty to receive everything the policy ' +
      'allows), or ask a tenant admin to add them to the policy.';
    expect(message).toContain(advice);
    expect(summary).toContain(advice);
  });

  it('ambiguous_policy: names the tied policies and says to set the policy input', async () => {
    const { message } = await failureFor(() =>
      problem(409, 'ambiguous_policy', { policies: ['deploy-main', 'deploy-any'] }),
    );
    expect(message).toContain(
      'Several trust policies match this job equally well: `deploy-main`, `deploy-any` (409 ambiguous_policy).',
    );
    expect(message).toContain('`policy` input');
    expect(message).toContain('      policy: deploy-main');
  });

  it('ambiguous_policy: quotes a name YAML would read otherwise, so the snippet pastes as it is', async () => {
    for (const [name, quoted] of [
      ['deploy #2', '"deploy #2"'],
      ['deploy: prod', '"deploy: prod"'],
      ['*prod', '"*prod"'],
      ['yes', '"yes"'],
    ]) {
      const { message, summary } = await failureFor(() =>
        problem(409, 'ambiguous_policy', { policies: [name, 'other'] }),
      );
      expect(message).toContain(`      policy: ${quoted}`);
      expect(summary).toContain(`  policy: ${quoted}`);
    }
  });

  it('shows what the broker says in the job summary as text, never as Markdown or HTML', async () => {
    const { summary } = await failureFor(() =>
      problem(418, 'teapot', {
        title: '<img src=https://evil.example/p.png>',
        detail: 'x\n\n# Fixed? [re-authenticate here](https://evil.example)\n| a | b |',
      }),
    );
    expect(summary).toContain('`<img src=https://evil.example/p.png>`');
    expect(summary).toContain(
      'Reason given: `x  # Fixed? [re-authenticate here](https://evil.example) | a | b |`',
    );
    expect(summary.split('\n').filter((line) => /^(#|\|)/.test(line))).toEqual([
      '### StepSecurity API token not issued',
    ]);
  });

  it('token_replayed: explains that each OIDC token is accepted once', async () => {
    const { message } = await failureFor(() => problem(401, 'token_replayed'));
    expect(message).toContain('already exchanged this OIDC token once');
    expect(message).toContain('Each OIDC token can be exchanged only once');
  });

  it('invalid_token: gives the reason and the usual causes', async () => {
    const { message } = await failureFor(() =>
      problem(401, 'invalid_token', { detail: 'The token issuer is not trusted' }),
    );
    expect(message).toContain("The broker rejected the job's OIDC token (401 invalid_token).");
    expect(message).toContain('Reason given: `The token issuer is not trusted');
    expect(message).toContain('BROKER_TRUSTED_ISSUERS');
    // GitHub stamps the token's times; the runner's clock plays no part in them.
    expect(message).not.toContain("runner's clock");
  });

  it.each([
    'token expired at 2026-11-27T15:11:44.000Z',
    'token is not valid before 2026-11-27T15:31:44.000Z',
    'token is issued in the future (iat 2026-11-27T16:11:44.000Z)',
  ])(
    'invalid_token for its times (%s): points at the broker’s and the issuer’s clocks, not the runner’s',
    async (detail) => {
      const { message } = await failureFor(() => problem(401, 'invalid_token', { detail }));
      expect(message).toContain(`Reason given: \`${detail}\``);
      expect(message).toContain("the broker's clock, or a GitHub Enterprise Server's, is likely off");
      expect(message).toContain('not by the runner');
      expect(message).not.toContain("runner's clock is far off");
    },
  );

  it('invalid_request: gives the reason', async () => {
    const { message } = await failureFor(() =>
      problem(400, 'invalid_request', { detail: 'duration_seconds must be at most 3600' }),
    );
    expect(message).toContain('malformed (400 invalid_request)');
    expect(message).toContain('Reason given: `duration_seconds must be at most 3600');
  });

  it('invalid_request for a permission: names it and says to remove it, not that the request was malformed', async () => {
    const why = '"orchestrate-security:read" belongs to a category that is disabled for this tenant';
    const { message } = await failureFor(() =>
      problem(400, 'invalid_request', {
        detail: `permissions[0]: ${why}`,
        errors: [{ field: 'permissions[0]', message: why }],
      }),
    );
    expect(message).toContain('The broker refused a permission this step asks for (400 invalid_request).');
    expect(message).toContain(why);
    expect(message).toContain('Remove it from the `permissions` input');
    expect(message).not.toContain('malformed');
  });

  it('not_ready: says the broker cannot serve now, with its reason, and to re-run later', async () => {
    const { message } = await failureFor(() =>
      problem(503, 'not_ready', { detail: 'the database does not answer right now; retry shortly' }),
    );
    expect(message).toContain('The broker cannot serve this request right now (503 not_ready).');
    expect(message).toContain('Reason given: `the database does not answer right now; retry shortly`');
    expect(message).toContain('Tried 6 times.');
    expect(message).toContain('Re-run the job later.');
  });

  it('not_ready from a replica left on a replaced key-encryption key: the causes named include it', async () => {
    const detail =
      'this replica cannot sign tokens: the signing key in use is stored under another key-encryption key than ' +
      'the one it was started with; retry (another replica may serve it), and have the operator restart this one ' +
      'with the new BROKER_KEY_ENCRYPTION_KEY';
    const { message } = await failureFor(() => problem(503, 'not_ready', { detail }));
    expect(message).toContain(`Reason given: \`${detail}\``);
    // Not only the database and changing policies, which would contradict the reason given just above.
    expect(message).toContain('or the replica that answered cannot sign tokens until it is restarted');
  });

  it('rate_limited: says how often it tried and how long the broker asked to wait', async () => {
    const { message } = await failureFor(() => problem(429, 'rate_limited', {}, { 'retry-after': '600' }));
    expect(message).toContain('rate-limiting token exchanges for tenant `acme` (429 rate_limited)');
    expect(message).toContain(
      'Tried 1 time within the time limit of this step. The broker asked to wait 600 s.',
    );
  });

  it('rate_limited without Retry-After: says the broker gave no time to wait, so it did not retry', async () => {
    const { message, summary } = await failureFor(() => problem(429, 'rate_limited'));
    expect(message).toContain('rate-limiting token exchanges for tenant `acme` (429 rate_limited)');
    expect(message).toContain(
      'The broker did not say when to try again (no Retry-After header), so the action did not try again after this answer.',
    );
    expect(message).not.toContain('Tried');
    expect(summary).toContain('no Retry-After header');
  });

  it('issuer_unavailable: gives the issuer the broker names, says it is usually temporary and what the operator checks', async () => {
    const detail = 'signing keys for issuer https://ghe.example.com/_services/token are unavailable';
    const { message } = await failureFor(() => problem(503, 'issuer_unavailable', { detail }));
    expect(message).toContain('could not fetch the issuer');
    expect(message).toContain(`Reason given: \`${detail}\``);
    expect(message).toContain('Tried 6 times.');
    expect(message).toContain('BROKER_TRUSTED_ISSUERS');
    // Not GitHub.com's keys, which are not the ones missing here.
    expect(message).not.toContain('https://token.actions.githubusercontent.com/.well-known/jwks');
  });

  it('an unexpected answer: gives status and content type, never the body', async () => {
    const { message, summary } = await failureFor(
      () =>
        new HttpResponse(`<html>${ACCESS_TOKEN}</html>`, {
          status: 404,
          headers: { 'content-type': 'text/html' },
        }),
    );
    expect(message).toContain(
      `Unexpected answer from ${API_URL}/oidc/token: HTTP 404 with content type \`text/html\`.`,
    );
    expect(message).toContain('ending in `/v1`');
    expect(message).not.toContain(ACCESS_TOKEN);
    expect(summary).not.toContain(ACCESS_TOKEN);
  });

  it("a load balancer's error page for a broker that is down (502): retried, then says so, not to check api-url", async () => {
    const { message, h } = await failureFor(
      () =>
        new HttpResponse('<html>502 Bad Gateway</html>', {
          status: 502,
          headers: { 'content-type': 'text/html' },
        }),
    );
    expect(h.clock.sleeps.length).toBeGreaterThan(0);
    expect(message).toContain(
      `Unexpected answer from ${API_URL}/oidc/token: HTTP 502 with content type \`text/html\`.`,
    );
    expect(message).toContain('Tried 6 times.');
    expect(message).toContain('the broker behind it is down or cannot be reached from it');
    expect(message).toContain('Re-run the job later');
    expect(message).not.toContain('This is not an answer of the token broker');
  });

  it('a 200 that is not a token response: fails without echoing the body', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json({ ...grantBody(), expires_at: 'soon' })));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
    expect(await run(h.deps)).toBe(false);
    const message = h.io.failures.join('\n');
    expect(message).toContain('HTTP 200 with content type `application/json`');
    expect(message).not.toContain(ACCESS_TOKEN);
    expect(h.io.outputs).toEqual({});
    // It carried a token all the same: masked, and left for the post step to revoke rather than valid and held by none.
    expect(h.io.secrets).toContain(ACCESS_TOKEN);
    expect(h.io.state).toEqual({ token: ACCESS_TOKEN, 'api-url': API_URL });
    expect(message).toContain('the post step revokes it');
    for (const call of callsRevealing(h.io, ACCESS_TOKEN)) expect(call.fn).toBe('saveState');
  });

  it.each([400, 500])(
    'a %i shaped like a token response: not taken as one, nor its token handed on',
    async (status) => {
      broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody(), { status })));
      const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
      expect(await run(h.deps)).toBe(false);
      expect(h.io.failures.join('\n')).toContain(`HTTP ${status} with content type \`application/json\``);
      expect(h.io.outputs).toEqual({});
      expect(callsRevealing(h.io, ACCESS_TOKEN)).toEqual([]);
    },
  );

  it.each([
    ['an empty access token', { access_token: '' }],
    ['permissions that are not strings', { permissions: ['audit-log:read', 7] }],
    ['a lifetime that is not a number', { expires_in: '900' }],
    ['no policy', { policy: undefined }],
    ['no tenant', { tenant: null }],
  ])('a 200 with %s: not a token response, so no outputs', async (_what, overrides) => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody(overrides))));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
    expect(await run(h.deps)).toBe(false);
    expect(h.io.failures.join('\n')).toContain('HTTP 200 with content type `application/json`');
    expect(h.io.outputs).toEqual({});
  });

  it('a 200 that is not a token response, with revoke: false: the token it carried is said to stay valid', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json({ ...grantBody(), expires_at: 'soon' })));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL, revoke: 'false' });
    expect(await run(h.deps)).toBe(false);
    expect(h.io.secrets).toContain(ACCESS_TOKEN);
    expect(h.io.state).toEqual({});
    expect(h.io.failures.join('\n')).toContain('not revoked');
  });

  it('an unreachable broker: names the URL and the error', async () => {
    broker.server.use(http.post(`${API_URL}/oidc/token`, () => HttpResponse.error()));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });

    await run(h.deps);

    expect(h.io.failures[0]).toContain(`Could not reach the broker at ${API_URL}/oidc/token`);
    expect(h.io.failures[0]).toContain('Tried 6 times.');
  });

  it('a refused connection on a real socket: names the URL and ECONNREFUSED', async () => {
    await withoutMsw(async () => {
      const port = await closedPort();
      const h = mainHarness({ tenant: 'acme', 'api-url': `http://127.0.0.1:${port}/v1` });
      await run(h.deps);
      expect(h.io.failures[0]).toContain(
        `Could not reach the broker at http://127.0.0.1:${port}/v1/oidc/token: ECONNREFUSED.`,
      );
    });
  });

  it('a host name whose every address refuses, as localhost on ::1 and 127.0.0.1: names each address', async () => {
    await withoutMsw(async () => {
      const port = await closedPort();
      // A job container's /etc/hosts gives localhost both addresses; Node then fails with an AggregateError whose
      // own message is empty, and whose code is the first address's alone.
      await withDualStackLocalhost(async () => {
        const h = mainHarness({ tenant: 'acme', 'api-url': `http://localhost:${port}/v1` });
        h.deps.fetch = createRunnerFetch({});

        await run(h.deps);

        expect(h.io.failures[0]).toContain(
          `Could not reach the broker at http://localhost:${port}/v1/oidc/token: ECONNREFUSED.\n` +
            `connect ECONNREFUSED ::1:${port}; connect ECONNREFUSED 127.0.0.1:${port}. Tried 6 times.`,
        );
      });
    });
  });

  it('a TLS handshake failure on a real socket: names the URL and the TLS error, and does not retry', async () => {
    await withoutMsw(async () => {
      const plain = createHttpServer((_req, res) => res.end('not TLS'));
      await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
      const { port } = plain.address() as AddressInfo;
      try {
        const h = mainHarness({ tenant: 'acme', 'api-url': `https://127.0.0.1:${port}/v1` });
        await run(h.deps);
        expect(h.io.failures[0]).toContain(
          `The TLS connection to https://127.0.0.1:${port}/v1/oidc/token failed: ERR_SSL_WRONG_VERSION_NUMBER.`,
        );
        expect(h.io.failures[0]).toContain('Tried 1 time.');
        expect(h.clock.sleeps).toEqual([]);
      } finally {
        await new Promise((resolve) => plain.close(resolve));
      }
    });
  });

  it("an untrusted certificate at GitHub's OIDC token service: names the TLS error and NODE_EXTRA_CA_CERTS, once", async () => {
    await withoutMsw(async () => {
      // What a self-hosted runner behind a TLS-inspecting proxy meets: a certificate from a CA it does not trust.
      const { cert, key } = selfSignedCertificate('localhost', { dns: ['localhost'] });
      let requests = 0;
      const service = createHttpsServer({ cert, key }, (_req, res) => {
        requests++;
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"value":"oidc"}');
      });
      await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
      const { port } = service.address() as AddressInfo;
      try {
        const env = {
          ACTIONS_ID_TOKEN_REQUEST_URL: `https://localhost:${port}/_apis/token?api-version=2.0`,
          ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'runner-request-token',
        };
        const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
        askRealTokenService(h, env);

        expect(await run(h.deps)).toBe(false);

        const message = h.io.failures[0]!;
        expect(message).toContain(
          "The TLS connection to GitHub's OIDC token service failed: DEPTH_ZERO_SELF_SIGNED_CERT.",
        );
        expect(message).toContain('NODE_EXTRA_CA_CERTS');
        expect(message).toContain('Nothing was sent to the broker.');
        expect(message).not.toContain('githubstatus');
        expect(h.clock.sleeps).toEqual([]);
        expect(h.io.logs.join('\n')).not.toContain('retrying');
        expect(requests).toBe(0);
      } finally {
        await new Promise((resolve) => service.close(resolve));
      }
    });
  });

  it('a proxy that asks for other credentials (407): fails at once, naming its variable, never the password', async () => {
    await withoutMsw(async () => {
      const proxy = await startFakeProxy({ refuse: 407 });
      try {
        const h = mainHarness({ tenant: 'acme', 'api-url': 'https://broker.example/v1' });
        h.deps.fetch = createRunnerFetch({ HTTPS_PROXY: `http://ci-bot:s3cret@127.0.0.1:${proxy.port}` });

        expect(await run(h.deps)).toBe(false);

        expect(proxy.connects).toEqual(['broker.example:443']);
        expect(h.clock.sleeps).toEqual([]);
        const message = h.io.failures[0]!;
        expect(message).toContain(
          `The proxy http://127.0.0.1:${proxy.port} (HTTPS_PROXY) refused a tunnel to broker.example:443: HTTP 407.`,
        );
        expect(message).toContain('did not accept the user name and password that HTTPS_PROXY holds');
        expect(message).toContain(`http://user:p%40ss@127.0.0.1:${proxy.port}`);
        expect(message).not.toContain('s3cret');
        expect(message).not.toContain('ci-bot');
        expect(h.io.summary.join('\n')).not.toContain('s3cret');
      } finally {
        await proxy.close();
      }
    });
  });

  it("a proxy that does not allow GitHub's token service (403): fails at once, naming the host to allow", async () => {
    await withoutMsw(async () => {
      const proxy = await startFakeProxy({ refuse: 403 });
      try {
        const env = {
          ACTIONS_ID_TOKEN_REQUEST_URL: 'https://pipelines.actions.example/_apis/token?api-version=2.0',
          ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'runner-request-token',
          https_proxy: `127.0.0.1:${proxy.port}`,
        };
        const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
        askRealTokenService(h, env);

        expect(await run(h.deps)).toBe(false);

        expect(proxy.connects).toEqual(['pipelines.actions.example:443']);
        expect(h.clock.sleeps).toEqual([]);
        const message = h.io.failures[0]!;
        expect(message).toContain(
          `The proxy http://127.0.0.1:${proxy.port} (https_proxy) refused a tunnel to pipelines.actions.example:443: HTTP 403.`,
        );
        expect(message).toContain('allow-list');
        expect(message).toContain('NO_PROXY');
        expect(message).not.toContain('GitHub did not issue');
      } finally {
        await proxy.close();
      }
    });
  });

  it('a proxy that cannot reach the broker (502): retried like a lost connection, then says so', async () => {
    await withoutMsw(async () => {
      const proxy = await startFakeProxy({ refuse: 502 });
      try {
        const h = mainHarness({ tenant: 'acme', 'api-url': 'https://broker.example/v1' });
        h.deps.fetch = createRunnerFetch({ HTTPS_PROXY: `http://127.0.0.1:${proxy.port}` });

        expect(await run(h.deps)).toBe(false);

        expect(proxy.connects).toHaveLength(6);
        expect(h.io.failures[0]).toContain(
          `The proxy http://127.0.0.1:${proxy.port} (HTTPS_PROXY) could not open a tunnel to broker.example:443: HTTP 502.`,
        );
        expect(h.io.failures[0]).toContain('Tried 6 times.');
      } finally {
        await proxy.close();
      }
    });
  });

  it('a proxy that cannot be reached on the way to the broker: names the proxy and its variable, not the broker', async () => {
    await withoutMsw(async () => {
      const port = await closedPort();
      const h = mainHarness({ tenant: 'acme', 'api-url': 'https://broker.example/v1' });
      h.deps.fetch = createRunnerFetch({ HTTPS_PROXY: `http://ci-bot:s3cret@127.0.0.1:${port}` });

      expect(await run(h.deps)).toBe(false);

      const message = h.io.failures[0]!;
      expect(message).toContain(
        `Could not reach the proxy http://127.0.0.1:${port} (HTTPS_PROXY) to open a tunnel to broker.example:443: ECONNREFUSED.`,
      );
      expect(message).not.toContain('Could not reach the broker');
      expect(message).toContain('Tried 6 times.');
      expect(message).toContain('NO_PROXY');
      expect(message).not.toContain('s3cret');
      // Nothing answered: another attempt may find the proxy up, as it may a broker.
      expect(h.io.logs.join('\n')).toContain(
        `The proxy http://127.0.0.1:${port} (HTTPS_PROXY) could not be reached (ECONNREFUSED); retrying`,
      );
    });
  });

  it("a proxy that cannot be reached on the way to GitHub's token service: names the proxy, not GitHub", async () => {
    await withoutMsw(async () => {
      const port = await closedPort();
      const env = {
        ACTIONS_ID_TOKEN_REQUEST_URL: 'https://pipelines.actions.example/_apis/token?api-version=2.0',
        ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'runner-request-token',
        https_proxy: `127.0.0.1:${port}`,
      };
      const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
      askRealTokenService(h, env);

      expect(await run(h.deps)).toBe(false);

      const message = h.io.failures[0]!;
      expect(message).toContain(
        `Could not reach the proxy http://127.0.0.1:${port} (https_proxy) to open a tunnel to pipelines.actions.example:443: ECONNREFUSED.`,
      );
      expect(message).not.toContain('GitHub did not issue');
      expect(message).toContain('Tried 6 times.');
    });
  });

  it('a proxy that asks for credentials when its setting holds none: says to add them', () => {
    const message = formatExplanation(
      explain({
        kind: 'tunnel',
        variable: 'HTTPS_PROXY',
        proxy: 'http://proxy.corp:3128',
        target: 'agent.api.stepsecurity.io:443',
        status: 407,
        withCredentials: false,
      }),
    );
    expect(message).toContain('The proxy asks for credentials, and HTTPS_PROXY holds none.');
    expect(message).toContain('http://user:p%40ss@proxy.corp:3128');
  });

  it('a TLS failure: names the URL and the certificate error', () => {
    const message = formatExplanation(
      explain({
        kind: 'network',
        url: 'https://broker.test/v1/oidc/token',
        code: 'CERT_HAS_EXPIRED',
        message: 'certificate has expired',
        tls: true,
        timedOut: false,
        attempts: 1,
      }),
    );
    expect(message).toContain(
      'The TLS connection to https://broker.test/v1/oidc/token failed: CERT_HAS_EXPIRED.',
    );
    expect(message).toContain('certificate has expired');
    expect(message).toContain('NODE_EXTRA_CA_CERTS');
  });

  it('an unknown 5xx problem: gives status, code and title, and how often it tried', async () => {
    const { message } = await failureFor(() =>
      problem(500, 'internal_error', { title: 'Internal Server Error' }),
    );
    expect(message).toContain('The broker answered 500 internal_error: `Internal Server Error`.');
    expect(message).toContain('Tried 6 times.');
  });
});

/** Has the harness ask the token service `env` names for its OIDC token, through the bundle's own client. */
function askRealTokenService(h: ReturnType<typeof mainHarness>, env: Record<string, string>) {
  const fetch = createRunnerFetch(env);
  h.deps.getIdToken = (audience, timeoutMs) =>
    requestIdToken(audience, timeoutMs, { env, fetch, now: h.clock.now, sleep: h.clock.sleep, io: h.io });
}

/** Runs `test` with localhost resolving to ::1 and 127.0.0.1, in that order, as in a job container. */
async function withDualStackLocalhost(test: () => Promise<void>) {
  const lookup = dns.lookup;
  const both = [
    { address: '::1', family: 6 },
    { address: '127.0.0.1', family: 4 },
  ];
  // biome-ignore lint/suspicious/noExplicitAny: dns.lookup's overloads, replaced for one host name.
  (dns as any).lookup = (host: string, options: any, callback?: any) => {
    if (host !== 'localhost') return lookup(host, options, callback);
    const done = typeof options === 'function' ? options : callback;
    process.nextTick(() => (options?.all ? done(null, both) : done(null, '::1', 6)));
  };
  try {
    await test();
  } finally {
    dns.lookup = lookup;
  }
}

/** A loopback port that nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Runs `test` with real sockets: msw stands aside so the request reaches the network stack. */
async function withoutMsw(test: () => Promise<void>) {
  broker.server.close();
  try {
    await test();
  } finally {
    broker.server.listen({ onUnhandledRequest: 'error' });
  }
}
