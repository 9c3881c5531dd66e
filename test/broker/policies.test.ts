// Trust policy management over HTTP: round trip, every §4 rule as a 422, warnings, escalation, names, isolation, audit.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { policyEtag } from '../../broker/http/entity-tags.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { createTestDatabase } from '../support/database.js';

const GITHUB = 'https://token.actions.githubusercontent.com';

let t: TestBroker;
let tenantKey: string;
let tenants = 0;

beforeAll(async () => {
  t = await startTestBroker();
});
beforeEach(async () => {
  tenantKey = (await t.createTenant(`acme-${++tenants}`)).key;
});
afterAll(() => t.close());

interface PolicyView {
  id: string;
  name: string;
  description: string | null;
  issuer: string;
  claims: Record<string, string>;
  max_session_duration_seconds: number;
  permissions: string[];
  allow_pull_request_target: boolean;
  created_at: string;
  updated_at: string;
}

interface AuditEvent {
  type: string;
  outcome: string;
  actor: { kind: string; id: string; name?: string };
  target: { type: string; id: string; name?: string } | null;
  details: Record<string, unknown>;
}

const infraMain = () => ({
  name: 'deploy-infra',
  claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
  permissions: ['harden-runner:read'],
});

async function create(json: unknown, key = tenantKey) {
  const res = await t.request('POST', '/v1/oidc/policies', { key, json });
  return { res, body: (await res.json()) as { policy: PolicyView; warnings: string[] } };
}

async function created(json: unknown, key = tenantKey): Promise<PolicyView> {
  const { res, body } = await create(json, key);
  expect(res.status, JSON.stringify(body)).toBe(201);
  return body.policy;
}

async function list(key = tenantKey): Promise<PolicyView[]> {
  const res = await t.request('GET', '/v1/oidc/policies', { key });
  expect(res.status).toBe(200);
  return ((await res.json()) as { policies: PolicyView[] }).policies;
}

async function policyEvents(key = tenantKey): Promise<AuditEvent[]> {
  const res = await t.request('GET', '/v1/audit-events', { key });
  const { events } = (await res.json()) as { events: AuditEvent[] };
  return events.filter((e) => e.type.startsWith('policy.'));
}

async function fineGrained(permissions: string[]): Promise<string> {
  const res = await t.request('POST', '/v1/fine-grained-keys', {
    key: tenantKey,
    json: { name: 'policy-admin', expiration: '7d', permissions },
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { key: string }).key;
}

describe('create, list, get, replace, delete', () => {
  it('round-trips a policy, applying defaults and expanding shortcuts', async () => {
    const { res, body } = await create(infraMain());
    expect(res.status).toBe(201);
    const policy = body.policy;
    expect(res.headers.get('Location')).toBe(`/v1/oidc/policies/${policy.id}`);
    expect(policy).toEqual({
      id: expect.any(String),
      name: 'deploy-infra',
      description: null,
      issuer: GITHUB,
      claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
      max_session_duration_seconds: 0,
      permissions: ['harden-runner:read'],
      allow_pull_request_target: false,
      created_at: new Date(t.clock.now).toISOString(),
      updated_at: new Date(t.clock.now).toISOString(),
    });
    expect(body.warnings).toEqual([]);
    expect(await list()).toEqual([policy]);
    const got = await t.request('GET', `/v1/oidc/policies/${policy.id}`, { key: tenantKey });
    expect(got.status).toBe(200);
    expect(await got.json()).toEqual(policy);

    t.clock.now += 60_000;
    const put = await t.request('PUT', `/v1/oidc/policies/${policy.id}`, {
      key: tenantKey,
      json: {
        name: 'Deploy-Infra-Prod',
        description: 'Production deploys of acme/infra',
        claims: { repository: 'acme/infra', environment: 'production', repository_id: '632596897' },
        max_session_duration_seconds: 3600,
        permissions: ['read-all'],
      },
    });
    expect(put.status).toBe(200);
    const replaced = ((await put.json()) as { policy: PolicyView }).policy;
    expect(replaced).toMatchObject({
      id: policy.id,
      name: 'Deploy-Infra-Prod',
      description: 'Production deploys of acme/infra',
      claims: { repository: 'acme/infra', environment: 'production', repository_id: '632596897' },
      max_session_duration_seconds: 3600,
      created_at: policy.created_at,
      updated_at: new Date(t.clock.now).toISOString(),
    });
    // Full replacement: the ref condition left out of the body is gone; read-all became explicit ids.
    expect(replaced.claims).not.toHaveProperty('ref');
    expect(replaced.permissions).toContain('audit-log:read');
    expect(replaced.permissions.every((p) => p.endsWith(':read'))).toBe(true);
    expect(await list()).toEqual([replaced]);

    const del = await t.request('DELETE', `/v1/oidc/policies/${policy.id}`, { key: tenantKey });
    expect(del.status).toBe(204);
    expect(await list()).toEqual([]);
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const gone = await t.request(method, `/v1/oidc/policies/${policy.id}`, {
        key: tenantKey,
        json: method === 'PUT' ? infraMain() : undefined,
      });
      expect(gone.status, method).toBe(404);
      expect(await gone.json()).toMatchObject({ code: 'not_found' });
    }
  });

  it('reads back as the README says it is saved, and what it reads back replaces it with no change', async () => {
    const policy = await created({
      name: 'Deploy-Infra',
      description: '',
      issuer: '',
      claims: { repository: 'Acme/Infra', ref: 'refs/heads/main', environment: '' },
      permissions: ['secure-registry:read', 'harden-runner:write', 'harden-runner:write', 'audit-log:read'],
    });
    expect(policy).toMatchObject({
      name: 'Deploy-Infra',
      description: null,
      issuer: GITHUB,
      claims: { repository: 'Acme/Infra', ref: 'refs/heads/main' },
      max_session_duration_seconds: 0,
      // Each id once, in the order of GET /v1/permissions; a :write does not add its :read to the list.
      permissions: ['harden-runner:write', 'secure-registry:read', 'audit-log:read'],
      allow_pull_request_target: false,
    });
    const { id, created_at, updated_at, ...body } = policy;
    t.clock.now += 60_000;
    const put = await t.request('PUT', `/v1/oidc/policies/${id}`, { key: tenantKey, json: body });
    expect(await put.json()).toMatchObject({ policy: { updated_at } });
    const sentBack = await t.request('PUT', `/v1/oidc/policies/${id}`, { key: tenantKey, json: policy });
    expect(sentBack.status).toBe(422);
    expect(await sentBack.json()).toMatchObject({
      errors: ['id', 'created_at', 'updated_at'].map((field) => ({ field, message: 'unknown field' })),
    });
  });

  it('lists policies by name and accepts the limits of max_session_duration_seconds', async () => {
    await created({ ...infraMain(), name: 'zeta', max_session_duration_seconds: 3600 });
    await created({ ...infraMain(), name: 'Alpha', max_session_duration_seconds: 0 });
    expect((await list()).map((p) => [p.name, p.max_session_duration_seconds])).toEqual([
      ['Alpha', 0],
      ['zeta', 3600],
    ]);
  });

  it('lists in the same byte order on either engine, whatever the database collation', async () => {
    const icu = await createTestDatabase(undefined, { icuLocale: 'en-US' });
    const other = await startTestBroker({ db: icu });
    try {
      const { key } = await other.createTenant('acme');
      for (const name of ['a_pol', 'a-pol2', 'B-pol', 'a.pol'])
        await other.request('POST', '/v1/oidc/policies', { key, json: { ...infraMain(), name } });
      const res = await other.request('GET', '/v1/oidc/policies', { key });
      const names = ((await res.json()) as { policies: { name: string }[] }).policies.map((p) => p.name);
      // Case-folded keys, compared byte by byte: '-' (0x2D) < '.' (0x2E) < '_' (0x5F) < letters.
      expect(names).toEqual(['a-pol2', 'a.pol', 'a_pol', 'B-pol']);
      // And so do pages, each continuing after the name the one before ended with.
      const paged: string[] = [];
      let cursor: string | null = null;
      do {
        const query: string = `?limit=1${cursor ? `&cursor=${cursor}` : ''}`;
        const page = (await (await other.request('GET', `/v1/oidc/policies${query}`, { key })).json()) as {
          policies: { name: string }[];
          next_cursor: string | null;
        };
        paged.push(...page.policies.map((p) => p.name));
        cursor = page.next_cursor;
      } while (cursor);
      expect(paged).toEqual(names);
    } finally {
      await other.close();
      await icu.drop();
    }
  });

  it('a query parameter is refused by name, not ignored: a filter that filters nothing lists, or deletes, every policy', async () => {
    const policy = await created(infraMain());
    const path = `/v1/oidc/policies/${policy.id}`;
    const refused = [
      await t.request('GET', '/v1/oidc/policies?names=other', { key: tenantKey }),
      await t.request('GET', `${path}?fields=name`, { key: tenantKey }),
      await t.request('PUT', `${path}?dry_run=true`, { key: tenantKey, json: { ...infraMain(), name: 'x' } }),
      await t.request('DELETE', `${path}?dry_run=true`, { key: tenantKey }),
      await t.request('POST', '/v1/oidc/policies?dry_run=true', {
        key: tenantKey,
        json: { ...infraMain(), name: 'y' },
      }),
    ];
    for (const [res, field] of refused.map(
      (r, i) => [r, ['names', 'fields', 'dry_run', 'dry_run', 'dry_run'][i]] as const,
    )) {
      expect(res.status).toBe(400);
      const takes = field === 'names' ? 'name, limit, cursor' : 'none';
      expect(await res.json()).toMatchObject({
        code: 'invalid_request',
        errors: [{ field, message: `unknown query parameter; this operation takes ${takes}` }],
      });
    }
    expect(await list()).toEqual([policy]);
  });

  it('answers other methods with 405 and the allowed ones', async () => {
    const policy = await created(infraMain());
    const res = await t.request('PATCH', `/v1/oidc/policies/${policy.id}`, { key: tenantKey, json: {} });
    expect(res.status).toBe(405);
    expect(res.headers.get('Allow')).toContain('PUT');
  });

  it.each(['GET', 'PUT', 'PATCH', 'DELETE'])(
    '%s on the dry run answers 405 allowing POST, not a policy id "evaluate"',
    async (method) => {
      const res = await t.request(method, '/v1/oidc/policies/evaluate', { key: tenantKey });
      expect(res.status).toBe(405);
      expect(res.headers.get('Allow')).toBe('POST');
      expect(await res.json()).toMatchObject({
        code: 'method_not_allowed',
        detail: expect.stringMatching(/POST/),
      });
    },
  );
});

