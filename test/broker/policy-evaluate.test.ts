// Trust-policy matching, selection, grant and lifetime (DESIGN §4; SECURITY-CASES E9 and G).
import { describe, expect, it } from 'vitest';
import type { Permission } from '../../broker/core/permissions.js';
import {
  type ClaimsRecord,
  type Decision,
  type EvaluationLimits,
  type EvaluationRequest,
  evaluatePolicies,
  explainPolicies,
  matchPolicy,
} from '../../broker/core/policy-evaluate.js';
import type { PolicyClaims, TrustPolicy } from '../../broker/core/policy-types.js';

const GITHUB = 'https://token.actions.githubusercontent.com';
const GHES = 'https://ghe.example.com/_services/token';
const WORKFLOW = 'acme/infra/.github/workflows/deploy.yml';

// The claims of github-oidc-token.example.json.
const TOKEN: Readonly<Record<string, unknown>> = Object.freeze({
  iss: GITHUB,
  aud: 'acme-corp.api.stepsecurity.io',
  sub: 'repo:acme/infra:environment:production',
  jti: '0d562f83-1de2-41f8-845d-82e8925cc070',
  environment: 'production',
  event_name: 'push',
  job_workflow_ref: `${WORKFLOW}@refs/heads/main`,
  ref: 'refs/heads/main',
  repository: 'acme/infra',
  repository_id: '632596897',
  repository_owner: 'acme',
  repository_owner_id: '131804563',
  workflow_ref: `${WORKFLOW}@refs/heads/main`,
});

let nextId = 1;
function policy(name: string, claims: PolicyClaims, extra: Partial<TrustPolicy> = {}): TrustPolicy {
  return {
    id: `pol_${nextId++}`,
    tenantId: 'ten_acme',
    name,
    description: null,
    issuer: GITHUB,
    claims,
    max_session_duration_seconds: 0,
    permissions: ['harden-runner:read'],
    allow_pull_request_target: false,
    createdAt: 0,
    updatedAt: 0,
    ...extra,
  };
}

const token = (patch: Record<string, unknown> = {}): ClaimsRecord => ({ ...TOKEN, ...patch });
const limits: EvaluationLimits = { defaultSessionSeconds: 900 };
const decide = (policies: TrustPolicy[], request: EvaluationRequest = {}, claims = token(), l = limits) =>
  evaluatePolicies(policies, claims, request, l);

function allowed(decision: Decision) {
  if (!decision.allow) throw new Error(`expected an allow decision, got ${decision.reason}`);
  return decision;
}

