// DESIGN §4 through POST /v1/oidc/token: matching, selection, grants, lifetimes, what denials reveal and audit.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ALL_PERMISSIONS, type Permission } from '../../broker/core/permissions.js';
import type { PolicyRecord } from '../../broker/core/policy-types.js';
import { StoreUnavailable } from '../../broker/store/sql.js';
import { deferred } from '../support/deferred.js';
import { type Federation, startFederation } from '../support/federation.js';
import type { ClaimOverrides } from '../support/local-issuer.js';

let f: Federation;

// Rate limiting is not under test here; many exchanges of one repository run back to back.
beforeAll(async () => {
  f = await startFederation({ env: { BROKER_RATE_LIMIT_BURST: '100000' } });
});
afterAll(() => f.close());
afterEach(() => f.deletePolicies());

type Body = Record<string, unknown> & { code?: string; access_token?: string };
const decode = (segment: string) => JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
const payloadOf = (token: string) => decode(token.split('.')[1]!) as Record<string, unknown>;
const READS = ALL_PERMISSIONS.filter((p) => p.endsWith(':read'));
const WORKFLOW = 'acme/infra/.github/workflows/deploy.yml';
const JWR = `${WORKFLOW}@refs/heads/main`;

async function exchange(token: string, body: Record<string, unknown> = {}) {
  const res = await f.exchange(token, body);
  const text = await res.text();
  return { status: res.status, text, body: JSON.parse(text) as Body };
}

/** Exchanges and checks a mint: 200, and the minted JWT agrees with the response. */
async function allowed(overrides: ClaimOverrides = {}, request: Record<string, unknown> = {}) {
  const r = await exchange(f.issuer.sign(overrides), request);
  expect(r.status, r.text).toBe(200);
  const minted = payloadOf(r.body.access_token!);
  expect(minted).toMatchObject({
    policy: r.body.policy,
    scope: r.body.scope,
    permissions: r.body.permissions,
  });
  expect(minted.exp as number).toBe((minted.iat as number) + (r.body.expires_in as number));
  expect(r.body.expires_at).toBe(new Date((minted.exp as number) * 1000).toISOString());
  return { ...r.body, minted };
}

/** Exchanges and checks a refusal: the status and code, no token, and the OIDC token not used up. */
async function denied(status: number, code: string, overrides: ClaimOverrides = {}, request = {}) {
  const token = f.issuer.sign(overrides);
  const r = await exchange(token, request);
  expect({ status: r.status, code: r.body.code }).toEqual({ status, code });
  expect(r.body).not.toHaveProperty('access_token');
  // The replay record commits with the token.exchanged event, before any token is signed: none means no mint.
  const { iss, jti } = payloadOf(token) as { iss: string; jti: string };
  expect(await f.t.broker.store.tokens.wasExchanged(iss, jti)).toBe(false);
  // A verified job's refusal is audited once, with its reason, so the tenant's admins can see why.
  const audited = await auditFor('token.exchange_denied', jti);
  expect(audited).toEqual([
    expect.objectContaining({ outcome: 'denied', details: expect.objectContaining({ reason: code }) }),
  ]);
  return r;
}

interface AuditEvent {
  type: string;
  outcome: string;
  details: Record<string, unknown>;
}

async function auditFor(type: string, oidcJti: string): Promise<AuditEvent[]> {
  const res = await f.t.request('GET', `/v1/audit-events?type=${type}&limit=200`, { key: f.key });
  const { events } = (await res.json()) as { events: AuditEvent[] };
  return events.filter((e) => e.details.oidc_jti === oidcJti);
}

type Fields = Partial<PolicyRecord>;
type Token = [name: string, claims: ClaimOverrides, matches: boolean];
const on = (claims: PolicyRecord['claims'], more: Fields = {}): Fields => ({ claims, ...more });
const REPO = { repository: 'acme/infra' };
const IDS = { repository_owner_id: '131804563', repository_id: '632596897' };
const ENV = on({ ...REPO, environment: 'production' });
const MAIN = on({ ...REPO, ref: 'refs/heads/main' });
const ALTERNATION = 'refs/heads/main|refs/heads/release';
const jwr = (job_workflow_ref: string) => ({ job_workflow_ref });
const OTHER_REPO_WORKFLOW = 'evil/shared/.github/workflows/deploy.yml@refs/heads/main';