describe('validation: 422 invalid_policy naming the field, and nothing written', () => {
  const base = infraMain();
  it.each<[string, Record<string, unknown>, string, RegExp?]>([
    ['missing name', { claims: base.claims, permissions: base.permissions }, 'name', /required/],
    ['empty name', { ...base, name: '' }, 'name', /required \(1–100 characters\)/],
    ['name over 100 characters', { ...base, name: 'x'.repeat(101) }, 'name', /at most 100/],
    [
      'description over 500 characters',
      { ...base, description: 'x'.repeat(501) },
      'description',
      /at most 500/,
    ],
    ['no owner nor repository', { ...base, claims: { ref: 'refs/heads/main' } }, 'claims'],
    ['malformed repository', { ...base, claims: { repository: 'acme' } }, 'claims.repository', /owner\/name/],
    [
      'owner contradicting the repository',
      { ...base, claims: { repository_owner: 'other', repository: 'acme/infra' } },
      'claims.repository',
      /owner/,
    ],
    ['max session 3601', { ...base, max_session_duration_seconds: 3601 }, 'max_session_duration_seconds'],
    ['max session -1', { ...base, max_session_duration_seconds: -1 }, 'max_session_duration_seconds'],
    ['max session 1.5', { ...base, max_session_duration_seconds: 1.5 }, 'max_session_duration_seconds'],
    ['unknown permission', { ...base, permissions: ['harden-runner:admin'] }, 'permissions[0]', /unknown/],
    [
      'a permission in another case',
      { ...base, permissions: ['Harden-Runner:Read'] },
      'permissions[0]',
      /did you mean "harden-runner:read"\?/,
    ],
    [
      'a misspelt permission',
      { ...base, permissions: ['harden-runner:read', 'harden-runer:write'] },
      'permissions[1]',
      /unknown permission "harden-runer:write"; did you mean "harden-runner:write"\?/,
    ],
    [
      'unknown permission after a good one',
      { ...base, permissions: ['harden-runner:read', 'nope'] },
      'permissions[1]',
    ],
    ['empty permissions', { ...base, permissions: [] }, 'permissions', /at least one/],
    ['untrusted issuer', { ...base, issuer: 'https://gitlab.example.com' }, 'issuer', /trust/],
    ['unknown field', { ...base, repo: 'acme/infra' }, 'repo', /unknown field/],
    ['unknown claim', { ...base, claims: { ...base.claims, repo: 'acme/infra' } }, 'claims.repo'],
    // Claims GitHub issues that no policy compares: the answer says which a policy can set instead.
    [
      'a sub, as a cloud trust policy is written',
      { ...base, claims: { ...base.claims, sub: 'repo:acme/infra:ref:refs/heads/main' } },
      'claims.sub',
      /can set only repository_owner, repository, job_workflow_ref, ref, environment, repository_owner_id and repository_id.*sub is never compared/,
    ],
    [
      'a claim GitHub issues that no policy compares',
      { ...base, claims: { ...base.claims, ref_type: 'tag' } },
      'claims.ref_type',
      /not a claim a policy can set; it can set only repository_owner, repository, /,
    ],
    // The name is quoted with its control character escaped, \u001E: the "E" of that escape and the text after
    // it are not a token, and the name shows whole rather than as "[a token]".
    [
      'unknown field with a control character before token-like text',
      { ...base, '\u001eyJa.eyJb.c': 1 },
      '"\\u001EyJa.eyJb.c"',
      /unknown field/,
    ],
    ['claim instead of claims', { name: 'x', claim: base.claims, permissions: base.permissions }, 'claim'],
    ['name of the wrong JSON type', { ...base, name: 42 }, 'name', /string/],
    [
      'numeric id as a number',
      { ...base, claims: { ...base.claims, repository_id: 632596897 } },
      'claims.repository_id',
      /^must be a string: write the number in quotes$/,
    ],
    ['a name as a number', { ...base, name: 2026 }, 'name', /^must be a string: write the number in quotes$/],
    [
      'an environment as a number',
      { ...base, claims: { ...base.claims, environment: 1 } },
      'claims.environment',
      /^must be a string: write the number in quotes$/,
    ],
    // No ref, repository, workflow or trusted issuer is a number: quoted, it would only be refused next.
    [
      'a ref as a number',
      { ...base, claims: { ...base.claims, ref: 5 } },
      'claims.ref',
      /^must be a string$/,
    ],
    [
      'a repository as a number',
      { ...base, claims: { repository: 632596897 } },
      'claims.repository',
      /^must be a string$/,
    ],
    [
      'a workflow as a number',
      { ...base, claims: { ...base.claims, job_workflow_ref: 1 } },
      'claims.job_workflow_ref',
      /^must be a string$/,
    ],
    ['an issuer as a number', { ...base, issuer: 1 }, 'issuer', /^must be a string$/],
    // No permission id is a number: quoting it would only be refused next as an unknown permission.
    [
      'a permission as a number',
      { ...base, permissions: [1] },
      'permissions[0]',
      /^must be a permission id, a string such as harden-runner:read/,
    ],
    ['boolean as a string', { ...base, allow_pull_request_target: 'true' }, 'allow_pull_request_target'],
    ['permissions as a string', { ...base, permissions: 'harden-runner:read' }, 'permissions'],
    ['claims as a list', { ...base, claims: ['acme/infra'] }, 'claims'],
  ])('%s', async (_, json, field, message) => {
    const { res, body } = await create(json);
    expect(res.status).toBe(422);
    const problem = body as unknown as {
      code: string;
      detail: string;
      errors: { field: string; message: string }[];
    };
    expect(problem.code).toBe('invalid_policy');
    expect(problem.errors.map((e) => e.field)).toContain(field);
    if (message) expect(problem.errors.find((e) => e.field === field)?.message).toMatch(message);
    expect(problem.detail).toContain(`${field}:`);
    expect(await list()).toEqual([]);
    expect(await policyEvents()).toEqual([]);
  });

  it.each([
    [
      'breaking rules only',
      {
        name: '',
        claims: { repository: 'acme', ref: 'main' },
        max_session_duration_seconds: 7200,
        permissions: ['nope', 'harden-runner:read', 'also-nope'],
      },
      [
        'name',
        'claims.repository',
        'claims.ref',
        'max_session_duration_seconds',
        'permissions[0]',
        'permissions[2]',
      ],
    ],
    [
      'with a field of the wrong type and an unknown one',
      {
        name: '',
        claims: { repository: 'acme', ref: 'main' },
        max_session_duration_seconds: '60',
        permissions: ['harden-runner:read'],
        repo: 'acme/infra',
      },
      ['name', 'claims.repository', 'claims.ref', 'max_session_duration_seconds', 'repo'],
    ],
    [
      'with a field of the wrong type and unknown permissions',
      {
        name: 'infra',
        description: 5,
        claims: { repository: 'acme/infra', nope: 'x' },
        permissions: ['bogus', 'harden-runner:read', 'harden-runner:admin'],
      },
      ['description', 'claims.nope', 'permissions[0]', 'permissions[2]'],
    ],
  ])('names every broken rule in one answer, each field once (%s)', async (_case, policy, expected) => {
    const { res, body } = await create(policy);
    expect(res.status).toBe(422);
    const fields = (body as unknown as { errors: { field: string }[] }).errors.map((e) => e.field);
    expect(fields).toEqual(expect.arrayContaining(expected));
    expect(new Set(fields).size).toBe(fields.length);
  });

  it('names a permission of a disabled category beside a field of the wrong type', async () => {
    const { key } = await t.createTenant(`limited-${++tenants}`, { disable: ['secure-registry'] });
    const policy = {
      ...infraMain(),
      max_session_duration_seconds: '60',
      permissions: ['secure-registry:read'],
    };
    const { res, body } = await create(policy, key);
    expect(res.status).toBe(422);
    expect((body as unknown as { errors: unknown[] }).errors).toEqual([
      { field: 'max_session_duration_seconds', message: expect.any(String) },
      { field: 'permissions[0]', message: expect.stringContaining('disabled') },
    ]);
  });

  it('refuses permissions of a category disabled for the tenant', async () => {
    const { key } = await t.createTenant(`limited-${++tenants}`, { disable: ['secure-registry'] });
    const { res, body } = await create({ ...infraMain(), permissions: ['secure-registry:read'] }, key);
    expect(res.status).toBe(422);
    expect(body).toMatchObject({
      errors: [{ field: 'permissions[0]', message: expect.stringContaining('disabled') }],
    });
  });

  it('an invalid replacement leaves the policy as it was', async () => {
    const policy = await created(infraMain());
    const res = await t.request('PUT', `/v1/oidc/policies/${policy.id}`, {
      key: tenantKey,
      json: { ...infraMain(), claims: { repository_owner: 'other', repository: 'acme/infra' } },
    });
    expect(res.status).toBe(422);
    expect(await list()).toEqual([policy]);
    expect((await policyEvents()).map((e) => e.type)).toEqual(['policy.created']);
  });
});