describe('matchPolicy', () => {
  it.each<[string, PolicyClaims, Record<string, unknown>]>([
    ['repository, exact', { repository: 'acme/infra' }, {}],
    ['repository, claim in other case (G9)', { repository: 'acme/infra' }, { repository: 'ACME/Infra' }],
    ['repository, policy in other case', { repository: 'Acme/INFRA' }, {}],
    ['owner, case-insensitive', { repository_owner: 'ACME' }, {}],
    ['environment, case-insensitive (G17)', { environment: 'production' }, { environment: 'Production' }],
    ['ref, exact', { ref: 'refs/heads/main' }, {}],
    ['workflow at the pinned ref', { job_workflow_ref: `${WORKFLOW}@refs/heads/main` }, {}],
    [
      'workflow without @ at any ref',
      { job_workflow_ref: WORKFLOW },
      { job_workflow_ref: `${WORKFLOW}@refs/tags/v9` },
    ],
    [
      'a pinned reusable workflow in another repository',
      { repository: 'acme/app', job_workflow_ref: `${WORKFLOW}@refs/heads/main` },
      { repository: 'acme/app' },
    ],
    ['pinned ids', { repository_id: '632596897', repository_owner_id: '131804563' }, {}],
    [
      'empty fields as wildcards',
      { repository: 'acme/infra', ref: '', environment: '' },
      { ref: 'refs/heads/x' },
    ],
    ['a literal | ref as that literal (G13)', { ref: 'refs/heads/a|b' }, { ref: 'refs/heads/a|b' }],
    ['pull_request events', { repository: 'acme/infra' }, { event_name: 'pull_request' }],
    ['a token without event_name', { repository: 'acme/infra' }, { event_name: undefined }],
  ])('matches %s', (_case, claims, patch) => {
    expect(matchPolicy(policy('p', claims), token(patch))).toEqual({ matched: true, mismatches: [] });
  });

  it.each<[string, PolicyClaims, Record<string, unknown>, string, string | null]>([
    [
      'a Cyrillic look-alike repository (G6)',
      { repository: 'acme/app' },
      { repository: 'аcme/app' },
      'repository',
      'аcme/app',
    ],
    [
      'a fullwidth repository (G7)',
      { repository: 'acme/app' },
      { repository: 'ａcme/app' },
      'repository',
      'ａcme/app',
    ],
    [
      'a Kelvin-sign owner that lower-cases to k',
      { repository_owner: 'kube' },
      { repository_owner: '\u212Aube' },
      'repository_owner',
      '\u212Aube',
    ],
    [
      'a repository with the policy value as prefix (G11)',
      { repository: 'acme/app' },
      { repository: 'acme/app-fork' },
      'repository',
      'acme/app-fork',
    ],
    [
      'a wildcard-looking policy value (G12)',
      { repository: 'acme/*' },
      { repository: 'acme/app-evil' },
      'repository',
      'acme/app-evil',
    ],
    [
      'a prefix-wildcard policy value (G12)',
      { repository: 'acme/app*' },
      { repository: 'acme/app-evil' },
      'repository',
      'acme/app-evil',
    ],
    [
      'a regex-looking ref (G13)',
      { ref: 'refs/heads/main|refs/heads/release' },
      {},
      'ref',
      'refs/heads/main',
    ],
    [
      'another branch (G15)',
      { ref: 'refs/heads/main' },
      { ref: 'refs/heads/evil' },
      'ref',
      'refs/heads/evil',
    ],
    ['a ref in other case', { ref: 'refs/heads/main' }, { ref: 'refs/heads/Main' }, 'ref', 'refs/heads/Main'],
    [
      'an absent environment (G17)',
      { environment: 'production' },
      { environment: undefined },
      'environment',
      null,
    ],
    [
      'another environment',
      { environment: 'production' },
      { environment: 'staging' },
      'environment',
      'staging',
    ],
    [
      'another workflow file (G18)',
      { job_workflow_ref: `${WORKFLOW}@refs/heads/main` },
      { job_workflow_ref: 'acme/infra/.github/workflows/evil.yml@refs/heads/main' },
      'job_workflow_ref',
      'acme/infra/.github/workflows/evil.yml@refs/heads/main',
    ],
    [
      'the workflow at another ref (G18)',
      { job_workflow_ref: `${WORKFLOW}@refs/heads/main` },
      { job_workflow_ref: `${WORKFLOW}@refs/heads/evil` },
      'job_workflow_ref',
      `${WORKFLOW}@refs/heads/evil`,
    ],
    [
      'a same-named workflow in another repository (G18)',
      { job_workflow_ref: `${WORKFLOW}@refs/heads/main` },
      { job_workflow_ref: 'evil/infra/.github/workflows/deploy.yml@refs/heads/main' },
      'job_workflow_ref',
      'evil/infra/.github/workflows/deploy.yml@refs/heads/main',
    ],
    [
      'another file, for a workflow pinned without @',
      { job_workflow_ref: WORKFLOW },
      { job_workflow_ref: `${WORKFLOW}-evil.yml@refs/heads/main` },
      'job_workflow_ref',
      `${WORKFLOW}-evil.yml@refs/heads/main`,
    ],
    [
      'a workflow in other case',
      { job_workflow_ref: WORKFLOW },
      { job_workflow_ref: 'Acme/infra/.github/workflows/deploy.yml@refs/heads/main' },
      'job_workflow_ref',
      'Acme/infra/.github/workflows/deploy.yml@refs/heads/main',
    ],
    [
      'another repository id (G10)',
      { repository: 'acme/infra', repository_id: '1' },
      {},
      'repository_id',
      '632596897',
    ],
    [
      'another owner id (G10)',
      { repository_owner: 'acme', repository_owner_id: '1' },
      {},
      'repository_owner_id',
      '131804563',
    ],
    [
      'an array repository (G3)',
      { repository: 'acme/infra' },
      { repository: ['acme/infra'] },
      'repository',
      null,
    ],
    [
      'an object repository (G4)',
      { repository: 'acme/infra' },
      { repository: { toString: () => 'acme/infra' } },
      'repository',
      null,
    ],
    [
      'a numeric owner id (G5)',
      { repository_owner_id: '4242' },
      { repository_owner_id: 4242 },
      'repository_owner_id',
      null,
    ],
    [
      'an array environment',
      { environment: 'production' },
      { environment: ['production'] },
      'environment',
      null,
    ],
  ])('rejects %s', (_case, claims, patch, field, actual) => {
    const result = matchPolicy(policy('p', claims), token(patch));
    expect(result.matched).toBe(false);
    expect(result.mismatches).toEqual([{ field, expected: expect.any(String), actual }]);
  });

  it('rejects pull_request_target unless the policy allows it (G16)', () => {
    const claims = token({ event_name: 'pull_request_target' });
    expect(matchPolicy(policy('p', { repository: 'acme/infra' }), claims)).toEqual({
      matched: false,
      mismatches: [
        {
          field: 'event_name',
          expected: expect.stringMatching(/except pull_request_target/),
          actual: 'pull_request_target',
        },
      ],
    });
    const allowing = policy('p', { repository: 'acme/infra' }, { allow_pull_request_target: true });
    expect(matchPolicy(allowing, claims).matched).toBe(true);
  });

  it('rejects a non-string event_name that might hide pull_request_target', () => {
    const result = matchPolicy(
      policy('p', { repository: 'acme/infra' }),
      token({ event_name: ['pull_request_target'] }),
    );
    expect(result.mismatches).toEqual([{ field: 'event_name', expected: expect.any(String), actual: null }]);
  });

  it.each([
    ['another trusted issuer (E9)', GHES],
    ['the issuer with a trailing slash', `${GITHUB}/`],
    ['no issuer', undefined],
  ])('rejects %s', (_case, iss) => {
    const result = matchPolicy(policy('p', { repository: 'acme/infra' }), token({ iss }));
    expect(result.mismatches).toEqual([{ field: 'issuer', expected: GITHUB, actual: iss ?? null }]);
  });

  it('ignores claims inherited from the prototype', () => {
    const inherited = Object.create({ repository: 'acme/infra' }) as ClaimsRecord;
    const result = matchPolicy(policy('p', { repository: 'acme/infra' }, { issuer: GITHUB }), inherited);
    expect(result.mismatches.map((m) => m.field)).toEqual(['issuer', 'repository']);
  });

  it('reports every mismatch with the policy value as written and the token value', () => {
    const p = policy('p', { repository: 'Acme/Infra', ref: 'refs/heads/main', environment: 'production' });
    const result = matchPolicy(
      p,
      token({ repository: 'acme/other', ref: 'refs/heads/dev', environment: undefined }),
    );
    expect(result.mismatches).toEqual([
      { field: 'repository', expected: 'Acme/Infra', actual: 'acme/other' },
      { field: 'ref', expected: 'refs/heads/main', actual: 'refs/heads/dev' },
      { field: 'environment', expected: 'production', actual: null },
    ]);
  });
});