/** Each policy against tokens that must, or must not, match it. */
const MATCHING: [id: string, policy: Fields, tokens: Token[]][] = [
  [
    'G9',
    on({ ...REPO, ...IDS }),
    [['ACME/Infra of ACME', { repository: 'ACME/Infra', repository_owner: 'ACME' }, true]],
  ],
  ['G9', on({ repository_owner: 'Acme', repository: 'ACME/INFRA' }), [['acme/infra of acme', {}, true]]],
  [
    'G17',
    ENV,
    [
      ['environment Production', { environment: 'Production' }, true],
      ['environment absent', { environment: undefined }, false],
      ['environment staging', { environment: 'staging' }, false],
    ],
  ],
  [
    'G15',
    MAIN,
    [
      ['ref refs/heads/main', {}, true],
      ['ref refs/heads/evil', { ref: 'refs/heads/evil' }, false],
      ['ref refs/heads/Main', { ref: 'refs/heads/Main' }, false],
    ],
  ],
  [
    'G18',
    on({ ...REPO, ...jwr(JWR) }),
    [
      ['the same workflow@ref', {}, true],
      ['another file', jwr('acme/infra/.github/workflows/other.yml@refs/heads/main'), false],
      ['another ref', jwr(`${WORKFLOW}@refs/heads/dev`), false],
      ['a reusable workflow of another repository', jwr(OTHER_REPO_WORKFLOW), false],
      ['the file name in another case', jwr(JWR.replace('deploy', 'Deploy')), false],
    ],
  ],
  [
    'G18',
    on({ ...REPO, ...jwr(WORKFLOW) }),
    [
      ['the workflow without @ at another ref', jwr(`${WORKFLOW}@refs/tags/v1`), true],
      ['another file without @', jwr(`${WORKFLOW}.bak@refs/heads/main`), false],
      [
        'a file whose name starts with the workflow and an @',
        jwr(`${WORKFLOW}@evil.yml@refs/heads/main`),
        false,
      ],
      ['the workflow pinned by commit sha', jwr(`${WORKFLOW}@${'a'.repeat(40)}`), true],
      ['the workflow at something that is neither a ref nor a sha', jwr(`${WORKFLOW}@main`), false],
      ['another repository without @', jwr(OTHER_REPO_WORKFLOW), false],
    ],
  ],
  [
    'G10',
    on({ ...REPO, ...IDS }),
    [
      ['both ids equal', {}, true],
      ['owner re-registered (owner id differs)', { repository_owner_id: '999' }, false],
      ['repository re-created (repository id differs)', { repository_id: '999' }, false],
    ],
  ],
  [
    'G16',
    on(REPO),
    [
      ['pull_request_target', { event_name: 'pull_request_target' }, false],
      ['PULL_REQUEST_TARGET', { event_name: 'PULL_REQUEST_TARGET' }, false],
      ['pull_request', { event_name: 'pull_request' }, true],
    ],
  ],
  [
    'G16',
    on(REPO, { allow_pull_request_target: true }),
    [['allowed pull_request_target', { event_name: 'pull_request_target' }, true]],
  ],
  ['G11', on(REPO), [['the prefix acme/infra-fork', { repository: 'acme/infra-fork' }, false]]],
  ['G12', on({ repository: 'acme/*' }), [['acme/infra against acme/*', {}, false]]],
  [
    'G12',
    on({ repository: 'acme/infra*' }),
    [['acme/infra-evil against acme/infra*', { repository: 'acme/infra-evil' }, false]],
  ],
  [
    'G13',
    on({ ...REPO, ref: ALTERNATION }),
    [
      ['ref main against an alternation', {}, false],
      ['ref release against an alternation', { ref: 'refs/heads/release' }, false],
      ['the literal alternation string', { ref: ALTERNATION }, true],
    ],
  ],
  [
    'G14',
    ENV,
    [
      ['custom sub template', { sub: 'repo:acme/infra:ref:refs/heads/main' }, true],
      ['sub naming another repository', { sub: 'repo:evil/x:environment:production' }, true],
      [
        'sub says production, claim staging',
        { sub: 'repo:acme/infra:environment:production', environment: 'staging' },
        false,
      ],
    ],
  ],
];

describe('matching (DESIGN §4)', () => {
  for (const [id, fields, tokens] of MATCHING) {
    for (const [name, token, matches] of tokens) {
      it(`${id} ${JSON.stringify(fields.claims)}: ${name} → ${matches ? 'exchanged' : 'no_matching_policy'}`, async () => {
        await f.policy('p', fields);
        if (matches) {
          expect(await allowed(token)).toMatchObject({ policy: 'p', tenant: 'acme-corp' });
        } else {
          await denied(403, 'no_matching_policy', token);
        }
      });
    }
  }
});

describe('an Enterprise Managed User owner (handle_shortcode)', () => {
  it("an admin creates a policy for its repository, and the repository's jobs exchange their tokens", async () => {
    const claims = {
      repository_owner: 'mona_acme',
      repository: 'mona_acme/tools',
      job_workflow_ref: 'mona_acme/tools/.github/workflows/build.yml@refs/heads/main',
      ref: 'refs/heads/main',
    };
    const res = await f.t.request('POST', '/v1/oidc/policies', {
      key: f.key,
      json: { name: 'mona-tools', claims, permissions: ['harden-runner:read'] },
    });
    expect(res.status, await res.clone().text()).toBe(201);
    const got = await allowed({ ...claims, sub: 'repo:mona_acme/tools:ref:refs/heads/main' });
    expect(got).toMatchObject({ policy: 'mona-tools', permissions: ['harden-runner:read'] });
    expect(got.minted).toMatchObject({ repository: 'mona_acme/tools', repository_owner: 'mona_acme' });
    await denied(403, 'no_matching_policy', { ...claims, repository: 'mona_acme/other' });
  });
});

describe('selection', () => {
  it('the most specific matching policy wins, in the response and the minted token', async () => {
    await f.policy('broad', { claims: { repository_owner: 'acme' } });
    await f.policy('repo', { claims: REPO });
    const narrow = await f.policy('narrow', { claims: { ...REPO, ref: 'refs/heads/main' } });
    const got = await allowed();
    expect(got).toMatchObject({ policy: 'narrow' });
    expect(got.minted).toMatchObject({ policy: 'narrow', client_id: narrow, repository: 'acme/infra' });
  });

  it('a tie at the top is 409 ambiguous_policy naming both, sorted, and mints nothing', async () => {
    await f.policy('deploy-prod', { claims: { ...REPO, environment: 'production' } });
    await f.policy('deploy-main', { claims: { ...REPO, ref: 'refs/heads/main' } });
    await f.policy('broad', { claims: { repository_owner: 'acme' } });
    const token = f.issuer.sign();
    const r = await exchange(token);
    expect({ status: r.status, code: r.body.code }).toEqual({ status: 409, code: 'ambiguous_policy' });
    expect(r.body.policies).toEqual(['deploy-main', 'deploy-prod']);
    const jti = payloadOf(token).jti as string;
    expect(await auditFor('token.exchanged', jti)).toEqual([]);
    expect((await auditFor('token.exchange_denied', jti))[0]?.details).toMatchObject({
      reason: 'ambiguous_policy',
    });
  });

  it('only candidates covering the requested permissions compete', async () => {
    await f.policy('deploy-prod', { claims: { ...REPO, environment: 'production' } });
    await f.policy('deploy-main', {
      claims: { ...REPO, ref: 'refs/heads/main' },
      permissions: ['harden-runner:read', 'audit-log:read'],
    });
    expect(await allowed({}, { permissions: ['audit-log:read'] })).toMatchObject({ policy: 'deploy-main' });
  });

  it('a named policy is the only one considered; the name is case-insensitive', async () => {
    await f.policy('deploy-prod', { claims: { ...REPO, environment: 'production' } });
    await f.policy('deploy-main', { claims: { ...REPO, ref: 'refs/heads/main' } });
    await f.policy('narrowest', { claims: { ...REPO, ref: 'refs/heads/main', environment: 'production' } });
    await f.policy('release-only', { claims: { ...REPO, ref: 'refs/heads/release' } });
    expect(await allowed({}, { policy: 'DEPLOY-PROD' })).toMatchObject({ policy: 'deploy-prod' });
    await denied(403, 'no_matching_policy', {}, { policy: 'release-only' });
    await denied(403, 'no_matching_policy', {}, { policy: 'no-such-policy' });
  });

  it('a refusal of a named policy says which name was asked for, misspelt or not, and no more', async () => {
    await f.policy('deploy-main', { claims: { ...REPO, ref: 'refs/heads/main' } });
    await f.policy('release-only', { claims: { ...REPO, ref: 'refs/heads/release' } });
    // Whether a policy of that name exists is not told to a workflow: the two refusals differ in the name only.
    for (const policy of ['deploy-mian', 'release-only']) {
      const { body } = await denied(403, 'no_matching_policy', {}, { policy });
      expect(body.detail).toBe(
        `no trust policy named "${policy}" matches acme/infra (ref refs/heads/main, workflow ${JWR}, environment production)`,
      );
    }
  });
});