describe('warnings for valid but weak policies', () => {
  it('owner only: any workflow of any repository, on any branch', async () => {
    const { res, body } = await create({
      name: 'org',
      claims: { repository_owner: 'acme' },
      permissions: ['audit-log:read'],
    });
    expect(res.status).toBe(201);
    expect(body.warnings).toHaveLength(1);
    expect(body.warnings[0]).toMatch(/any repository of acme/);
  });

  it('write permissions without ref, job_workflow_ref or environment', async () => {
    const { body } = await create({
      name: 'writer',
      claims: { repository: 'acme/infra' },
      permissions: ['harden-runner:write'],
    });
    expect(body.warnings.some((w) => w.startsWith('permissions: harden-runner:write'))).toBe(true);
    const pinned = await create({
      name: 'pinned-writer',
      claims: { repository: 'acme/infra', environment: 'production' },
      permissions: ['harden-runner:write'],
    });
    expect(pinned.body.warnings).toEqual([]);
  });

  it('allow_pull_request_target, on create and on replace', async () => {
    const json = { ...infraMain(), allow_pull_request_target: true };
    const { body } = await create(json);
    expect(body.policy.allow_pull_request_target).toBe(true);
    expect(body.warnings).toEqual([expect.stringMatching(/^allow_pull_request_target: /)]);
    const put = await t.request('PUT', `/v1/oidc/policies/${body.policy.id}`, { key: tenantKey, json });
    expect(((await put.json()) as { warnings: string[] }).warnings).toEqual(body.warnings);
  });
});