describe('evaluatePolicies: selection', () => {
  it('picks the most specific matching policy', () => {
    const broad = policy('broad', { repository_owner: 'acme' });
    const repo = policy('repo', { repository: 'acme/infra' });
    const narrow = policy('narrow', {
      repository: 'acme/infra',
      ref: 'refs/heads/main',
      environment: 'production',
    });
    expect(allowed(decide([broad, narrow, repo])).policy).toBe(narrow);
  });

  it('counts only policies that match and cover the request', () => {
    const covering = policy('covering', { repository: 'acme/infra' }, { permissions: ['audit-log:read'] });
    const narrower = policy('narrower', { repository: 'acme/infra', ref: 'refs/heads/main' });
    const notMatching = policy(
      'other-ref',
      { repository: 'acme/infra', ref: 'refs/heads/dev', environment: 'x' },
      {
        permissions: ['audit-log:read'],
      },
    );
    const decision = decide([covering, narrower, notMatching], { permissions: ['audit-log:read'] });
    expect(allowed(decision).policy).toBe(covering);
  });

  it('names the tied policies, sorted, when the most specific are equally specific', () => {
    const a = policy('zeta', { repository: 'acme/infra', ref: 'refs/heads/main' });
    const b = policy('alpha', { repository: 'acme/infra', environment: 'production' });
    const lower = policy('lower', { repository: 'acme/infra' });
    const decision = decide([a, lower, b]);
    expect(decision).toMatchObject({
      allow: false,
      reason: 'ambiguous_policy',
      tiedPolicies: ['alpha', 'zeta'],
    });
  });

  it('is not ambiguous when a tie is below the most specific policy', () => {
    const top = policy('top', {
      repository: 'acme/infra',
      ref: 'refs/heads/main',
      environment: 'production',
    });
    const tiedA = policy('a', { repository: 'acme/infra' });
    const tiedB = policy('b', { repository_owner: 'acme' });
    expect(allowed(decide([tiedA, tiedB, top])).policy).toBe(top);
  });

  it('considers only policies bound to the token issuer (E9)', () => {
    const github = policy('github', { repository: 'acme/infra' });
    const ghes = policy('ghes', { repository: 'acme/infra' }, { issuer: GHES });
    expect(allowed(decide([github, ghes], {}, token({ iss: GHES }))).policy).toBe(ghes);
    expect(allowed(decide([github, ghes])).policy).toBe(github);
  });

  it('denies with no_matching_policy, telling the caller nothing about the policies', () => {
    const p = policy('prod', { repository: 'acme/infra', environment: 'production-secret-name' });
    const decision = decide([p]);
    expect(decision.allow).toBe(false);
    expect(Object.keys(decision).sort()).toEqual(['allow', 'audit', 'reason']);
    expect(decision).toMatchObject({ reason: 'no_matching_policy' });
    if (decision.allow) return;
    expect(decision.audit).toEqual({
      requestedPolicy: null,
      policies: [
        expect.objectContaining({
          id: p.id,
          name: 'prod',
          matched: false,
          mismatches: [{ field: 'environment', expected: 'production-secret-name', actual: 'production' }],
        }),
      ],
    });
  });

  it('denies with no_matching_policy when there are no policies', () => {
    expect(decide([])).toMatchObject({ allow: false, reason: 'no_matching_policy' });
  });
});

