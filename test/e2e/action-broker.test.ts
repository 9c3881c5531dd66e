// End to end: the bundled action (dist/) run as the runner runs it, against a real broker process that trusts
// a local GitHub OIDC issuer. Main gets a token, later steps can use it, post revokes it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeGitHubOidc, startFakeGitHubOidc } from '../action/support/fake-github.js';
import { createActionRunner } from '../action/support/runner-process.js';
import { TEST_KEK } from '../support/broker.js';
import { createTestDatabase, type TestDatabase } from '../support/database.js';
import { seedTenant } from '../support/federation.js';
import { GITHUB_ISSUER, type LocalIssuer, startLocalIssuer } from '../support/local-issuer.js';
import { type BrokerProcess, startBrokerProcess } from '../support/process.js';

let db: TestDatabase;
let issuer: LocalIssuer;
let github: FakeGitHubOidc;
let broker: BrokerProcess;
let adminKey: string;
/** Claims the fake GitHub puts in the next job tokens, on top of the issuer's defaults. */
let jobClaims: Record<string, string> = {};

beforeAll(async () => {
  db = await createTestDatabase();
  issuer = await startLocalIssuer();
  const env = {
    DATABASE_URL: db.url,
    BROKER_KEY_ENCRYPTION_KEY: TEST_KEK,
    BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB_ISSUER, jwks_uri: issuer.jwksUri }]),
  };
  adminKey = await seedTenant(
    env,
    { name: 'acme' },
    {
      name: 'deploy',
      claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
      max_session_duration_seconds: 600,
      permissions: ['harden-runner:read', 'audit-log:read'],
    },
  );
  broker = await startBrokerProcess(env);
  // GitHub's token service signs with the issuer the broker trusts, for whatever audience the action asks.
  github = await startFakeGitHubOidc((audience) => issuer.sign({ ...jobClaims, aud: audience }));
});
afterAll(async () => {
  await broker?.stop();
  await github?.close();
  await issuer?.close();
  await db?.drop();
});

const whoami = (token: string) =>
  fetch(`${broker.url}/v1/whoami`, { headers: { Authorization: `Bearer ${token}` } });

describe('the action against a real broker', () => {
  it('main exchanges the job token, masks and outputs it; the token works; post revokes it', async () => {
    const runner = await createActionRunner({ idToken: github });
    try {
      const inputs = {
        tenant: 'acme',
        'api-url': `${broker.url}/v1`,
        permissions: 'harden-runner:read',
        'export-env': 'true',
      };
      const main = await runner.run('main', inputs);
      expect(main.exitCode, main.stdout + main.stderr).toBe(0);
      expect(github.audiences).toEqual(['acme.api.stepsecurity.io']);

      const token = main.outputs.token!;
      expect(token.split('.')).toHaveLength(3);
      expect(main.outputs).toMatchObject({ permissions: 'harden-runner:read', policy: 'deploy' });
      expect(Date.parse(main.outputs['expires-at']!) - Date.now()).toBeLessThanOrEqual(600_000);
      expect(main.env.STEPSECURITY_API_TOKEN).toBe(token);

      // The mask comes first: no line before `::add-mask::` shows the token.
      const lines = main.stdout.split('\n');
      const mask = lines.indexOf(`::add-mask::${token}`);
      expect(mask).toBeGreaterThanOrEqual(0);
      expect(lines.slice(0, mask).some((l) => l.includes(token))).toBe(false);
      expect(lines.slice(mask + 1).some((l) => l.includes(token))).toBe(false);
      expect(main.summary).not.toContain(token);
      expect(main.summary).toContain('deploy');

      const me = await whoami(token);
      expect(me.status).toBe(200);
      expect(await me.json()).toMatchObject({
        tenant: { name: 'acme' },
        permissions: ['harden-runner:read'],
      });

      const post = await runner.run('post', inputs);
      expect(post.exitCode, post.stdout + post.stderr).toBe(0);
      expect(post.stdout).not.toMatch(/::warning::/);
      expect((await whoami(token)).status).toBe(401);
      const introspected = await fetch(`${broker.url}/v1/tokens/introspect`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${adminKey}`, 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token }),
      });
      expect(await introspected.json()).toEqual({ active: false });
    } finally {
      await runner.close();
    }
  });

  it('post says, without a warning, that a token a step already revoked is no longer accepted', async () => {
    const runner = await createActionRunner({ idToken: github });
    try {
      const inputs = { tenant: 'acme', 'api-url': `${broker.url}/v1` };
      const main = await runner.run('main', inputs);
      expect(main.exitCode, main.stdout + main.stderr).toBe(0);
      const token = main.outputs.token!;
      // A later step of the job revokes the token itself, as the README shows.
      const revoked = await fetch(`${broker.url}/v1/tokens/revoke`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token }),
      });
      expect(revoked.status).toBe(200);

      const post = await runner.run('post', inputs);
      expect(post.exitCode, post.stdout + post.stderr).toBe(0);
      expect(post.stdout).not.toMatch(/::warning::/);
      expect(post.stdout).toContain('The broker no longer accepts the StepSecurity API token');
      expect(post.summary).not.toContain('not revoked');
    } finally {
      await runner.close();
    }
  });

  it('a permission the policy does not allow fails the step, saying which', async () => {
    const runner = await createActionRunner({ idToken: github });
    try {
      const main = await runner.run('main', {
        tenant: 'acme',
        'api-url': `${broker.url}/v1`,
        permissions: 'api-keys:write',
      });
      expect(main.exitCode).not.toBe(0);
      expect(main.stdout).toMatch(
        /::error::No trust policy that matches this job allows `api-keys:write` \(403 permission_not_allowed\)/,
      );
      // The broker's denial echoes the job's claims, and the step shows them for the dry run.
      expect(main.stdout).toContain('repository: `acme/infra`');
      expect(main.outputs.token).toBeUndefined();
      expect(main.summary).toContain('api-keys:write');
    } finally {
      await runner.close();
    }
  });

  it('a misspelt tenant fails saying the broker knows no such tenant', async () => {
    const runner = await createActionRunner({ idToken: github });
    try {
      const main = await runner.run('main', { tenant: 'acmee', 'api-url': `${broker.url}/v1` });
      expect(main.exitCode).not.toBe(0);
      expect(main.stdout).toContain('::error::The broker does not know tenant `acmee`');
      expect(main.stdout).toContain('there is no tenant "acmee" on this broker');
      expect(main.summary).toContain('The broker does not know tenant `acmee`');
      expect(main.outputs.token).toBeUndefined();
    } finally {
      await runner.close();
    }
  });

  it('a job no policy matches fails with its own claims in the message', async () => {
    const runner = await createActionRunner({ idToken: github });
    jobClaims = {
      ref: 'refs/heads/feature-x',
      job_workflow_ref: 'acme/infra/.github/workflows/ci.yml@refs/heads/feature-x',
    };
    try {
      const main = await runner.run('main', { tenant: 'acme', 'api-url': `${broker.url}/v1` });
      expect(main.exitCode).not.toBe(0);
      expect(main.stdout).toContain('refs/heads/feature-x');
      expect(main.stdout).toContain('acme/infra/.github/workflows/ci.yml@refs/heads/feature-x');
      expect(main.outputs.token).toBeUndefined();
      const post = await runner.run('post', { tenant: 'acme', 'api-url': `${broker.url}/v1` });
      expect(post.exitCode).toBe(0);
    } finally {
      jobClaims = {};
      await runner.close();
    }
  });
});