describe('a replace that leaves a field out', () => {
  const GHES = 'https://ghe.example.com/_services/token';
  const claims = { repository: 'acme/infra', ref: 'refs/heads/main' };

  it('warns where that alone makes the policy broader: another issuer trusted, longer sessions', async () => {
    const b = await startTestBroker({
      env: { BROKER_TRUSTED_ISSUERS: JSON.stringify([{ issuer: GITHUB }, { issuer: GHES }]) },
    });
    try {
      const { key } = await b.createTenant('acme-ghes');
      const put = async (id: string, json: unknown) => {
        const res = await b.request('PUT', `/v1/oidc/policies/${id}`, { key, json });
        expect(res.status).toBe(200);
        return (await res.json()) as { policy: PolicyView; warnings: string[] };
      };
      const ghes = { name: 'ghes-deploy', issuer: GHES, claims, max_session_duration_seconds: 60 };
      const post = await b.request('POST', '/v1/oidc/policies', {
        key,
        json: { ...ghes, permissions: ['harden-runner:read'] },
      });
      const { policy } = (await post.json()) as { policy: PolicyView };

      // Only the permissions were meant to change.
      const changed = await put(policy.id, { name: 'ghes-deploy', claims, permissions: ['read-all'] });
      expect(changed.policy).toMatchObject({ issuer: GITHUB, max_session_duration_seconds: 0 });
      const warnings = [
        `issuer: left out, so this policy now trusts tokens of ${GITHUB}, the default, where it trusted ${GHES}; a replace sets every field: send issuer to keep it`,
        "max_session_duration_seconds: left out, so tokens now last up to 900 s, the broker's default, where they lasted up to 60 s; a replace sets every field: send max_session_duration_seconds to keep it",
      ];
      expect(changed.warnings).toEqual(warnings);
      const audit = await b.request('GET', '/v1/audit-events?type=policy.updated', { key });
      const [event] = ((await audit.json()) as { events: AuditEvent[] }).events;
      expect(event?.details.warnings).toEqual(warnings);

      // Sent in full, or left out where the default is no broader, nothing is said.
      expect((await put(policy.id, { ...ghes, permissions: ['read-all'] })).warnings).toEqual([]);
      await put(policy.id, { ...ghes, max_session_duration_seconds: 1800, permissions: ['read-all'] });
      const shorter = await put(policy.id, {
        name: 'ghes-deploy',
        issuer: GHES,
        claims,
        permissions: ['read-all'],
      });
      expect(shorter.policy.max_session_duration_seconds).toBe(0);
      expect(shorter.warnings).toEqual([]);

      // null is left out, and told so alike (a Go or Terraform client sends null for an unset pointer).
      await put(policy.id, { ...ghes, permissions: ['read-all'] });
      const nulled = await put(policy.id, {
        ...ghes,
        issuer: null,
        max_session_duration_seconds: null,
        permissions: ['read-all'],
      });
      expect(nulled.policy).toMatchObject({ issuer: GITHUB, max_session_duration_seconds: 0 });
      expect(nulled.warnings).toEqual(warnings);
      await put(policy.id, { ...ghes, permissions: ['read-all'] });

      // An empty issuer takes the default as a left-out one does (a client that sends every field, some empty), and
      // is told so alike.
      const emptied = await put(policy.id, { ...ghes, issuer: '', permissions: ['read-all'] });
      expect(emptied.policy.issuer).toBe(GITHUB);
      expect(emptied.warnings).toEqual([
        `issuer: empty, so this policy now trusts tokens of ${GITHUB}, the default, where it trusted ${GHES}; a replace sets every field: send issuer to keep it`,
      ]);
    } finally {
      await b.close();
    }
  });
});

describe('null for an optional field, as Go and Terraform clients send an unset pointer', () => {
  it('is taken as left out: the same policy, defaults and warnings, on create and on replace', async () => {
    const unset = {
      description: null,
      issuer: null,
      max_session_duration_seconds: null,
      allow_pull_request_target: null,
    };
    const nulls = {
      ...infraMain(),
      ...unset,
      claims: { repository: 'acme/infra', ref: null, environment: null, repository_id: null },
      permissions: ['harden-runner:write'],
    };
    const leftOut = {
      ...infraMain(),
      claims: { repository: 'acme/infra' },
      permissions: ['harden-runner:write'],
    };
    const sent = await create(nulls);
    expect(sent.res.status, JSON.stringify(sent.body)).toBe(201);
    const expected = await create({ ...leftOut, name: 'left-out' });
    const { id, created_at, updated_at, name, ...policy } = sent.body.policy;
    const { id: _, created_at: __, updated_at: ___, name: ____, ...asLeftOut } = expected.body.policy;
    expect(policy).toEqual(asLeftOut);
    expect(policy).toMatchObject({
      description: null,
      issuer: GITHUB,
      claims: { repository: 'acme/infra' },
      max_session_duration_seconds: 0,
      allow_pull_request_target: false,
    });
    expect(sent.body.warnings).toEqual(expected.body.warnings);
    expect(sent.body.warnings.length).toBeGreaterThan(0);

    // A replace sending null changes nothing that leaving the field out would not.
    const put = await t.request('PUT', `/v1/oidc/policies/${id}`, { key: tenantKey, json: nulls });
    expect(put.status).toBe(200);
    expect(await put.json()).toMatchObject({ policy: { updated_at } });
  });

  it('beside a field of the wrong type, only that field is named', async () => {
    const { res, body } = await create({
      ...infraMain(),
      name: 42,
      issuer: null,
      allow_pull_request_target: null,
    });
    expect(res.status).toBe(422);
    expect((body as unknown as { errors: { field: string }[] }).errors.map((e) => e.field)).toEqual(['name']);
  });

  it('is still refused for a field the policy cannot do without, and in the dry run and the exchange', async () => {
    for (const field of ['name', 'claims', 'permissions'] as const) {
      const { res, body } = await create({ ...infraMain(), [field]: null });
      expect(res.status, field).toBe(422);
      expect((body as unknown as { errors: { field: string }[] }).errors.map((e) => e.field)).toContain(
        field,
      );
    }
    const dryRun = await t.request('POST', '/v1/oidc/policies/evaluate', {
      key: tenantKey,
      json: { claims: { repository: 'acme/infra' }, policy: null },
    });
    expect(dryRun.status).toBe(400);
    expect(await dryRun.json()).toMatchObject({ errors: [{ field: 'policy' }] });
    const exchange = await t.request('POST', '/v1/oidc/token', {
      json: { oidc_token: 'x.y.z', policy: null, permissions: null },
    });
    expect(exchange.status).toBe(400);
    expect(await exchange.json()).toMatchObject({ code: 'invalid_request' });
  });
});

describe('no escalation', () => {
  it('a key with oidc-federation:write and harden-runner:read cannot grant harden-runner:write', async () => {
    const key = await fineGrained(['oidc-federation:write', 'harden-runner:read']);
    const { res, body } = await create(
      { ...infraMain(), permissions: ['harden-runner:read', 'harden-runner:write'] },
      key,
    );
    expect(res.status).toBe(403);
    expect(body).toMatchObject({ code: 'permission_escalation', missing: ['harden-runner:write'] });
    expect(await list()).toEqual([]);
    expect(await policyEvents()).toEqual([]);

    const mine = await created(infraMain(), key);
    const widen = await t.request('PUT', `/v1/oidc/policies/${mine.id}`, {
      key,
      json: { ...infraMain(), permissions: ['read-write-all'] },
    });
    expect(widen.status).toBe(403);
    expect(await widen.json()).toMatchObject({
      code: 'permission_escalation',
      missing: expect.arrayContaining(['harden-runner:write', 'audit-log:read']),
    });
    expect(await list()).toEqual([mine]);
  });
});