describe('evaluatePolicies: named policy', () => {
  const general = policy('general', {
    repository: 'acme/infra',
    ref: 'refs/heads/main',
    environment: 'production',
  });
  const deploy = policy('Deploy', { repository: 'acme/infra' }, { permissions: ['harden-runner:write'] });
  const elsewhere = policy('elsewhere', { repository: 'acme/other' });

  it('considers only the named policy, whatever the case of the name', () => {
    const decision = allowed(decide([general, deploy], { policy: 'dEPLOY' }));
    expect(decision.policy).toBe(deploy);
    expect(decision.permissions).toEqual(['harden-runner:read', 'harden-runner:write']);
  });

  it('settles a tie by name', () => {
    const twin = policy('twin', { repository: 'acme/infra' });
    expect(decide([deploy, twin])).toMatchObject({ reason: 'ambiguous_policy' });
    expect(allowed(decide([deploy, twin], { policy: 'twin' })).policy).toBe(twin);
  });

  it('answers an unknown name and a non-matching policy the same way', () => {
    const unknown = decide([general, elsewhere], { policy: 'missing' });
    const notMatching = decide([general, elsewhere], { policy: 'elsewhere' });
    expect(unknown).toMatchObject({ allow: false, reason: 'no_matching_policy' });
    expect(notMatching).toMatchObject({ allow: false, reason: 'no_matching_policy' });
    const { audit: _a, ...toldForUnknown } = unknown as Extract<Decision, { allow: false }>;
    const { audit: _b, ...toldForNotMatching } = notMatching as Extract<Decision, { allow: false }>;
    expect(toldForUnknown).toEqual(toldForNotMatching);
    expect(unknown).toMatchObject({ audit: { requestedPolicy: 'missing', policies: [] } });
    expect(notMatching).toMatchObject({ audit: { policies: [{ name: 'elsewhere', matched: false }] } });
  });

  it('denies with permission_not_allowed when the named policy does not cover the request', () => {
    const decision = decide([general, deploy], { policy: 'general', permissions: ['harden-runner:write'] });
    expect(decision).toMatchObject({
      allow: false,
      reason: 'permission_not_allowed',
      notAllowed: ['harden-runner:write'],
    });
  });
});