describe('granted permissions', () => {
  const both: Permission[] = ['harden-runner:read', 'audit-log:read'];

  it('no request grants the whole allowlist; a request grants exactly what it asks', async () => {
    await f.policy('p', { permissions: both });
    expect(await allowed()).toMatchObject({ permissions: both, scope: both.join(' ') });
    expect(await allowed({}, { permissions: ['audit-log:read'] })).toMatchObject({ scope: 'audit-log:read' });
  });

  it('a permission outside the allowlist is 403 permission_not_allowed naming only the request', async () => {
    await f.policy('p', { permissions: both });
    const r = await denied(403, 'permission_not_allowed', {}, { permissions: ['harden-runner:write'] });
    expect(r.body.not_allowed).toEqual(['harden-runner:write']);
    expect(r.text).not.toContain('audit-log:read');
  });

  it('when matching policies fall short equally, not_allowed comes from the first by name, as in the dry run', async () => {
    // Stored in the other order than their names sort, so that storage order cannot decide.
    await f.policy('zeta', { claims: { repository_owner: 'acme' }, permissions: ['audit-log:read'] });
    await f.policy('alpha', { claims: { repository: 'acme/infra' }, permissions: ['harden-runner:read'] });
    const request = { permissions: ['harden-runner:read', 'audit-log:read'] };
    const r = await denied(403, 'permission_not_allowed', {}, request);
    expect(r.body.not_allowed).toEqual(['audit-log:read']);
    const dryRun = await f.t.request('POST', '/v1/oidc/policies/evaluate', {
      key: f.key,
      json: { oidc_token: f.issuer.sign(), ...request },
    });
    expect(((await dryRun.json()) as { decision: { not_allowed?: string[] } }).decision.not_allowed).toEqual([
      'audit-log:read',
    ]);
  });

  it('read-all expands in the request; write in the allowlist covers read', async () => {
    await f.policy('reads', { permissions: READS });
    expect(await allowed({}, { permissions: ['read-all'] })).toMatchObject({ permissions: READS });
    await f.policy('narrow', { claims: { ...REPO, ref: 'refs/heads/main' }, permissions: both });
    const r = await denied(
      403,
      'permission_not_allowed',
      {},
      { permissions: ['read-all'], policy: 'narrow' },
    );
    expect(r.body.not_allowed).toEqual(READS.filter((p) => !both.includes(p)));
    await f.policy('writer', {
      claims: { ...REPO, environment: 'production' },
      permissions: ['harden-runner:write'],
    });
    const request = { permissions: ['harden-runner:read'], policy: 'writer' };
    expect(await allowed({}, request)).toMatchObject({ permissions: ['harden-runner:read'] });
  });

  it('an unknown permission id is 400 naming permissions[i], audited as a refused exchange', async () => {
    await f.policy('p');
    const r = await denied(400, 'invalid_request', {}, { permissions: ['harden-runner:read', 'nope:read'] });
    expect(r.body.errors).toEqual([expect.objectContaining({ field: 'permissions[1]' })]);
    // Every entry that grants nothing is named at once, each with the id it probably stands for.
    const several = await denied(
      400,
      'invalid_request',
      {},
      {
        permissions: ['Harden-Runner:Read', 'harden-runner:read', 'audit-log:write', 'oidc-federaton:write'],
      },
    );
    expect(several.body.errors).toEqual([
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
        message: expect.stringContaining(
          'unknown permission "oidc-federaton:write"; did you mean "oidc-federation:write"?',
        ),
      },
    ]);
    const token = f.issuer.sign();
    expect((await exchange(token, { permissions: ['nope:read'] })).status).toBe(400);
    const events = await auditFor('token.exchange_denied', payloadOf(token).jti as string);
    expect(JSON.stringify(events)).not.toContain('nope:read');
    expect(events).toEqual([
      expect.objectContaining({
        outcome: 'denied',
        details: expect.objectContaining({
          reason: 'invalid_request',
          errors: [{ field: 'permissions[0]', message: 'unknown permission' }],
        }),
      }),
    ]);
    // The token was not used up: the same token with a valid request is exchanged.
    expect((await exchange(token)).status).toBe(200);
  });
});