describe('names are unique in the tenant, case-insensitively', () => {
  it('409 conflict naming name, on create and on rename; renaming a policy to itself is fine', async () => {
    const first = await created(infraMain());
    const { res, body } = await create({ ...infraMain(), name: 'DEPLOY-INFRA' });
    expect(res.status).toBe(409);
    expect(body).toMatchObject({ code: 'conflict', errors: [{ field: 'name' }] });

    const second = await created({ ...infraMain(), name: 'other' });
    const rename = await t.request('PUT', `/v1/oidc/policies/${second.id}`, {
      key: tenantKey,
      json: { ...infraMain(), name: 'Deploy-Infra' },
    });
    expect(rename.status).toBe(409);
    expect(await rename.json()).toMatchObject({ code: 'conflict', errors: [{ field: 'name' }] });
    expect((await list()).map((p) => p.name)).toEqual(['deploy-infra', 'other']);

    const recase = await t.request('PUT', `/v1/oidc/policies/${first.id}`, {
      key: tenantKey,
      json: { ...infraMain(), name: 'Deploy-Infra' },
    });
    expect(recase.status).toBe(200);
    expect((await policyEvents()).map((e) => e.type)).toEqual([
      'policy.updated',
      'policy.created',
      'policy.created',
    ]);
  });

  it('a name that differs only in case or accent encoding is taken, and the 409 names the policy that has it', async () => {
    const holder = await created({ ...infraMain(), name: 'Déploiement' });
    const decomposed = 'DE\u0301PLOIEMENT';
    const { res, body } = await create({ ...infraMain(), name: decomposed });
    expect(res.status).toBe(409);
    expect(body).toMatchObject({
      code: 'conflict',
      detail: `trust policy "Déploiement" (id ${holder.id}) already has this name: names are compared ignoring case, accent encoding and invisible characters, so "${decomposed}" is the same name; choose another`,
      errors: [{ field: 'name' }],
      policy: { id: holder.id, name: 'Déploiement' },
    });
    const again = await create({ ...infraMain(), name: 'Déploiement' });
    expect(again.res.status).toBe(409);
    expect((again.body as unknown as { detail: string }).detail).toBe(
      `a trust policy named "Déploiement" already exists in this tenant (id ${holder.id}); choose another name`,
    );
    expect((await list()).map((p) => p.name)).toEqual(['Déploiement']);
    // Named in another case and encoding, it is found.
    const config = await t.request('GET', `/v1/oidc/config?policy=${encodeURIComponent(decomposed)}`, {
      key: tenantKey,
    });
    expect(config.status).toBe(200);
    expect(((await config.json()) as { workflow: string }).workflow).toContain('Déploiement');
  });

  it('a name that differs only in invisible characters (a zero-width space pasted with it) is the name every listing shows', async () => {
    const pasted = await created({ ...infraMain(), name: 'Rollout\u200b' });
    // Shown as "Rollout" everywhere, so it is "Rollout": taken, listed and selected by that name.
    const { res, body } = await create({ ...infraMain(), name: 'rollout' });
    expect(res.status).toBe(409);
    expect(body).toMatchObject({
      detail: `trust policy "Rollout\u200b" (id ${pasted.id}) already has this name: names are compared ignoring case, accent encoding and invisible characters, so "rollout" is the same name; choose another`,
      policy: { id: pasted.id },
    });
    const byName = await t.request('GET', '/v1/oidc/policies?name=Rollout', { key: tenantKey });
    expect(((await byName.json()) as { policies: PolicyView[] }).policies.map((p) => p.id)).toEqual([
      pasted.id,
    ]);
    const config = await t.request('GET', '/v1/oidc/config?policy=ROLLOUT', { key: tenantKey });
    expect(config.status).toBe(200);
    // A word joiner, a soft hyphen or an emoji's variation selector is as invisible.
    const heart = await created({ ...infraMain(), name: '\u2764\ufe0f-ops' });
    expect((await create({ ...infraMain(), name: '\u2764-ops' })).res.status).toBe(409);
    expect((await create({ ...infraMain(), name: 'Roll\u00adout' })).res.status).toBe(409);
    expect((await create({ ...infraMain(), name: 'Roll\u2060out' })).res.status).toBe(409);
    // A name of invisible characters only would show as nothing.
    const invisible = await create({ ...infraMain(), name: '\u200b\u2060' });
    expect(invisible.res.status).toBe(422);
    expect(invisible.body).toMatchObject({ errors: [{ field: 'name' }] });
    expect((await list()).map((p) => p.id).sort()).toEqual([pasted.id, heart.id].sort());
  });

  it("a name is looked up, never found by reading the tenant's whole list: the 409 and the snippet of a large tenant hold up no other tenant", async () => {
    const holder = await created({ ...infraMain(), name: 'Release' });
    await created({ ...infraMain(), name: 'other' });
    // On SQLite a read runs on the event loop: 100,000 policies read whole held every tenant's requests for most
    // of a second, once per refused name or snippet asked for.
    const { policies } = t.broker.store;
    const read = policies.list;
    let wholeReads = 0;
    policies.list = (...args) => {
      wholeReads++;
      return read(...args);
    };
    try {
      const { res, body } = await create({ ...infraMain(), name: 'RELEASE' });
      expect(res.status).toBe(409);
      expect((body as unknown as { detail: string }).detail).toBe(
        `trust policy "Release" (id ${holder.id}) already has this name: names are compared ignoring case, accent encoding and invisible characters, so "RELEASE" is the same name; choose another`,
      );
      const config = await t.request('GET', '/v1/oidc/config?policy=release', { key: tenantKey });
      expect(config.status).toBe(200);
      expect((await config.json()) as { policy: string }).toMatchObject({ policy: 'Release' });
      const missing = await t.request('GET', '/v1/oidc/config?policy=nope', { key: tenantKey });
      expect(missing.status).toBe(404);
    } finally {
      policies.list = read;
    }
    expect(wholeReads).toBe(0);
  });

  it('of two case variants created at once through two brokers on one database, one is created and one is 409', async () => {
    const other = await startTestBroker({ db: t.db });
    try {
      const answers = await Promise.all(
        [t, other].map((broker, i) =>
          broker.request('POST', '/v1/oidc/policies', {
            key: tenantKey,
            json: { ...infraMain(), name: i === 0 ? 'Release' : 'rELEASE' },
          }),
        ),
      );
      expect(answers.map((r) => r.status).sort()).toEqual([201, 409]);
      expect(await list()).toHaveLength(1);
    } finally {
      await other.close();
    }
  });
});

describe('finding a policy by name, and adopting the one a retried create made', () => {
  it('?name= lists the policy with that name, as the broker compares names, and an empty list when there is none', async () => {
    const deploy = await created({ ...infraMain(), name: 'Déploiement' });
    await created({ ...infraMain(), name: 'other' });
    const byName = async (name: string) => {
      const res = await t.request('GET', `/v1/oidc/policies?name=${encodeURIComponent(name)}`, {
        key: tenantKey,
      });
      expect(res.status).toBe(200);
      return ((await res.json()) as { policies: PolicyView[] }).policies;
    };
    expect(await byName('Déploiement')).toEqual([deploy]);
    expect(await byName('DE\u0301PLOIEMENT')).toEqual([deploy]);
    expect(await byName('deploiement')).toEqual([]);
    expect(await byName('nope')).toEqual([]);
    // Another tenant's policy of that name is not found.
    const other = (await t.createTenant(`other-${++tenants}`)).key;
    const theirs = await t.request('GET', '/v1/oidc/policies?name=other', { key: other });
    expect(await theirs.json()).toEqual({ policies: [], next_cursor: null });
  });

  it('an empty ?name= is refused, not taken for no filter: it would list every policy as if it were the one', async () => {
    await created(infraMain());
    for (const query of ['name=', 'name=a%00b', 'name=a&name=b']) {
      const res = await t.request('GET', `/v1/oidc/policies?${query}`, { key: tenantKey });
      expect(res.status, query).toBe(400);
      expect(await res.json()).toMatchObject({ code: 'invalid_request', errors: [{ field: 'name' }] });
    }
  });

  it('a create repeated after a timeout is 409 naming the policy it made in `policy`, which a client reads and adopts', async () => {
    const first = await created(infraMain());
    const { res, body } = await create(infraMain());
    expect(res.status).toBe(409);
    const problem = body as unknown as { policy: { id: string; name: string } };
    expect(problem.policy).toEqual({ id: first.id, name: 'deploy-infra' });
    const read = await t.request('GET', `/v1/oidc/policies/${problem.policy.id}`, { key: tenantKey });
    expect(await read.json()).toEqual(first);

    // A rename onto a taken name names the policy that has it, not the one renamed.
    const second = await created({ ...infraMain(), name: 'second' });
    const rename = await t.request('PUT', `/v1/oidc/policies/${second.id}`, {
      key: tenantKey,
      json: { ...infraMain(), name: 'DEPLOY-INFRA' },
    });
    expect(rename.status).toBe(409);
    expect(await rename.json()).toMatchObject({ policy: { id: first.id, name: 'deploy-infra' } });
  });
});

