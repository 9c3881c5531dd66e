// Trust-policy validation (DESIGN §4): every error names its field, weak policies warn, defaults are applied.
import { describe, expect, it } from 'vitest';
import { type PolicyRulesContext, validatePolicy } from '../../broker/core/policy-rules.js';
import type { PolicyClaims, PolicyInput } from '../../broker/core/policy-types.js';

const GITHUB = 'https://token.actions.githubusercontent.com';
const GHES = 'https://ghe.example.com/_services/token';
const ctx: PolicyRulesContext = { trustedIssuers: [GITHUB, GHES], defaultIssuer: GITHUB };
const WORKFLOW = 'acme/infra/.github/workflows/deploy.yml';

function input(patch: Partial<PolicyInput> = {}, claims: PolicyClaims = {}): PolicyInput {
  return {
    name: 'deploy-infra',
    claims: { repository: 'acme/infra', ref: 'refs/heads/main', ...claims },
    permissions: ['harden-runner:read'],
    ...patch,
  };
}

function errorsOf(value: PolicyInput, context = ctx) {
  const result = validatePolicy(value, context);
  if (result.ok) throw new Error('expected the policy to be rejected');
  return result.errors;
}

function warningsOf(value: PolicyInput) {
  const result = validatePolicy(value, ctx);
  if (!result.ok) throw new Error(`expected a valid policy, got ${JSON.stringify(result.errors)}`);
  return result.warnings;
}

describe('normalisation', () => {
  it('applies every default and keeps the submitted values', () => {
    const submitted = input();
    const result = validatePolicy(submitted, ctx);
    expect(result).toEqual({
      ok: true,
      warnings: [],
      policy: {
        name: 'deploy-infra',
        description: null,
        issuer: GITHUB,
        claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
        max_session_duration_seconds: 0,
        permissions: ['harden-runner:read'],
        allow_pull_request_target: false,
      },
    });
  });

  it('treats empty strings as absent claims, description and issuer', () => {
    const result = validatePolicy(
      input({ description: '', issuer: '' }, { environment: '', job_workflow_ref: '', repository_id: '' }),
      ctx,
    );
    expect(result.ok && result.policy).toMatchObject({
      description: null,
      issuer: GITHUB,
      claims: { repository: 'acme/infra', ref: 'refs/heads/main' },
    });
    expect(result.ok && Object.keys(result.policy.claims)).toEqual(['repository', 'ref']);
  });

  it('keeps explicit values', () => {
    const result = validatePolicy(
      input({
        description: 'Deploys infra',
        issuer: GHES,
        max_session_duration_seconds: 1200,
        allow_pull_request_target: true,
      }),
      ctx,
    );
    expect(result.ok && result.policy).toMatchObject({
      description: 'Deploys infra',
      issuer: GHES,
      max_session_duration_seconds: 1200,
      allow_pull_request_target: true,
    });
  });
});

const long = (n: number, c = 'a') => c.repeat(n);