describe('evaluatePolicies: permissions', () => {
  const p = policy(
    'p',
    { repository: 'acme/infra' },
    { permissions: ['harden-runner:write', 'audit-log:read'] },
  );

  it('grants the whole allowlist when nothing is requested, each write with the read it implies', () => {
    const everything = ['harden-runner:read', 'harden-runner:write', 'audit-log:read'];
    expect(allowed(decide([p])).permissions).toEqual(everything);
    expect(allowed(decide([p], { permissions: [] })).permissions).toEqual(everything);
  });

  it('grants exactly the requested permissions, write implying read', () => {
    const decision = allowed(decide([p], { permissions: ['harden-runner:read', 'harden-runner:read'] }));
    expect(decision.permissions).toEqual(['harden-runner:read']);
    expect(allowed(decide([p], { permissions: ['harden-runner:write'] })).permissions).toEqual([
      'harden-runner:read',
      'harden-runner:write',
    ]);
  });

  it('denies permissions outside the allowlist, naming only requested ones', () => {
    const decision = decide([p], { permissions: ['audit-log:read', 'api-keys:write', 'api-keys:read'] });
    expect(decision).toMatchObject({
      allow: false,
      reason: 'permission_not_allowed',
      notAllowed: ['api-keys:write', 'api-keys:read'],
    });
  });

  it('denies a write when the allowlist has only the read', () => {
    const readOnly = policy(
      'r',
      { repository: 'acme/infra' },
      { permissions: ['audit-log:read', 'harden-runner:read'] },
    );
    expect(decide([readOnly], { permissions: ['harden-runner:write'] })).toMatchObject({
      reason: 'permission_not_allowed',
      notAllowed: ['harden-runner:write'],
    });
  });

  it('names the fewest requested permissions to drop when no matching policy covers them all', () => {
    const wide = policy(
      'wide',
      { repository: 'acme/infra' },
      { permissions: ['harden-runner:read', 'audit-log:read'] },
    );
    const narrow = policy(
      'narrow',
      { repository: 'acme/infra', ref: 'refs/heads/main' },
      {
        permissions: ['harden-runner:read'],
      },
    );
    const decision = decide([narrow, wide], {
      permissions: ['harden-runner:read', 'audit-log:read', 'api-keys:read'],
    });
    expect(decision).toMatchObject({ reason: 'permission_not_allowed', notAllowed: ['api-keys:read'] });
  });

  it('prefers no_matching_policy over permissions when nothing matches', () => {
    const other = policy('other', { repository: 'acme/other' }, { permissions: ['audit-log:read'] });
    expect(decide([other], { permissions: ['api-keys:write'] })).toMatchObject({
      reason: 'no_matching_policy',
    });
  });
});

describe('evaluatePolicies: lifetime', () => {
  const withMax = (max: number) =>
    policy('p', { repository: 'acme/infra' }, { max_session_duration_seconds: max });
  it.each<[string, number, number | undefined, number, number]>([
    ['policy 0 uses the server default', 0, undefined, 900, 900],
    ['policy max when nothing is requested', 600, undefined, 900, 600],
    ['a request above the policy max is capped', 600, 1200, 900, 600],
    ['a request below the policy max is honoured', 600, 300, 900, 300],
    ['a request above the server default is capped', 0, 5000, 900, 900],
    ['a request below the server default is honoured', 0, 120, 900, 120],
    ['a default configured above 3600 is capped', 0, undefined, 7200, 3600],
    ['a request above 3600 under a high default is capped', 0, 5000, 7200, 3600],
  ])('%s', (_case, max, requested, defaultSeconds, expected) => {
    const l: EvaluationLimits = {
      defaultSessionSeconds: defaultSeconds,
      requestedDurationSeconds: requested,
    };
    expect(allowed(decide([withMax(max)], {}, token(), l)).durationSeconds).toBe(expected);
  });
});

describe('explainPolicies', () => {
  const read = policy('read', { repository: 'acme/infra' });
  const write = policy(
    'write',
    { repository: 'acme/infra', ref: 'refs/heads/main' },
    {
      permissions: ['harden-runner:write'],
    },
  );
  const other = policy('other', { repository: 'acme/other' }, { permissions: ['harden-runner:write'] });
  const request: EvaluationRequest = { permissions: ['harden-runner:write'] as Permission[] };

  it('reports every policy and the decision the exchange makes', () => {
    const explanation = explainPolicies([read, write, other], token(), request, limits);
    expect(explanation.decision).toEqual(decide([read, write, other], request));
    expect(explanation.policies).toEqual([
      expect.objectContaining({
        name: 'read',
        matched: true,
        coversRequest: false,
        missing: ['harden-runner:write'],
        selected: false,
      }),
      expect.objectContaining({
        name: 'write',
        matched: true,
        coversRequest: true,
        selected: true,
        considered: true,
      }),
      expect.objectContaining({
        name: 'other',
        matched: false,
        coversRequest: true,
        selected: false,
        mismatches: [{ field: 'repository', expected: 'acme/other', actual: 'acme/infra' }],
      }),
    ]);
  });

  it('marks policies other than a named one as not considered', () => {
    const explanation = explainPolicies([read, write], token(), { policy: 'READ' }, limits);
    expect(explanation.policies.map((p) => [p.name, p.considered, p.selected])).toEqual([
      ['read', true, true],
      ['write', false, false],
    ]);
    expect(allowed(explanation.decision).permissions).toEqual(['harden-runner:read']);
  });

  it('shows the same denial the exchange gives, with every mismatch', () => {
    const claims = token({ repository: 'acme/else', ref: 'refs/heads/dev' });
    const explanation = explainPolicies([write], claims, {}, limits);
    expect(explanation.decision).toEqual(decide([write], {}, claims));
    expect(explanation.policies[0]!.mismatches.map((m) => m.field)).toEqual(['repository', 'ref']);
  });
});