describe('conditional requests: ETag, If-Match and If-None-Match', () => {
  const path = (p: { id: string }) => `/v1/oidc/policies/${p.id}`;
  async function read(p: { id: string }) {
    const res = await t.request('GET', path(p), { key: tenantKey });
    expect(res.status).toBe(200);
    return { etag: res.headers.get('ETag')!, policy: (await res.json()) as PolicyView };
  }
  const put = (p: { id: string }, json: unknown, ifMatch?: string) =>
    t.request('PUT', path(p), { key: tenantKey, json, headers: ifMatch ? { 'If-Match': ifMatch } : {} });
  const del = (p: { id: string }, ifMatch?: string) =>
    t.request('DELETE', path(p), { key: tenantKey, headers: ifMatch ? { 'If-Match': ifMatch } : {} });

  it("create, read and replace answer a strong ETag of the policy's state: a change replaces it, a replace that changes nothing keeps it", async () => {
    const { res, body } = await create(infraMain());
    const etag = res.headers.get('ETag');
    expect(etag).toMatch(/^"[\x21\x23-\x7E]+"$/);
    expect((await read(body.policy)).etag).toBe(etag);

    t.clock.now += 60_000;
    const same = await put(body.policy, infraMain());
    expect(same.headers.get('ETag')).toBe(etag);
    const changed = await put(body.policy, { ...infraMain(), description: 'deploys' });
    const next = changed.headers.get('ETag');
    expect(next).not.toBe(etag);
    expect((await read(body.policy)).etag).toBe(next);
    // Another policy's tag is its own.
    const { res: other } = await create({ ...infraMain(), name: 'other' });
    expect(other.headers.get('ETag')).not.toBe(next);
  });

  it('a replace or delete with an If-Match the policy no longer has is 412 precondition_failed and writes nothing', async () => {
    const policy = await created(infraMain());
    const { etag: stale } = await read(policy);
    // Another writer changes it.
    t.clock.now += 1000;
    expect((await put(policy, { ...infraMain(), description: 'theirs' })).status).toBe(200);
    const before = await read(policy);

    for (const res of [
      await put(policy, { ...infraMain(), description: 'mine' }, stale),
      await del(policy, stale),
    ]) {
      expect(res.status).toBe(412);
      expect(res.headers.get('Content-Type')).toBe('application/problem+json');
      expect(await res.json()).toMatchObject({
        code: 'precondition_failed',
        detail: expect.stringContaining(`read it again with GET /v1/oidc/policies/${policy.id}`),
      });
    }
    expect(await read(policy)).toEqual(before);
    expect(before.policy.description).toBe('theirs');
    expect((await policyEvents()).map((e) => e.type)).toEqual(['policy.updated', 'policy.created']);
    // Even a replace that would change nothing is refused: the condition is about what the client last read.
    const { id, created_at, updated_at, ...unchanged } = before.policy;
    expect((await put(policy, unchanged, stale)).status).toBe(412);
  });

  it('the current ETag, a list holding it, or * lets the change through; a weak tag never matches', async () => {
    const policy = await created(infraMain());
    let { etag } = await read(policy);
    const weak = `W/${etag}`;
    expect((await put(policy, { ...infraMain(), description: 'a' }, weak)).status).toBe(412);

    const first = await put(policy, { ...infraMain(), description: 'a' }, etag);
    expect(first.status).toBe(200);
    expect(first.headers.get('ETag')).not.toBe(etag);
    const stale = etag;
    etag = first.headers.get('ETag')!;
    const listed = await put(policy, { ...infraMain(), description: 'b' }, `${stale}, "x,y" ,${etag}`);
    expect(listed.status).toBe(200);
    expect((await put(policy, { ...infraMain(), description: 'c' }, '*')).status).toBe(200);
    expect((await read(policy)).policy.description).toBe('c');

    expect((await del(policy, weak)).status).toBe(412);
    expect((await del(policy, (await read(policy)).etag)).status).toBe(204);
    // Gone: 404 whatever the condition, as without one.
    for (const condition of ['*', etag]) {
      expect((await del(policy, condition)).status).toBe(404);
      expect((await put(policy, infraMain(), condition)).status).toBe(404);
    }
  });

  it('an If-Match of weak tags only (an ETag a compressing proxy marked W/) is 412 saying so, not that the policy changed', async () => {
    const policy = await created(infraMain());
    const { etag } = await read(policy);
    for (const res of [
      await put(policy, { ...infraMain(), description: 'mine' }, `W/${etag}`),
      await del(policy, `W/${etag}, W/"other"`),
    ]) {
      expect(res.status).toBe(412);
      const { detail } = (await res.json()) as { detail: string };
      // Nothing changed the policy: a client told to read it again and resend its ETag would loop.
      expect(detail).not.toContain('changed since');
      expect(detail).toContain('weak');
      expect(detail).toContain('W/');
      expect(detail).toContain('proxy');
    }
    expect((await read(policy)).policy).toEqual(policy);
  });

  it('without If-Match a write is unconditional, as before: the last of two writers wins', async () => {
    const policy = await created(infraMain());
    await read(policy);
    t.clock.now += 1000;
    expect((await put(policy, { ...infraMain(), description: 'one' })).status).toBe(200);
    expect((await put(policy, { ...infraMain(), description: 'two' })).status).toBe(200);
    expect((await read(policy)).policy.description).toBe('two');
    expect((await del(policy)).status).toBe(204);
  });

  it('an If-Match that is no entity tag is 400 naming it, and writes nothing: an unquoted tag would otherwise match nothing', async () => {
    const policy = await created(infraMain());
    const { etag } = await read(policy);
    for (const value of [etag.slice(1, -1), '', `${etag} ${etag}`, `*, ${etag}`, '"a"b']) {
      for (const res of [
        await put(policy, { ...infraMain(), description: 'x' }, value || ' '),
        await del(policy, value || ' '),
      ]) {
        expect(res.status, value).toBe(400);
        expect(await res.json()).toMatchObject({
          code: 'invalid_request',
          errors: [{ field: 'If-Match', message: expect.stringContaining('quotes included') }],
        });
      }
    }
    expect((await read(policy)).policy).toEqual(policy);
  });

  it('If-None-Match with the current ETag answers 304 with no body; with another, the policy', async () => {
    const policy = await created(infraMain());
    const { etag } = await read(policy);
    for (const value of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
      const res = await t.request('GET', path(policy), {
        key: tenantKey,
        headers: { 'If-None-Match': value },
      });
      expect(res.status, value).toBe(304);
      expect(res.headers.get('ETag')).toBe(etag);
      expect(await res.text()).toBe('');
    }
    const res = await t.request('GET', path(policy), {
      key: tenantKey,
      headers: { 'If-None-Match': '"other"' },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(policy);
  });

  it('of two writers racing with the same ETag through two brokers on one database, one succeeds and the other is 412', async () => {
    const policy = await created(infraMain());
    const { etag } = await read(policy);
    // The same clock: the audit log lists events by the time their broker recorded them.
    const other = await startTestBroker({ db: t.db, clock: t.clock });
    try {
      const answers = await Promise.all(
        [t, other].map((broker, i) =>
          broker.request('PUT', path(policy), {
            key: tenantKey,
            headers: { 'If-Match': etag },
            json: { ...infraMain(), description: `writer ${i}` },
          }),
        ),
      );
      expect(answers.map((r) => r.status).sort()).toEqual([200, 412]);
      const winner = answers.find((r) => r.status === 200)!;
      const { policy: won } = (await winner.json()) as { policy: PolicyView };
      expect((await read(policy)).policy).toEqual(won);
    } finally {
      await other.close();
    }
    expect((await policyEvents()).map((e) => e.type)).toEqual(['policy.updated', 'policy.created']);
  });
  const withHeaders = (method: string, p: { id: string }, headers: Record<string, string>, json?: unknown) =>
    t.request(method, path(p), { key: tenantKey, headers, ...(json === undefined ? {} : { json }) });

  it('a read with an If-Match the policy no longer has is 412: a cheap check that a copy is current', async () => {
    const policy = await created(infraMain());
    const { etag: stale } = await read(policy);
    for (const value of [stale, `"other", ${stale}`, '*']) {
      const res = await withHeaders('GET', policy, { 'If-Match': value });
      expect(res.status, value).toBe(200);
      expect(res.headers.get('ETag')).toBe(stale);
      expect(await res.json()).toEqual(policy);
    }
    t.clock.now += 1000;
    expect((await put(policy, { ...infraMain(), description: 'theirs' })).status).toBe(200);

    const res = await withHeaders('GET', policy, { 'If-Match': stale });
    expect(res.status).toBe(412);
    expect(res.headers.get('ETag')).toBeNull();
    const problem = (await res.json()) as { code: string; detail: string };
    expect(problem).toMatchObject({ code: 'precondition_failed' });
    expect(problem.detail).toContain(
      `read it again with GET /v1/oidc/policies/${policy.id} without If-Match`,
    );
    expect(problem.detail).not.toContain('written');
    // Compared strongly, as for a change: the current tag marked weak by a proxy matches nothing, and is told so.
    const { etag } = await read(policy);
    const weak = await withHeaders('GET', policy, { 'If-Match': `W/${etag}` });
    expect(weak.status).toBe(412);
    expect(((await weak.json()) as { detail: string }).detail).toContain('proxy');
    // A value that is no entity tag is 400 naming it; an unknown policy is 404, whatever the condition.
    const unquoted = await withHeaders('GET', policy, { 'If-Match': etag.slice(1, -1) });
    expect(unquoted.status).toBe(400);
    expect(await unquoted.json()).toMatchObject({ errors: [{ field: 'If-Match' }] });
    await del(policy);
    expect((await withHeaders('GET', policy, { 'If-Match': etag })).status).toBe(404);
  });

  it('a read judges If-Match before If-None-Match (RFC 9110 §13.2.2): a stale If-Match is 412 even when If-None-Match would be 304', async () => {
    const policy = await created(infraMain());
    const { etag } = await read(policy);
    const current = await withHeaders('GET', policy, { 'If-Match': etag, 'If-None-Match': etag });
    expect(current.status).toBe(304);
    expect(current.headers.get('ETag')).toBe(etag);
    const stale = await withHeaders('GET', policy, { 'If-Match': '"other"', 'If-None-Match': etag });
    expect(stale.status).toBe(412);
  });

  it('a replace or delete with If-None-Match: * (only if there is none) on a policy that exists is 412 and writes nothing', async () => {
    const policy = await created(infraMain());
    const before = await read(policy);
    for (const res of [
      await withHeaders('PUT', policy, { 'If-None-Match': '*' }, { ...infraMain(), description: 'mine' }),
      await withHeaders('DELETE', policy, { 'If-None-Match': '*' }),
    ]) {
      expect(res.status).toBe(412);
      const problem = (await res.json()) as { code: string; detail: string };
      expect(problem.code).toBe('precondition_failed');
      expect(problem.detail).toBe(
        `trust policy ${policy.id} exists, and If-None-Match: * asks for the change only if it does not: nothing was written`,
      );
    }
    expect(await read(policy)).toEqual(before);
    expect((await policyEvents()).map((e) => e.type)).toEqual(['policy.created']);
  });

  it('a replace or delete whose If-None-Match lists the current ETag (weak or strong) is 412; one listing only others goes ahead', async () => {
    const policy = await created(infraMain());
    const { etag } = await read(policy);
    for (const value of [etag, `W/${etag}`, `"other", ${etag}`]) {
      for (const res of [
        await withHeaders('PUT', policy, { 'If-None-Match': value }, { ...infraMain(), description: 'x' }),
        await withHeaders('DELETE', policy, { 'If-None-Match': value }),
      ]) {
        expect(res.status, value).toBe(412);
        expect(((await res.json()) as { detail: string }).detail).toContain('a state If-None-Match names');
      }
    }
    expect((await read(policy)).policy).toEqual(policy);

    const replaced = await withHeaders(
      'PUT',
      policy,
      { 'If-None-Match': '"other"' },
      { ...infraMain(), description: 'x' },
    );
    expect(replaced.status).toBe(200);
    expect((await read(policy)).policy.description).toBe('x');
    // The tag the client held is no longer the current one: the change goes ahead.
    expect((await withHeaders('DELETE', policy, { 'If-None-Match': etag })).status).toBe(204);
    expect((await t.request('GET', path(policy), { key: tenantKey })).status).toBe(404);
  });

  it('a change judges If-Match before If-None-Match, and says which one failed; an If-None-Match that is no entity tag is 400', async () => {
    const policy = await created(infraMain());
    const { etag } = await read(policy);
    const body = { ...infraMain(), description: 'x' };
    const staleFirst = await withHeaders(
      'PUT',
      policy,
      { 'If-Match': '"other"', 'If-None-Match': '*' },
      body,
    );
    expect(staleFirst.status).toBe(412);
    expect(((await staleFirst.json()) as { detail: string }).detail).toContain('If-Match names');
    const both = await withHeaders('DELETE', policy, { 'If-Match': etag, 'If-None-Match': etag });
    expect(both.status).toBe(412);
    expect(((await both.json()) as { detail: string }).detail).toContain('a state If-None-Match names');

    for (const res of [
      await withHeaders('PUT', policy, { 'If-None-Match': etag.slice(1, -1) }, body),
      await withHeaders('DELETE', policy, { 'If-None-Match': etag.slice(1, -1) }),
    ]) {
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        code: 'invalid_request',
        errors: [{ field: 'If-None-Match' }],
      });
    }
    expect((await read(policy)).policy).toEqual(policy);
  });

  it("If-None-Match is judged in the change's own transaction: of two writers that both refuse the state the other makes, one is 412", async () => {
    const policy = await created(infraMain());
    t.clock.now += 1000;
    // Either writer's change leaves the policy in the state of this tag: its id, changed now.
    const afterEither = policyEtag({ id: policy.id, updatedAt: t.clock.now });
    const other = await startTestBroker({ db: t.db, clock: t.clock });
    try {
      const answers = await Promise.all(
        [t, other].map((broker, i) =>
          broker.request('PUT', path(policy), {
            key: tenantKey,
            headers: { 'If-None-Match': afterEither },
            json: { ...infraMain(), description: `writer ${i}` },
          }),
        ),
      );
      expect(answers.map((r) => r.status).sort()).toEqual([200, 412]);
      const winner = answers.find((r) => r.status === 200)!;
      expect(winner.headers.get('ETag')).toBe(afterEither);
      const { policy: won } = (await winner.json()) as { policy: PolicyView };
      expect((await read(policy)).policy).toEqual(won);
    } finally {
      await other.close();
    }
    expect((await policyEvents()).map((e) => e.type)).toEqual(['policy.updated', 'policy.created']);
  });
});