describe('accepted values', () => {
  it.each<[string, Partial<PolicyInput>, PolicyClaims]>([
    ['a 100-character name', { name: long(100) }, {}],
    ['a name with inner spaces and non-ASCII letters', { name: 'Déploiement prod' }, {}],
    ['a 500-character description with line breaks', { description: `${long(498)}\n\t` }, {}],
    ['the GHES issuer when the operator trusts it', { issuer: GHES }, {}],
    ['max 0 (server default)', { max_session_duration_seconds: 0 }, {}],
    ['max 3600', { max_session_duration_seconds: 3600 }, {}],
    ['an owner only', {}, { repository: '', repository_owner: 'acme' }],
    ['a 39-character owner', {}, { repository: '', repository_owner: long(39) }],
    [
      "an Enterprise Managed User's handle_shortcode as owner, repository owner and workflow owner",
      {},
      {
        repository_owner: 'mona_acme',
        repository: 'mona_acme/tools',
        job_workflow_ref: 'mona-cat_acme/shared/.github/workflows/build.yml@refs/heads/main',
      },
    ],
    [
      'a repository of any case with a matching owner',
      {},
      { repository: 'ACME/Infra', repository_owner: 'acme' },
    ],
    ['a repository name with _ . and -', {}, { repository: 'acme/my_repo.js-x' }],
    ['a 100-character repository name', {}, { repository: `acme/${long(100)}` }],
    ['a tag ref', {}, { ref: 'refs/tags/v1.2.3' }],
    ['a pull request ref', {}, { ref: 'refs/pull/12/merge' }],
    ['a workflow file at any ref', {}, { job_workflow_ref: WORKFLOW }],
    ['a workflow at a branch', {}, { job_workflow_ref: `${WORKFLOW}@refs/heads/main` }],
    ['a .yaml workflow', {}, { job_workflow_ref: 'acme/infra/.github/workflows/deploy.yaml@refs/tags/v1' }],
    [
      'a workflow file name with spaces',
      {},
      { job_workflow_ref: 'acme/infra/.github/workflows/Build and Deploy (1).yml@refs/heads/main' },
    ],
    ['a workflow pinned by commit sha', {}, { job_workflow_ref: `${WORKFLOW}@${'a1'.repeat(20)}` }],
    [
      'a reusable workflow in another repository',
      {},
      { job_workflow_ref: 'platform/shared/.github/workflows/deploy.yml@refs/heads/main' },
    ],
    ['a workflow ref other than claims.ref', {}, { job_workflow_ref: `${WORKFLOW}@refs/tags/v2` }],
    ['an environment with inner spaces', {}, { environment: 'Production EU' }],
    ['a 255-character environment', {}, { environment: long(255) }],
    ['numeric ids', {}, { repository_id: '632596897', repository_owner_id: '131804563' }],
    ['a 20-digit id', {}, { repository_id: '9'.repeat(20) }],
  ])('accepts %s', (_case, patch, claims) => {
    expect(validatePolicy(input(patch, claims), ctx).ok).toBe(true);
  });
});

