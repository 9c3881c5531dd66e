// The main step's success path: what the workflow sees, and that the token is masked before it is written.
import { HttpResponse, http } from 'msw';
import { describe, expect, it } from 'vitest';
import { run } from '../../src/run.js';
import { callsRevealing, callsRevealingPart } from './support/fake-io.js';
import {
  ACCESS_TOKEN,
  API_URL,
  exchangeAnswers,
  exchangeBodies,
  grantBody,
  mainHarness,
  useBroker,
} from './support/harness.js';

const broker = useBroker();

describe('run (main step)', () => {
  it('exchanges an OIDC token for the tenant audience and sets the outputs', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const h = mainHarness({
      tenant: 'acme',
      'api-url': API_URL,
      permissions: 'audit-log:read\nharden-runner:read',
    });

    expect(await run(h.deps)).toBe(true);

    expect(h.oidcAudiences).toEqual(['acme.api.stepsecurity.io']);
    expect(exchangeBodies(broker.requests)).toEqual([
      { oidc_token: 'oidc-token-1', tenant: 'acme', permissions: ['audit-log:read', 'harden-runner:read'] },
    ]);
    expect(h.io.outputs).toEqual({
      token: ACCESS_TOKEN,
      'expires-at': '2025-06-01T12:15:00.000Z',
      permissions: 'audit-log:read,harden-runner:read',
      policy: 'deploy-main',
    });
    expect(h.io.failures).toEqual([]);
    expect(h.io.env).toEqual({});
  });

  it('sends the policy, duration and a custom audience when they are set', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const h = mainHarness({
      tenant: 'acme',
      audience: 'https://github.com/acme',
      'api-url': `${API_URL}/`,
      policy: 'deploy-main',
      'duration-seconds': '600',
      permissions: 'read-all',
    });

    await run(h.deps);

    expect(h.oidcAudiences).toEqual(['https://github.com/acme']);
    expect(exchangeBodies(broker.requests)).toEqual([
      {
        oidc_token: 'oidc-token-1',
        tenant: 'acme',
        permissions: ['read-all'],
        duration_seconds: 600,
        policy: 'deploy-main',
      },
    ]);
  });

  it('masks the token before it appears in any output, state, variable, log or summary', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL, 'export-env': 'true' });

    await run(h.deps);

    const maskedAt = h.io.calls.findIndex((c) => c.fn === 'setSecret' && c.args[0] === ACCESS_TOKEN);
    const revealing = callsRevealing(h.io, ACCESS_TOKEN);
    expect(maskedAt).toBeGreaterThanOrEqual(0);
    expect(revealing.map((c) => c.fn)).toEqual(['saveState', 'setOutput', 'exportVariable']);
    for (const call of revealing) expect(h.io.calls.indexOf(call)).toBeGreaterThan(maskedAt);
  });

  it('shows no part of the token in a log line or the job summary, which the mask of the whole would not hide', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const h = mainHarness({
      tenant: 'acme',
      'api-url': API_URL,
      'export-env': 'true',
      'duration-seconds': '3600',
    });

    expect(await run(h.deps)).toBe(true);

    expect(callsRevealingPart(h.io, ACCESS_TOKEN)).toEqual([]);
  });

  it('exports STEPSECURITY_API_TOKEN only when export-env is true', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const exported = mainHarness({ tenant: 'acme', 'api-url': API_URL, 'export-env': 'true' });
    const notExported = mainHarness({ tenant: 'acme', 'api-url': API_URL });

    await run(exported.deps);
    await run(notExported.deps);

    expect(exported.io.env).toEqual({ STEPSECURITY_API_TOKEN: ACCESS_TOKEN });
    expect(notExported.io.env).toEqual({});
  });

  it('saves the token, its expiry and the broker URL for the post step unless revoke is false', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const revoking = mainHarness({ tenant: 'acme', 'api-url': API_URL });
    const keeping = mainHarness({ tenant: 'acme', 'api-url': API_URL, revoke: 'false' });

    await run(revoking.deps);
    await run(keeping.deps);

    expect(revoking.io.state).toEqual({
      token: ACCESS_TOKEN,
      'expires-at': '2025-06-01T12:15:00.000Z',
      // Its lifetime (900 s) from when the answer came, by this runner's clock (12:00).
      'expires-at-runner-clock': '2025-06-01T12:15:00.000Z',
      'api-url': API_URL,
    });
    expect(keeping.io.state).toEqual({});
    expect(keeping.io.logs.join('\n')).toContain('stays valid until it expires');
  });

  it('leaves the token for the post step to revoke even when its outputs cannot be written', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
    // As the runner's io does when GITHUB_OUTPUT names a file that is not there.
    h.io.setOutput = () => {
      throw new Error('Missing file at path: /home/runner/work/_temp/_runner_file_commands/set_output_1');
    };

    expect(await run(h.deps)).toBe(false);

    // The token reached nobody: the post step revokes it.
    expect(h.io.state).toMatchObject({ token: ACCESS_TOKEN, 'api-url': API_URL });
    expect(h.io.failures).toHaveLength(1);
    expect(h.io.failures[0]).toContain(
      'oidc-auth failed unexpectedly: Missing file at path: /home/runner/work/_temp/_runner_file_commands/set_output_1',
    );
    expect(h.io.failures[0]).toContain('an earlier step of the job deleted it');
    // Reported in the job summary like any failure, saying the token is revoked at the end of the job.
    const summary = h.io.summary.join('\n');
    expect(summary).toContain('### StepSecurity API token not issued');
    expect(summary).toContain('oidc-auth failed unexpectedly: Missing file at path');
    expect(summary).toContain('the post step revokes it when the job ends');
    expect(summary).not.toContain(ACCESS_TOKEN);
  });

  it('says in the job summary that a token it could not save for the post step stays valid until it expires', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
    h.io.saveState = () => {
      throw new Error('Missing file at path: /home/runner/work/_temp/_runner_file_commands/save_state_1');
    };

    expect(await run(h.deps)).toBe(false);

    expect(h.io.outputs).toEqual({});
    expect(h.io.failures[0]).toContain('oidc-auth failed unexpectedly: Missing file at path');
    expect(h.io.summary.join('\n')).toContain(
      'which is not revoked when the job ends: it stays valid until 2025-06-01T12:15:00.000Z',
    );
  });

  it('reports any other failure it did not expect as the step error and in the job summary', async () => {
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
    h.deps.now = () => {
      throw new TypeError("Cannot read properties of undefined (reading 'now')");
    };

    expect(await run(h.deps)).toBe(false);

    expect(h.io.failures).toEqual([
      "oidc-auth failed unexpectedly: Cannot read properties of undefined (reading 'now')\n" +
        'Re-run the job; if it happens again, report it with this message.',
    ]);
    expect(h.io.summary.join('\n')).toContain(
      "### StepSecurity API token not issued\n\n**oidc-auth failed unexpectedly: Cannot read properties of undefined (reading 'now')**",
    );
  });

  it('summarises tenant, policy, permissions and expiry without the token', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });

    await run(h.deps);

    const summary = h.io.summary.join('\n');
    expect(summary).toContain('`acme`');
    expect(summary).toContain('`deploy-main`');
    expect(summary).toContain('`audit-log:read`, `harden-runner:read`');
    expect(summary).toContain('2025-06-01T12:15:00.000Z');
    expect(summary).not.toContain(ACCESS_TOKEN);
  });

  it('keeps a policy name with a | to its own cell of the summary table', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody({ policy: 'deploy|main' }))));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });

    await run(h.deps);

    expect(h.io.summary.join('\n')).toContain('| Trust policy | `deploy\\|main` |');
  });

  it.each([
    [900, '(in 15 min)'],
    [20, '(in 20 s)'],
    [90, '(in 90 s)'],
  ])('gives a lifetime of %i s in the summary as %s', async (expiresIn, shown) => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody({ expires_in: expiresIn }))));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });

    await run(h.deps);

    expect(h.io.summary.join('\n')).toContain(`| Expires at | 2025-06-01T12:15:00.000Z ${shown} |`);
  });

  it('says when the policy granted a shorter lifetime than asked for', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody({ expires_in: 900 }))));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL, 'duration-seconds': '3600' });

    await run(h.deps);

    const logs = h.io.logs.join('\n');
    expect(logs).toContain('The token lasts 900 s rather than the 3600 s asked for');
    // Either can be the cap, and the action cannot tell which: it names both.
    expect(logs).toContain("the trust policy's maximum session duration caps it");
    expect(logs).toContain("the broker's default session duration (BROKER_DEFAULT_SESSION_SECONDS)");
  });

  it('keeps the step green when the job summary cannot be written', async () => {
    broker.server.use(exchangeAnswers(() => HttpResponse.json(grantBody())));
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });
    h.io.appendSummary = async () => {
      throw new Error('Unable to find environment variable for $GITHUB_STEP_SUMMARY');
    };

    expect(await run(h.deps)).toBe(true);
    expect(h.io.failures).toEqual([]);
  });

  it('does not follow a redirect with the OIDC token', async () => {
    broker.server.use(
      http.post(
        `${API_URL}/oidc/token`,
        () =>
          new HttpResponse(null, {
            status: 308,
            headers: { location: 'https://elsewhere.test/v1/oidc/token' },
          }),
      ),
    );
    const h = mainHarness({ tenant: 'acme', 'api-url': API_URL });

    expect(await run(h.deps)).toBe(false);

    expect(broker.requests.map((r) => r.url)).toEqual([`${API_URL}/oidc/token`]);
    expect(h.io.failures[0]).toContain('redirects to `https://elsewhere.test/v1/oidc/token`');
  });
});