describe('tenant isolation', () => {
  it("another tenant's key gets 404 for get, put and delete, and lists nothing", async () => {
    const policy = await created(infraMain());
    const other = (await t.createTenant(`other-${++tenants}`)).key;
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const res = await t.request(method, `/v1/oidc/policies/${policy.id}`, {
        key: other,
        json: method === 'PUT' ? { ...infraMain(), name: 'hijacked' } : undefined,
      });
      expect(res.status, method).toBe(404);
      expect(await res.json()).toMatchObject({ code: 'not_found' });
    }
    expect(await list(other)).toEqual([]);
    expect(await list()).toEqual([policy]);
    // The same name is free in another tenant.
    await created(infraMain(), other);
  });
});

describe('permissions of the routes', () => {
  it('a read-only key can list, get, evaluate and read the config, but not change policies', async () => {
    const policy = await created(infraMain());
    const rotated = await t.request('POST', '/v1/api-keys/tenant-read-only/primary/rotate', {
      key: tenantKey,
    });
    const readOnly = ((await rotated.json()) as { key: string }).key;

    expect(await list(readOnly)).toEqual([policy]);
    expect((await t.request('GET', `/v1/oidc/policies/${policy.id}`, { key: readOnly })).status).toBe(200);
    const evaluated = await t.request('POST', '/v1/oidc/policies/evaluate', {
      key: readOnly,
      json: { claims: { repository: 'acme/infra', ref: 'refs/heads/main' } },
    });
    expect(evaluated.status).toBe(200);
    expect((await t.request('GET', '/v1/oidc/config', { key: readOnly })).status).toBe(200);

    for (const [method, path] of [
      ['POST', '/v1/oidc/policies'],
      ['PUT', `/v1/oidc/policies/${policy.id}`],
      ['DELETE', `/v1/oidc/policies/${policy.id}`],
    ] as const) {
      const res = await t.request(method, path, {
        key: readOnly,
        json: method === 'DELETE' ? undefined : infraMain(),
      });
      expect(res.status, method).toBe(403);
      expect(await res.json()).toMatchObject({
        code: 'forbidden',
        missing_permission: 'oidc-federation:write',
      });
    }
    expect(await list()).toEqual([policy]);
  });

  it('a key without oidc-federation:read sees no policy; no key at all is 401', async () => {
    const key = await fineGrained(['harden-runner:read']);
    for (const path of ['/v1/oidc/policies', '/v1/oidc/config']) {
      const res = await t.request('GET', path, { key });
      expect(res.status).toBe(403);
      expect(await res.json()).toMatchObject({ missing_permission: 'oidc-federation:read' });
    }
    expect((await t.request('GET', '/v1/oidc/policies')).status).toBe(401);
  });
});