describe('lifetime', () => {
  it('policy max 0 uses the server default of 900 s', async () => {
    await f.policy('p', { max_session_duration_seconds: 0 });
    expect(await allowed()).toMatchObject({ expires_in: 900 });
    expect(await allowed({}, { duration_seconds: 3600 })).toMatchObject({ expires_in: 900 });
  });

  it('a lifetime, tenant or policy the request cannot have is refused saying what it takes, in plain words', async () => {
    await f.policy('p');
    // Refused before the token is looked at: no audit event, as for any request the broker cannot read.
    const messages = async (request: Record<string, unknown>) => {
      const r = await exchange(f.issuer.sign(), request);
      expect({ status: r.status, code: r.body.code }).toEqual({ status: 400, code: 'invalid_request' });
      return r.body.errors;
    };
    for (const duration_seconds of [0, 3601, 1.5, '900']) {
      expect(await messages({ duration_seconds })).toEqual([
        { field: 'duration_seconds', message: 'must be a whole number of seconds from 1 to 3600' },
      ]);
    }
    expect(await messages({ tenant: '' })).toEqual([
      { field: 'tenant', message: 'empty: name the tenant, or leave tenant out' },
    ]);
    expect(await messages({ policy: '' })).toEqual([
      { field: 'policy', message: 'empty: name a trust policy, or leave policy out' },
    ]);
    expect(await messages({ policy: 'p'.repeat(101) })).toEqual([
      { field: 'policy', message: 'a trust policy name is at most 100 characters' },
    ]);
    expect(await messages({ tenant: 'a'.repeat(64) })).toEqual([
      { field: 'tenant', message: 'a tenant name is at most 63 characters' },
    ]);
  });

  it('a request above the cap gets the cap, below it gets what it asked', async () => {
    await f.policy('p', { max_session_duration_seconds: 600 });
    expect(await allowed({}, { duration_seconds: 1200 })).toMatchObject({ expires_in: 600 });
    expect(await allowed({}, { duration_seconds: 300 })).toMatchObject({ expires_in: 300 });
    expect(await allowed()).toMatchObject({ expires_in: 600 });
  });

  it('BROKER_DEFAULT_SESSION_SECONDS replaces the default for policies with max 0', async () => {
    const g = await startFederation({ env: { BROKER_DEFAULT_SESSION_SECONDS: '1200' } });
    try {
      await g.policy('p');
      const res = await g.exchange(g.issuer.sign());
      const body = (await res.json()) as { expires_in: number; access_token: string };
      expect(body.expires_in).toBe(1200);
      const minted = payloadOf(body.access_token) as { exp: number; iat: number };
      expect(minted.exp - minted.iat).toBe(1200);
    } finally {
      await g.close();
    }
  });
});