describe('errors name the field', () => {
  it.each<[string, Partial<PolicyInput>, PolicyClaims, string, RegExp]>([
    ['an empty name', { name: '' }, {}, 'name', /required/],
    ['a name with leading whitespace', { name: ' deploy' }, {}, 'name', /whitespace/],
    ['a name with trailing whitespace', { name: 'deploy\t' }, {}, 'name', /whitespace/],
    ['a name with a control character', { name: 'de\u0000ploy' }, {}, 'name', /control/],
    ['a name with a bidi override', { name: 'deploy\u202Eyolp' }, {}, 'name', /bidirectional/],
    ['a 101-character name', { name: long(101) }, {}, 'name', /100/],
    ['a 501-character description', { description: long(501) }, {}, 'description', /500/],
    ['a description with NUL', { description: 'a\u0000b' }, {}, 'description', /control/],
    ['an issuer with a trailing slash (E1)', { issuer: `${GITHUB}/` }, {}, 'issuer', /exactly one of/],
    [
      'an upper-cased issuer host (E4)',
      { issuer: 'https://TOKEN.actions.githubusercontent.com' },
      {},
      'issuer',
      /trusts/,
    ],
    ['an untrusted issuer', { issuer: 'https://issuer.example' }, {}, 'issuer', /trusts/],
    [
      'no owner and no repository',
      {},
      { repository: undefined },
      'claims',
      /repository_owner or claims\.repository/,
    ],
    [
      'empty owner and repository',
      {},
      { repository: '', repository_owner: '' },
      'claims',
      /repository_owner or/,
    ],
    [
      'an owner starting with a hyphen',
      {},
      { repository_owner: '-acme' },
      'claims.repository_owner',
      /account name/,
    ],
    ['an owner with a space', {}, { repository_owner: 'ac me' }, 'claims.repository_owner', /account name/],
    [
      'an owner starting with an underscore',
      {},
      { repository_owner: '_acme' },
      'claims.repository_owner',
      /account name/,
    ],
    ['an owner with a dot', {}, { repository: 'ac.me/infra' }, 'claims.repository', /account name/],
    ['a Cyrillic owner (G6)', {}, { repository_owner: 'аcme' }, 'claims.repository_owner', /account name/],
    ['a 40-character owner', {}, { repository_owner: long(40) }, 'claims.repository_owner', /39/],
    ['a wildcard owner', {}, { repository_owner: 'acme*' }, 'claims.repository_owner', /compared whole/],
    ['a repository without a slash', {}, { repository: 'infra' }, 'claims.repository', /owner\/name/],
    ['a repository with two slashes', {}, { repository: 'acme/infra/x' }, 'claims.repository', /owner\/name/],
    ['a wildcard repository (G12)', {}, { repository: 'acme/*' }, 'claims.repository', /compared whole/],
    [
      'a prefix-wildcard repository (G12)',
      {},
      { repository: 'acme/app*' },
      'claims.repository',
      /compared whole/,
    ],
    ['a regex repository', {}, { repository: 'acme/(app|web)' }, 'claims.repository', /compared whole/],
    [
      'a character-class repository',
      {},
      { repository: 'acme/[ab]pp' },
      'claims.repository',
      /compared whole/,
    ],
    ['a fullwidth repository (G7)', {}, { repository: 'ａcme/app' }, 'claims.repository', /account name/],
    ['a repository named .', {}, { repository: 'acme/.' }, 'claims.repository', /not '\.'/],
    ['a repository named ..', {}, { repository: 'acme/..' }, 'claims.repository', /not '\.'/],
    [
      'a repository with a space (G8)',
      {},
      { repository: 'acme/in fra' },
      'claims.repository',
      /letters, digits/,
    ],
    ['a 101-character repository name', {}, { repository: `acme/${long(101)}` }, 'claims.repository', /100/],
    ['a short ref', {}, { ref: 'main' }, 'claims.ref', /refs\/heads\/main/],
    ['a ref without a name', {}, { ref: 'refs/heads' }, 'claims.ref', /full ref/],
    ['a ref ending in a slash', {}, { ref: 'refs/heads/' }, 'claims.ref', /full ref/],
    ['a ref with a space', {}, { ref: 'refs/heads/ma in' }, 'claims.ref', /whitespace/],
    ['a ref with a newline', {}, { ref: 'refs/heads/main\n' }, 'claims.ref', /whitespace/],
    ['a ref with ..', {}, { ref: 'refs/heads/a..b' }, 'claims.ref', /'\.\.'/],
    ['a wildcard ref', {}, { ref: 'refs/heads/*' }, 'claims.ref', /compared whole/],
    ['a ref ending in .lock', {}, { ref: 'refs/heads/x.lock' }, 'claims.ref', /full ref/],
    ['a ref with a hidden component', {}, { ref: 'refs/heads/.x' }, 'claims.ref', /full ref/],
    [
      'a workflow without .github/workflows',
      {},
      { job_workflow_ref: 'acme/infra/deploy.yml' },
      'claims.job_workflow_ref',
      /\.github\/workflows/,
    ],
    [
      'a workflow in a subdirectory',
      {},
      { job_workflow_ref: 'acme/infra/.github/workflows/a/b.yml' },
      'claims.job_workflow_ref',
      /\.github\/workflows/,
    ],
    [
      'a workflow that is not YAML',
      {},
      { job_workflow_ref: 'acme/infra/.github/workflows/deploy.txt' },
      'claims.job_workflow_ref',
      /\.yml or \.yaml/,
    ],
    [
      'a wildcard workflow file',
      {},
      { job_workflow_ref: 'acme/infra/.github/workflows/*.yml' },
      'claims.job_workflow_ref',
      /compared whole/,
    ],
    ...[
      'deploy\t(1).yml',
      'deploy\n.yml',
      'deploy\u00a0(1).yml',
      ' deploy.yml',
      'deploy.yml ',
      'deploy.yml @refs/heads/main',
    ].map((file): [string, Partial<PolicyInput>, PolicyClaims, string, RegExp] => [
      `the workflow file name ${JSON.stringify(file)}`,
      {},
      { job_workflow_ref: `acme/infra/.github/workflows/${file}` },
      'claims.job_workflow_ref',
      /workflow file in claims\.job_workflow_ref must not start or end with a space, nor contain control characters or white space other than spaces/,
    ]),
    [
      'a workflow in a wildcard repository',
      {},
      { job_workflow_ref: 'acme/*/.github/workflows/deploy.yml' },
      'claims.job_workflow_ref',
      /compared whole/,
    ],
    [
      'a workflow with a short ref',
      {},
      { job_workflow_ref: `${WORKFLOW}@main` },
      'claims.job_workflow_ref',
      /@refs\/heads\/main/,
    ],
    [
      'a workflow with nothing after @',
      {},
      { job_workflow_ref: `${WORKFLOW}@` },
      'claims.job_workflow_ref',
      /leave out @/,
    ],
    [
      'a workflow with a bad ref',
      {},
      { job_workflow_ref: `${WORKFLOW}@refs/heads/a..b` },
      'claims.job_workflow_ref',
      /'\.\.'/,
    ],
    [
      'a workflow with an upper-case sha',
      {},
      { job_workflow_ref: `${WORKFLOW}@${'A1'.repeat(20)}` },
      'claims.job_workflow_ref',
      /lower-case/,
    ],
    [
      'an environment with leading whitespace',
      {},
      { environment: ' production' },
      'claims.environment',
      /whitespace/,
    ],
    [
      'an environment with trailing whitespace',
      {},
      { environment: 'production ' },
      'claims.environment',
      /whitespace/,
    ],
    [
      'an environment with a control character',
      {},
      { environment: 'prod\u0007' },
      'claims.environment',
      /control/,
    ],
    ['a 256-character environment', {}, { environment: long(256) }, 'claims.environment', /255/],
    ['a non-numeric repository id', {}, { repository_id: '12a' }, 'claims.repository_id', /digits only/],
    ['a negative owner id', {}, { repository_owner_id: '-1' }, 'claims.repository_owner_id', /digits only/],
    ['an id with a leading zero', {}, { repository_id: '0123' }, 'claims.repository_id', /leading zeros/],
    ['a 21-digit id', {}, { repository_id: '9'.repeat(21) }, 'claims.repository_id', /at most 20/],
    [
      'a repository outside repository_owner',
      {},
      { repository: 'evil/infra', repository_owner: 'acme' },
      'claims.repository',
      /owner evil.*repository_owner is acme/,
    ],
    [
      'a negative max session',
      { max_session_duration_seconds: -1 },
      {},
      'max_session_duration_seconds',
      /0 to 3600/,
    ],
    [
      'a max session above 3600',
      { max_session_duration_seconds: 3601 },
      {},
      'max_session_duration_seconds',
      /0 to 3600/,
    ],
    [
      'a fractional max session',
      { max_session_duration_seconds: 1.5 },
      {},
      'max_session_duration_seconds',
      /whole number/,
    ],
    ['empty permissions', { permissions: [] }, {}, 'permissions', /at least one/],
  ])('rejects %s', (_case, patch, claims, field, message) => {
    const errors = errorsOf(input(patch, claims));
    expect(errors).toHaveLength(1);
    expect(errors[0]!.field).toBe(field);
    expect(errors[0]!.message).toMatch(message);
  });

  it('rejects an omitted issuer when the default is not trusted, and says which issuers are', () => {
    const errors = errorsOf(input(), { trustedIssuers: [GHES], defaultIssuer: GITHUB });
    expect(errors).toEqual([{ field: 'issuer', message: expect.stringContaining(GHES) }]);
    expect(errors[0]!.message).toMatch(/not set/);
  });

  it('reports every error at once', () => {
    const errors = errorsOf(
      input(
        { name: ' x', issuer: 'https://issuer.example', max_session_duration_seconds: 4000, permissions: [] },
        { repository: 'acme/*', ref: 'main', environment: ' prod', repository_id: 'x' },
      ),
    );
    expect(errors.map((e) => e.field)).toEqual([
      'name',
      'issuer',
      'claims.repository',
      'claims.ref',
      'claims.environment',
      'claims.repository_id',
      'max_session_duration_seconds',
      'permissions',
    ]);
  });

  it.each([
    ['environment', 'prod\uD800'],
    ['ref', 'refs/heads/ma\uDC00in'],
    ['job_workflow_ref', `${WORKFLOW}@refs/heads/\uD83Dmain`],
  ] as const)(
    'refuses half of a surrogate pair in claims.%s, which no token holds and storage would alter',
    (field, value) => {
      const errors = errorsOf(input({}, { [field]: value }));
      expect(errors).toEqual([{ field: `claims.${field}`, message: expect.stringMatching(/surrogate/) }]);
    },
  );

  it('takes a character outside the Basic Multilingual Plane, whose surrogates are paired', () => {
    expect(validatePolicy(input({}, { environment: 'prod-\u{1F680}' }), ctx).ok).toBe(true);
  });

  it('does not echo control characters of a rejected value', () => {
    const [error] = errorsOf(input({}, { ref: 'refs/heads/\u001b[31mred' }));
    expect(error!.message).not.toMatch(/\p{Cc}/u);
  });
});