describe('audit', () => {
  it('records create, update and delete with the actor, the target and what the policy grants', async () => {
    const key = await fineGrained(['oidc-federation:write', 'harden-runner:write']);
    const { body } = await create(
      { name: 'writer', claims: { repository: 'acme/infra' }, permissions: ['harden-runner:write'] },
      key,
    );
    const { id } = body.policy;
    await t.request('PUT', `/v1/oidc/policies/${id}`, { key, json: infraMain() });
    await t.request('DELETE', `/v1/oidc/policies/${id}`, { key });

    const events = await policyEvents();
    expect(events.map((e) => e.type)).toEqual(['policy.deleted', 'policy.updated', 'policy.created']);
    const [deleted, updated, createdEvent] = events as [AuditEvent, AuditEvent, AuditEvent];
    for (const event of events) {
      expect(event.outcome).toBe('success');
      expect(event.actor).toMatchObject({ kind: 'fine-grained', name: 'policy-admin' });
    }
    expect(createdEvent.target).toEqual({ type: 'trust_policy', id, name: 'writer' });
    expect(createdEvent.details).toMatchObject({
      issuer: GITHUB,
      claims: { repository: 'acme/infra' },
      permissions: ['harden-runner:write'],
      warnings: body.warnings,
    });
    expect(body.warnings.length).toBeGreaterThan(0);
    expect(updated.target).toEqual({ type: 'trust_policy', id, name: 'deploy-infra' });
    expect(updated.details).toMatchObject({
      claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
      permissions: ['harden-runner:read'],
      warnings: [],
      previous: {
        name: 'writer',
        claims: { repository: 'acme/infra' },
        permissions: ['harden-runner:write'],
      },
    });
    expect(deleted.target).toEqual({ type: 'trust_policy', id, name: 'deploy-infra' });
    expect(deleted.details).toMatchObject({ permissions: ['harden-runner:read'] });
  });

  it('a replace that changes nothing records no update and keeps updated_at, as a script applying on every run does', async () => {
    const body = { ...infraMain(), description: 'deploys', permissions: ['read-all'] };
    const policy = await created(body);
    for (const again of [body, { ...body, permissions: policy.permissions }]) {
      t.clock.now += 60_000;
      const put = await t.request('PUT', `/v1/oidc/policies/${policy.id}`, { key: tenantKey, json: again });
      expect(put.status).toBe(200);
      expect(await put.json()).toEqual({ policy, warnings: [] });
    }
    const got = await t.request('GET', `/v1/oidc/policies/${policy.id}`, { key: tenantKey });
    expect(await got.json()).toEqual(policy);
    expect((await policyEvents()).map((e) => e.type)).toEqual(['policy.created']);

    // Any change is one: a renamed case, a description dropped.
    for (const change of [
      { ...body, name: 'Deploy-Infra' },
      { ...body, name: 'Deploy-Infra', description: null },
    ]) {
      t.clock.now += 60_000;
      const put = await t.request('PUT', `/v1/oidc/policies/${policy.id}`, { key: tenantKey, json: change });
      expect(((await put.json()) as { policy: PolicyView }).policy.updated_at).toBe(
        new Date(t.clock.now).toISOString(),
      );
    }
    expect((await policyEvents()).map((e) => e.type)).toEqual([
      'policy.updated',
      'policy.updated',
      'policy.created',
    ]);
  });
});

describe('behind a path prefix (BROKER_PUBLIC_URL=https://host/broker, the proxy strips /broker)', () => {
  it("the created policy's Location, resolved as a client resolves it, is where the policy is read", async () => {
    const prefixed = await startTestBroker({ env: { BROKER_PUBLIC_URL: 'https://host/broker' } });
    try {
      const { key } = await prefixed.createTenant('acme');
      const res = await prefixed.request('POST', '/v1/oidc/policies', {
        key,
        json: { name: 'infra', claims: { repository: 'acme/infra' }, permissions: ['harden-runner:read'] },
      });
      expect(res.status).toBe(201);
      const { policy } = (await res.json()) as { policy: { id: string } };
      // RFC 9110 §10.2.2: a relative Location is resolved against the URL the client asked.
      const location = new URL(res.headers.get('Location')!, 'https://host/broker/v1/oidc/policies');
      expect(location.href).toBe(`https://host/broker/v1/oidc/policies/${policy.id}`);
    } finally {
      await prefixed.close();
    }
  });
});