describe('denials and the audit log', () => {
  it("a denial echoes the caller's own claims and no policy's values", async () => {
    await f.policy('p', {
      claims: { ...REPO, ref: 'refs/heads/secret-branch-name', environment: 'secret-env-name' },
    });
    const token = f.issuer.sign();
    const own = payloadOf(token);
    const r = await exchange(token);
    expect({ status: r.status, code: r.body.code }).toEqual({ status: 403, code: 'no_matching_policy' });
    const echoed = r.body.claims as Record<string, unknown>;
    expect(echoed).toMatchObject({
      repository: 'acme/infra',
      repository_owner: 'acme',
      ref: 'refs/heads/main',
      environment: 'production',
      job_workflow_ref: JWR,
    });
    for (const v of Object.values(echoed)) if (v !== null) expect(Object.values(own)).toContain(v);
    expect(r.text).not.toContain('secret-branch-name');
    expect(r.text).not.toContain('secret-env-name');
    const [event] = await auditFor('token.exchange_denied', own.jti as string);
    expect(event).toMatchObject({ outcome: 'denied', details: { reason: 'no_matching_policy' } });
    expect(event!.details.policies).toEqual([
      expect.objectContaining({
        name: 'p',
        mismatches: expect.arrayContaining([
          { field: 'ref', expected: 'refs/heads/secret-branch-name', actual: 'refs/heads/main' },
          { field: 'environment', expected: 'secret-env-name', actual: 'production' },
        ]),
      }),
    ]);
  });

  it('the detail of a denial names the claims that decided it: the environment, and a pull_request_target run', async () => {
    await f.policy('deploy-main', { claims: { ...REPO, ref: 'refs/heads/main' } });
    await f.policy('deploy-prod', { claims: { ...REPO, environment: 'production' } });
    // A pull_request_target run carries the base branch's ref and workflow: exactly what deploy-main names.
    const prt = await denied(403, 'no_matching_policy', {
      event_name: 'pull_request_target',
      environment: undefined,
    });
    expect(prt.body.detail).toBe(
      `no trust policy matches acme/infra (ref refs/heads/main, workflow ${JWR}, no environment, event pull_request_target, which only a policy with allow_pull_request_target matches)`,
    );
    // A job on another branch that does not declare the environment deploy-prod requires.
    const undeclared = await denied(403, 'no_matching_policy', {
      ref: 'refs/heads/dev',
      environment: undefined,
    });
    expect(undeclared.body.detail).toBe(
      `no trust policy matches acme/infra (ref refs/heads/dev, workflow ${JWR}, no environment)`,
    );
    const staging = await denied(403, 'no_matching_policy', {
      ref: 'refs/heads/dev',
      environment: 'staging',
    });
    expect(staging.body.detail).toBe(
      `no trust policy matches acme/infra (ref refs/heads/dev, workflow ${JWR}, environment staging)`,
    );
  });

  it("every exchange's audit event names the job's issuer, so a refusal for another issuer's policies says so", async () => {
    await f.policy('ghes', { claims: REPO, issuer: 'https://ghe.example.com/_services/token' });
    const refused = f.issuer.sign();
    expect((await exchange(refused)).body.code).toBe('no_matching_policy');
    const [denied] = await auditFor('token.exchange_denied', payloadOf(refused).jti as string);
    // No policy of this issuer is written for the repository: the event lists none, and says which issuer it was.
    expect(denied!.details).toMatchObject({ issuer: payloadOf(refused).iss, policies: [] });
    await f.policy('infra', { claims: REPO });
    const allowed = f.issuer.sign();
    expect((await exchange(allowed)).status).toBe(200);
    const [exchanged] = await auditFor('token.exchanged', payloadOf(allowed).jti as string);
    expect(exchanged!.details.issuer).toBe(payloadOf(allowed).iss);
  });

  it('a named policy of another repository or issuer is audited with the mismatches that kept it out', async () => {
    await f.policy('web', { claims: { repository: 'acme/web' } });
    await f.policy('ghes', { claims: REPO, issuer: 'https://ghe.example.com/_services/token' });
    await f.policy('infra', { claims: REPO, permissions: ['audit-log:read'] });
    const expected = {
      web: [{ field: 'repository', expected: 'acme/web', actual: 'acme/infra' }],
      ghes: [
        {
          field: 'issuer',
          expected: 'https://ghe.example.com/_services/token',
          actual: payloadOf(f.issuer.sign()).iss,
        },
      ],
    };
    for (const [name, mismatches] of Object.entries(expected)) {
      const token = f.issuer.sign();
      const r = await exchange(token, { policy: name.toUpperCase() });
      expect(r.body.code).toBe('no_matching_policy');
      // The workflow is told nothing about the policy; the tenant's admins see why it did not match.
      expect(r.text).not.toContain('acme/web');
      expect(r.text).not.toContain('ghe.example.com');
      const [event] = await auditFor('token.exchange_denied', payloadOf(token).jti as string);
      expect(event!.details.policies, name).toEqual([expect.objectContaining({ name, mismatches })]);
    }
  });

  it('a key sent as the policy to use is audited as its hint, never whole', async () => {
    await f.policy('p', { claims: REPO });
    const token = f.issuer.sign();
    const r = await exchange(token, { policy: f.key });
    expect(r.body.code).toBe('no_matching_policy');
    const [event] = await auditFor('token.exchange_denied', payloadOf(token).jti as string);
    expect(JSON.stringify(event)).not.toContain(f.key.slice(4, 36));
    expect(event!.details.requested_policy).toBe(`ssa_…${f.key.slice(-4)}`);
  });

  it('the claims a denial echoes, pasted into the dry run as they are, get the answer the exchange gives', async () => {
    await f.policy('any-event', { claims: REPO, permissions: ['harden-runner:read'] });
    const claims = { event_name: undefined, environment: undefined };
    const refused = await exchange(f.issuer.sign(claims), { permissions: ['audit-log:read'] });
    expect(refused.body.code).toBe('permission_not_allowed');
    const echoed = refused.body.claims as Record<string, unknown>;
    // The issuer is among them (a GHES policy is bound to its own), and absent claims are null.
    expect(echoed).toMatchObject({
      iss: payloadOf(f.issuer.sign()).iss,
      event_name: null,
      environment: null,
    });
    await allowed(claims);
    const dryRun = await f.t.request('POST', '/v1/oidc/policies/evaluate', {
      key: f.key,
      json: { claims: echoed },
    });
    const evaluated = (await dryRun.json()) as {
      decision: { allowed: boolean; policy?: string };
      warnings: string[];
    };
    expect(evaluated.decision).toMatchObject({ allowed: true, policy: 'any-event' });
    expect(evaluated.warnings.join(' ')).not.toMatch(/null/);
  });

  it("the request id of an exchange's answer, which the action prints on a failure, finds its audit event", async () => {
    await f.policy('main', MAIN);
    const requestIdOf = async (token: string) => {
      const res = await f.exchange(token);
      const id = res.headers.get('X-Request-Id');
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
      return { status: res.status, id };
    };
    const refused = f.issuer.sign({ ref: 'refs/heads/dev' });
    const granted = f.issuer.sign();
    const denial = await requestIdOf(refused);
    const success = await requestIdOf(granted);
    const replay = await requestIdOf(granted);
    expect([denial.status, success.status, replay.status]).toEqual([403, 200, 401]);
    const jtiOf = (token: string) => payloadOf(token).jti as string;
    expect((await auditFor('token.exchange_denied', jtiOf(refused)))[0]?.details.request_id).toBe(denial.id);
    expect((await auditFor('token.exchanged', jtiOf(granted)))[0]?.details.request_id).toBe(success.id);
    expect((await auditFor('token.exchange_denied', jtiOf(granted)))[0]?.details).toMatchObject({
      reason: 'token_replayed',
      request_id: replay.id,
    });
  });

  it('a permission denial is audited with its reason', async () => {
    await f.policy('p');
    const token = f.issuer.sign();
    expect((await exchange(token, { permissions: ['audit-log:read'] })).status).toBe(403);
    const [event] = await auditFor('token.exchange_denied', payloadOf(token).jti as string);
    expect(event?.details).toMatchObject({ reason: 'permission_not_allowed' });
  });

  it('a signing key that cannot be read fails the exchange before it is recorded: no success event, token not used up', async () => {
    await f.policy('p');
    const token = f.issuer.sign();
    const { jti } = payloadOf(token) as { jti: string };
    // Signing keys are read again once a minute: the next exchange reads them, and the database fails that read.
    f.t.clock.now += 61_000;
    const store = f.t.broker.store;
    const list = store.signingKeys.list;
    store.signingKeys.list = async () => {
      throw new StoreUnavailable(new Error('connection reset'));
    };
    try {
      const r = await exchange(token);
      expect({ status: r.status, code: r.body.code }).toEqual({ status: 503, code: 'not_ready' });
    } finally {
      store.signingKeys.list = list;
    }
    expect(await auditFor('token.exchanged', jti)).toEqual([]);
    // Once the database answers again, the same OIDC token is exchanged, and only that success is audited.
    const again = await exchange(token);
    expect(again.status, again.text).toBe(200);
    expect(await auditFor('token.exchanged', jti)).toMatchObject([
      { details: { token_jti: payloadOf(again.body.access_token!).jti } },
    ]);
  });

  /** Exchanges a new token while `during` runs within its recording, as a slow database lets other things happen. */
  async function exchangeWhileRecording(during: () => Promise<void>) {
    const { tokens } = f.t.broker.store;
    const { recordExchange } = tokens;
    tokens.recordExchange = async (...args) => {
      await during();
      return recordExchange.apply(tokens, args);
    };
    try {
      return await exchange(f.issuer.sign());
    } finally {
      tokens.recordExchange = recordExchange;
    }
  }

  it('a signing key retired while the exchange was recorded is not the one it signs with', async () => {
    await f.policy('p');
    // Meanwhile, a rotation's new key starts signing.
    const r = await exchangeWhileRecording(async () => {
      await f.t.broker.deps.signingKeys.rotate();
      f.t.clock.now += 10 * 60_000;
    });
    expect(r.status, r.text).toBe(200);
    // The token is one the broker itself believes: signed by the key that signs now.
    const whoami = await f.t.request('GET', '/v1/whoami', { key: r.body.access_token });
    expect(whoami.status, await whoami.clone().text()).toBe(200);
  });

  it('a signing key that cannot be read again once the exchange is recorded: the one read before signs', async () => {
    await f.policy('p');
    const keys = f.t.broker.store.signingKeys;
    const { list } = keys;
    let r: Awaited<ReturnType<typeof exchange>>;
    try {
      // Meanwhile, the minutely reload of the signing keys is due, and it fails.
      r = await exchangeWhileRecording(async () => {
        f.t.clock.now += 61_000;
        keys.list = async () => {
          throw new StoreUnavailable(new Error('connection reset'));
        };
      });
    } finally {
      keys.list = list;
    }
    expect(r.status, r.text).toBe(200);
    expect((await f.t.request('GET', '/v1/whoami', { key: r.body.access_token })).status).toBe(200);
  });

  it('a success is audited with the minted jti, repository and run id', async () => {
    await f.policy('p');
    const token = f.issuer.sign({ run_id: '4242' });
    const r = await exchange(token);
    expect(r.status).toBe(200);
    const events = await auditFor('token.exchanged', payloadOf(token).jti as string);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      outcome: 'success',
      details: { token_jti: payloadOf(r.body.access_token!).jti, repository: 'acme/infra', run_id: '4242' },
    });
  });
});