describe('warnings', () => {
  it('warns when any workflow of the repository can use the policy', () => {
    const warnings = warningsOf(input({}, { ref: undefined, repository_id: '632596897' }));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/any workflow in repository acme\/infra/);
    expect(warnings[0]).toMatch(/claims\.ref, claims\.job_workflow_ref or claims\.environment/);
  });

  it('warns when any repository of the owner can use the policy', () => {
    const warnings = warningsOf(
      input({}, { repository: undefined, ref: undefined, repository_owner: 'acme' }),
    );
    expect(warnings).toEqual([expect.stringMatching(/any repository of acme.*add claims\.ref/)]);
  });

  it('an owner with a repository id pins one repository, whatever its name: the warnings say so', () => {
    const warnings = warningsOf(
      input(
        { permissions: ['harden-runner:write'] },
        { repository: undefined, ref: undefined, repository_owner: 'acme', repository_id: '632596897' },
      ),
    );
    expect(warnings).toHaveLength(2);
    for (const warning of warnings) {
      expect(warning).toMatch(/any workflow in the repository of acme with id 632596897/);
      expect(warning).not.toMatch(/any repository of acme/);
    }
  });

  it('adds a write-specific warning for write permissions without ref, workflow or environment', () => {
    const warnings = warningsOf(
      input(
        { permissions: ['harden-runner:write', 'harden-runner:read', 'audit-log:read'] },
        { ref: undefined },
      ),
    );
    expect(warnings).toHaveLength(2);
    expect(warnings[1]).toMatch(/^permissions: harden-runner:write can be obtained by any workflow/);
    expect(warnings[1]).toMatch(/claims\.ref .*claims\.job_workflow_ref or claims\.environment/);
  });

  it.each<[string, PolicyClaims]>([
    ['ref', { ref: 'refs/heads/main' }],
    ['job_workflow_ref', { ref: undefined, job_workflow_ref: `${WORKFLOW}@refs/heads/main` }],
    [
      'a workflow of another repository',
      { ref: undefined, job_workflow_ref: 'acme/shared/.github/workflows/deploy.yml' },
    ],
    ['environment', { ref: undefined, environment: 'production' }],
  ])('does not warn about write permissions narrowed by %s', (_case, claims) => {
    expect(warningsOf(input({ permissions: ['harden-runner:write'] }, claims))).toEqual([]);
  });

  it('warns when write permissions rest on a workflow of the same repository at any ref: a branch can edit it', () => {
    const warnings = warningsOf(
      input({ permissions: ['harden-runner:write'] }, { ref: undefined, job_workflow_ref: WORKFLOW }),
    );
    expect(warnings).toEqual([
      expect.stringMatching(/^claims\.job_workflow_ref: .*no @ref.*acme\/infra.*any branch can change/),
    ]);
    expect(warnings[0]).toMatch(/@refs\/heads\/main/);
    // Read permissions alone are not worth the warning.
    expect(warningsOf(input({}, { ref: undefined, job_workflow_ref: WORKFLOW }))).toEqual([]);
  });

  it('explains the risk of allow_pull_request_target', () => {
    const warnings = warningsOf(input({ allow_pull_request_target: true }));
    expect(warnings).toEqual([expect.stringMatching(/^allow_pull_request_target: .*secrets.*untrusted/)]);
    expect(warnings[0]).toMatch(/set it to false/);
  });

  it.each(['c++.yml', 'deploy(1).yml', 'v1.0.0+build$.yaml'])(
    'accepts the workflow file name %s, whose characters are ordinary in file names, without a warning',
    (file) => {
      const claims = {
        ref: undefined,
        job_workflow_ref: `acme/infra/.github/workflows/${file}@refs/heads/main`,
      };
      expect(warningsOf(input({}, claims))).toEqual([]);
    },
  );

  it('warns that a workflow file name with { is one literal name, not alternatives', () => {
    const claims = { ref: undefined, job_workflow_ref: 'acme/infra/.github/workflows/{deploy,build}.yml' };
    expect(warningsOf(input({}, claims))).toEqual([
      expect.stringMatching(/^claims\.job_workflow_ref \(its file name\): values are compared whole/),
    ]);
  });

  it('warns that a ref with | is one literal value, not alternatives (G13)', () => {
    const warnings = warningsOf(input({}, { ref: 'refs/heads/main|refs/heads/release' }));
    expect(warnings).toEqual([expect.stringMatching(/^claims\.ref: values are compared whole/)]);
  });

  it.each([
    ['a brace alternative in a ref', { ref: 'refs/heads/{main,dev}' }, 'ref'],
    ['a regular expression in a ref', { ref: 'refs/tags/v1.+' }, 'ref'],
    ['a regular expression in an environment', { environment: 'prod.*' }, 'environment'],
    ['a wildcard in an environment', { environment: 'prod-*' }, 'environment'],
    [
      'alternatives in the ref of a job_workflow_ref',
      { job_workflow_ref: 'acme/infra/.github/workflows/deploy.yml@refs/heads/main|refs/heads/dev' },
      'job_workflow_ref \\(its ref\\)',
    ],
  ])('warns that %s is one literal value', (_, claims, field) => {
    const warnings = warningsOf(input({}, claims));
    expect(warnings).toEqual([
      expect.stringMatching(new RegExp(`^claims\\.${field}: values are compared whole`)),
    ]);
  });

  it.each([
    ['environment', 'produc\u200Btion', 'U+200B', '"production"'],
    ['ref', 'refs/heads/\u202Eniam', 'U+202E', '"refs/heads/niam"'],
    [
      'job_workflow_ref',
      'acme/infra/.github/workflows/dep\u2060loy.yml@refs/heads/main',
      'U+2060',
      `"${WORKFLOW}@refs/heads/main"`,
    ],
  ] as const)(
    'warns that claims.%s holds a character no listing shows, naming it',
    (field, value, code, shown) => {
      const warnings = warningsOf(input({}, { [field]: value }));
      const warning = warnings.find((w) => w.startsWith(`claims.${field} holds`));
      expect(warning).toContain(code);
      expect(warning).toContain(`reads as ${shown}`);
      expect(warning).not.toMatch(/\p{Cf}/u);
    },
  );

  it('stays quiet about letters outside ASCII, which a listing shows', () => {
    const warnings = warningsOf(input({}, { environment: 'Produktion-Ä' }));
    expect(warnings.filter((w) => w.startsWith('claims.environment holds'))).toEqual([]);
  });

  it('stays quiet about parentheses and + in ordinary names and tags', () => {
    expect(
      warningsOf(input({}, { environment: 'Production (EU)', ref: 'refs/tags/v1.0.0+build.5' })),
    ).toEqual([]);
  });

  it('does not warn about a narrowly scoped policy', () => {
    expect(warningsOf(input({}, { environment: 'production', job_workflow_ref: WORKFLOW }))).toEqual([]);
  });
});