describe('RFC 8693 form', () => {
  const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
  const ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
  const form = (fields: Record<string, string>, headers: Record<string, string> = {}) =>
    f.t.request('POST', '/v1/oidc/token', {
      body: new URLSearchParams(fields).toString(),
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...headers },
    });

  it('exchanges an id_token or jwt subject token, honouring scope', async () => {
    await f.policy('p', { permissions: ['harden-runner:read', 'audit-log:read'] });
    for (const type of [ID_TOKEN, 'urn:ietf:params:oauth:token-type:jwt']) {
      const fields = { grant_type: GRANT, subject_token: f.issuer.sign(), subject_token_type: type };
      const res = await form({ ...fields, scope: 'harden-runner:read' });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({
        token_type: 'Bearer',
        issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        permissions: ['harden-runner:read'],
        scope: 'harden-runner:read',
        policy: 'p',
      });
    }
  });

  it('an unknown permission in scope is 400 naming scope, the field the form has', async () => {
    await f.policy('p');
    const fields = { grant_type: GRANT, subject_token: f.issuer.sign(), subject_token_type: ID_TOKEN };
    const res = await form({ ...fields, scope: 'harden-runner:read nope' });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 'invalid_request',
      errors: [
        {
          field: 'scope',
          message: expect.stringMatching(/^unknown permission "nope" \(GET \/v1\/permissions/),
        },
      ],
    });
  });

  it("a scope of thousands of unknown entries is audited once per reason: a job cannot write a row many times a denial's size", async () => {
    await f.policy('p');
    const token = f.issuer.sign();
    const scope = Array(2000).fill('x').join(' ');
    const res = await form({ grant_type: GRANT, subject_token: token, subject_token_type: ID_TOKEN, scope });
    expect(res.status).toBe(400);
    const events = await auditFor('token.exchange_denied', payloadOf(token).jti as string);
    expect(events).toHaveLength(1);
    expect(events[0]!.details).toMatchObject({
      reason: 'invalid_request',
      errors: [{ field: 'scope', message: 'unknown permission' }],
    });
    expect(JSON.stringify(events[0]).length).toBeLessThan(2048);
  });

  it('permissions joined by commas in one scope or entry are told to be separated, never taken for one category', async () => {
    await f.policy('p', { permissions: ['harden-runner:read', 'audit-log:read'] });
    const fields = { grant_type: GRANT, subject_token: f.issuer.sign(), subject_token_type: ID_TOKEN };
    const res = await form({ ...fields, scope: 'harden-runner:read,audit-log:read' });
    expect(res.status).toBe(400);
    const scope = ((await res.json()) as { errors: { field: string; message: string }[] }).errors;
    expect(scope).toEqual([
      { field: 'scope', message: expect.stringContaining('"harden-runner:read audit-log:read"') },
    ]);
    expect(scope[0]!.message).toContain('spaces');
    expect(scope[0]!.message).not.toContain('harden-runner:write');
    const listed = await f.t.request('POST', '/v1/oidc/token', {
      json: { oidc_token: f.issuer.sign(), permissions: ['harden-runner:read, audit-log:read'] },
    });
    expect(listed.status).toBe(400);
    const list = ((await listed.json()) as { errors: { field: string; message: string }[] }).errors;
    expect(list).toEqual([
      {
        field: 'permissions[0]',
        message: expect.stringContaining('["harden-runner:read", "audit-log:read"]'),
      },
    ]);
    expect(list[0]!.message).not.toContain('harden-runner:write');
  });

  it('a wrong grant_type or subject_token_type is 400 naming the field, and uses up nothing', async () => {
    await f.policy('p');
    const token = f.issuer.sign();
    const good = { grant_type: GRANT, subject_token: token, subject_token_type: ID_TOKEN };
    for (const [field, wrong] of [
      ['grant_type', 'client_credentials'],
      ['subject_token_type', 'urn:ietf:params:oauth:token-type:access_token'],
    ] as const) {
      const res = await form({ ...good, [field]: wrong });
      const body = (await res.json()) as { code: string; errors: { field: string }[] };
      expect({ status: res.status, code: body.code }).toEqual({ status: 400, code: 'invalid_request' });
      expect(body.errors.map((e) => e.field)).toEqual([field]);
    }
    expect((await form(good)).status).toBe(200);
  });

  it('takes the client_id a public client sends (token_endpoint_auth_methods_supported: none), and ignores it', async () => {
    await f.policy('p');
    const fields = { grant_type: GRANT, subject_token: f.issuer.sign(), subject_token_type: ID_TOKEN };
    const res = await form({ ...fields, client_id: 'my-ci' });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ policy: 'p', permissions: ['harden-runner:read'] });
  });

  it('RFC 8693 parameters it does not support are refused, each saying why, and use up nothing', async () => {
    await f.policy('p');
    const token = f.issuer.sign();
    const good = { grant_type: GRANT, subject_token: token, subject_token_type: ID_TOKEN };
    for (const [extra, expected] of [
      [{ audience: 'https://api.example' }, [['audience', /tenant's audience/]]],
      [{ resource: 'https://api.example/' }, [['resource', /tenant's API/]]],
      [
        { actor_token: f.issuer.sign(), actor_token_type: ID_TOKEN },
        [
          ['actor_token', /delegation/],
          ['actor_token_type', /delegation/],
        ],
      ],
      [
        { requested_token_type: 'urn:ietf:params:oauth:token-type:jwt' },
        [['requested_token_type', /issues access tokens only/]],
      ],
    ] as const) {
      const res = await form({ ...good, ...extra });
      const body = (await res.json()) as { code: string; errors: { field: string; message: string }[] };
      expect({ status: res.status, code: body.code }).toEqual({ status: 400, code: 'invalid_request' });
      expect(body.errors.map((e) => [e.field, e.message])).toEqual(
        expected.map(([field, message]) => [field, expect.stringMatching(message)]),
      );
    }
    expect((await form(good)).status).toBe(200);
  });

  it('errors carry the OAuth error and error_description (RFC 6749 §5.2, RFC 8693 §2.2.2) beside the problem', async () => {
    await f.policy('p', { permissions: ['harden-runner:read'] });
    const fields = { grant_type: GRANT, subject_token: f.issuer.sign(), subject_token_type: ID_TOKEN };
    for (const [sent, code, error] of [
      [{ ...fields, grant_type: 'client_credentials' }, 'invalid_request', 'invalid_request'],
      [{ ...fields, subject_token: 'a.b.c' }, 'invalid_token', 'invalid_request'],
      [
        { ...fields, subject_token: f.issuer.sign({ repository: 'acme/other' }) },
        'no_matching_policy',
        'invalid_request',
      ],
      [{ ...fields, scope: 'audit-log:read' }, 'permission_not_allowed', 'invalid_scope'],
    ] as const) {
      const res = await form(sent, { Accept: 'application/problem+json' });
      expect(res.headers.get('Content-Type')).toBe('application/problem+json');
      const body = (await res.json()) as Record<string, string>;
      expect(body).toMatchObject({ code, error });
      // The detail, in the characters RFC 6749 allows there (no double quote, no backslash, printable ASCII).
      expect(body.error_description).toBe(body.detail!.replaceAll('"', "'"));
      expect(body.error_description).toMatch(/^[\x20\x21\x23-\x5B\x5D-\x7E]+$/);
    }
    const replayed = f.issuer.sign();
    expect((await f.exchange(replayed)).status).toBe(200);
    expect(await (await f.exchange(replayed)).json()).toMatchObject({
      code: 'token_replayed',
      error: 'invalid_request',
    });
  });

  it('to an OAuth client library, which accepts application/json only, a refusal comes as application/json', async () => {
    // oauth4webapi and openid-client send this Accept, and read `error` from no other media type (RFC 6749 §5.2).
    await f.policy('p', { permissions: ['harden-runner:read'] });
    const fields = { grant_type: GRANT, subject_token: f.issuer.sign(), subject_token_type: ID_TOKEN };
    const res = await form({ ...fields, scope: 'audit-log:read' }, { Accept: 'application/json' });
    expect(res.status).toBe(403);
    expect(res.headers.get('Content-Type')).toBe('application/json');
    expect(res.headers.get('Vary')).toBe('Accept');
    expect(await res.json()).toMatchObject({
      error: 'invalid_scope',
      error_description: expect.stringContaining('audit-log:read'),
      code: 'permission_not_allowed',
    });
    // Whoever takes problem+json, or says nothing of it, gets it as before; the action accepts both.
    for (const [accept, type] of [
      ['application/json, application/problem+json', 'application/problem+json'],
      ['application/problem+json', 'application/problem+json'],
      ['application/json, application/problem+json;q=0.5', 'application/problem+json'],
      ['*/*', 'application/problem+json'],
      [undefined, 'application/problem+json'],
    ]) {
      const refused = await form(
        { ...fields, subject_token: 'a.b.c' },
        accept === undefined ? {} : { Accept: accept },
      );
      expect([accept, refused.headers.get('Content-Type')]).toEqual([accept, type]);
    }
    const declined = await form(
      { ...fields, subject_token: 'a.b.c' },
      { Accept: 'application/json, application/problem+json;q=0' },
    );
    expect(declined.headers.get('Content-Type')).toBe('application/json');
    // A refusal without an OAuth error, and any other endpoint, stay problem+json.
    const elsewhere = await f.t.request('GET', '/v1/whoami', { headers: { Accept: 'application/json' } });
    expect(elsewhere.headers.get('Content-Type')).toBe('application/problem+json');
    expect(elsewhere.headers.get('Vary')).toBeNull();
  });

  it('error_description shows a key pasted into scope only as its hint, as detail does, even split by U+200B', async () => {
    await f.policy('p', { permissions: ['harden-runner:read'] });
    const split = `${f.key.slice(0, 20)}\u200b${f.key.slice(20)}`;
    const fields = { grant_type: GRANT, subject_token: f.issuer.sign(), subject_token_type: ID_TOKEN };
    const res = await form({ ...fields, scope: split });
    expect(res.status).toBe(400);
    const text = await res.text();
    const body = JSON.parse(text) as Record<string, string>;
    expect(body.error).toBe('invalid_request');
    expect(body.error_description).toContain(`${f.key.slice(0, 4)}...${f.key.slice(-4)}`);
    expect(body.detail).toContain(`${f.key.slice(0, 4)}…${f.key.slice(-4)}`);
    // Neither half of the key's random part, in any field.
    expect(text).not.toContain(f.key.slice(6, 20));
    expect(text).not.toContain(f.key.slice(20, 36));
  });

  it('its parameters sent as JSON are told to come as a form, and use up nothing', async () => {
    await f.policy('p');
    const token = f.issuer.sign();
    const res = await f.t.request('POST', '/v1/oidc/token', {
      json: {
        grant_type: GRANT,
        subject_token: token,
        subject_token_type: ID_TOKEN,
        scope: 'harden-runner:read',
      },
    });
    expect(res.status).toBe(400);
    const { errors } = (await res.json()) as { errors: { field: string; message: string }[] };
    expect(errors).toEqual([
      { field: 'oidc_token', message: 'required' },
      ...['grant_type', 'subject_token', 'subject_token_type', 'scope'].map((field) => ({
        field,
        message: expect.stringContaining('as a form (Content-Type: application/x-www-form-urlencoded)'),
      })),
    ]);
    expect((await f.exchange(token)).status).toBe(200);
  });

  it('a parameter sent twice is refused as such (RFC 6749 §3.1), whatever its values', async () => {
    await f.policy('p');
    const good = `grant_type=${encodeURIComponent(GRANT)}&subject_token=${f.issuer.sign()}&subject_token_type=${encodeURIComponent(ID_TOKEN)}`;
    for (const [extra, field] of [
      ['&scope=harden-runner:read&scope=harden-runner:read', 'scope'],
      [`&grant_type=${encodeURIComponent(GRANT)}`, 'grant_type'],
    ] as const) {
      const res = await f.t.request('POST', '/v1/oidc/token', {
        body: good + extra,
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({
        code: 'invalid_request',
        errors: [{ field, message: 'sent more than once: send each parameter once' }],
      });
    }
  });
});

describe('a policy changed while an exchange decides (e.g. on another replica)', () => {
  /** Runs `change` once, after the exchange has read its candidate policies and before it commits. */
  function between(change: () => Promise<Response>) {
    const { store } = f.t.broker;
    const read = store.policies.candidates;
    store.policies.candidates = async (...args) => {
      store.policies.candidates = read;
      const rows = await read(...args);
      expect((await change()).ok).toBe(true);
      return rows;
    };
    return () => {
      store.policies.candidates = read;
    };
  }

  async function created(policy: Record<string, unknown>): Promise<string> {
    const res = await f.t.request('POST', '/v1/oidc/policies', { key: f.key, json: policy });
    expect(res.status).toBe(201);
    return ((await res.json()) as { policy: { id: string } }).policy.id;
  }

  it('deleted: no token comes from it; the exchange decides again and is refused', async () => {
    const id = await created({ name: 'doomed', ...MAIN, permissions: ['harden-runner:read'] });
    const restore = between(() => f.t.request('DELETE', `/v1/oidc/policies/${id}`, { key: f.key }));
    try {
      const token = f.issuer.sign();
      const r = await exchange(token);
      expect(r.status).toBe(403);
      expect(r.body.code).toBe('no_matching_policy');
      const oidcJti = payloadOf(token).jti as string;
      expect(await auditFor('token.exchanged', oidcJti)).toEqual([]);
      expect(await auditFor('token.exchange_denied', oidcJti)).toEqual([
        expect.objectContaining({ details: expect.objectContaining({ reason: 'no_matching_policy' }) }),
      ]);
    } finally {
      restore();
    }
  });

  it('a replay racing the change is refused and audited once, as every replay is', async () => {
    const policy = { name: 'edited', ...MAIN, permissions: ['harden-runner:read'] };
    const id = await created(policy);
    const { store } = f.t.broker;
    const read = store.policies.candidates;
    const firstMayGo = deferred();
    const firstHasRead = deferred();
    let calls = 0;
    store.policies.candidates = async (...args) => {
      const call = ++calls;
      const rows = await read(...args);
      if (call === 1) {
        // The first exchange has read the policy; it is replaced (only its description changes), and the first
        // waits for the second, so that both records reach the same group commit, the stale one first.
        const edited = { ...policy, description: 'edited' };
        expect((await f.t.request('PUT', `/v1/oidc/policies/${id}`, { key: f.key, json: edited })).ok).toBe(
          true,
        );
        firstHasRead.resolve();
        await firstMayGo.promise;
      } else if (call === 2) {
        firstMayGo.resolve();
      }
      return rows;
    };
    try {
      const token = f.issuer.sign();
      const first = exchange(token);
      await firstHasRead.promise;
      const [a, b] = await Promise.all([first, exchange(token)]);
      expect([a.status, b.status].sort()).toEqual([200, 401]);
      expect([a.body.code, b.body.code]).toContain('token_replayed');
      const oidcJti = payloadOf(token).jti as string;
      expect(await auditFor('token.exchanged', oidcJti)).toHaveLength(1);
      expect(await auditFor('token.exchange_denied', oidcJti)).toEqual([
        expect.objectContaining({ details: expect.objectContaining({ reason: 'token_replayed' }) }),
      ]);
    } finally {
      store.policies.candidates = read;
    }
  });

  it('narrowed: the token carries only what the policy allows once it has changed', async () => {
    const id = await created({
      name: 'narrowing',
      ...MAIN,
      permissions: ['harden-runner:read', 'audit-log:read'],
    });
    const narrower = { name: 'narrowing', ...MAIN, permissions: ['harden-runner:read'] };
    const restore = between(() =>
      f.t.request('PUT', `/v1/oidc/policies/${id}`, { key: f.key, json: narrower }),
    );
    try {
      const r = await exchange(f.issuer.sign());
      expect(r.status).toBe(200);
      expect(r.body.permissions).toEqual(['harden-runner:read']);
    } finally {
      restore();
    }
  });
});
