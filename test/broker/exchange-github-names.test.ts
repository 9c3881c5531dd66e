// Claims as GitHub writes them, through POST /v1/oidc/token and the dry run: each job gets the same answer from both.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Federation, startFederation } from '../support/federation.js';
import type { ClaimOverrides } from '../support/local-issuer.js';

let f: Federation;

beforeAll(async () => {
  f = await startFederation({ env: { BROKER_RATE_LIMIT_BURST: '100000' } });
});
afterAll(() => f.close());
afterEach(() => f.deletePolicies());

type Body = Record<string, unknown> & { code?: string; detail?: string };

/** Creates a policy through the API, as an admin would, granting harden-runner:read. */
async function createPolicy(claims: Record<string, unknown>, more: Record<string, unknown> = {}) {
  const json = { name: 'p', claims, permissions: ['harden-runner:read'], ...more };
  const res = await f.t.request('POST', '/v1/oidc/policies', { key: f.key, json });
  expect(res.status, await res.clone().text()).toBe(201);
}

/** What the dry run says of a token, and what the exchange then does with it. */
async function outcomes(claims: ClaimOverrides) {
  const token = f.issuer.sign(claims);
  const dry = await f.t.request('POST', '/v1/oidc/policies/evaluate', {
    key: f.key,
    json: { oidc_token: token },
  });
  const dryBody = (await dry.json()) as Body & { decision?: { allowed: boolean; reason?: string } };
  const res = await f.exchange(token);
  const body = (await res.json()) as Body;
  return {
    exchange: { status: res.status, code: body.code ?? 'exchanged', detail: body.detail },
    dryRun: { status: dry.status, decision: dryBody.decision, detail: dryBody.detail },
  };
}

const SHA = '30bace97d4fbcd657d31d2de06068ab14b491473';
// Events that trigger workflows, `deployment` and `deployment_status`: GITHUB_REF is "Branch or tag to be deployed
// (empty if created with a commit SHA)"; the job's token then carries that empty ref, and the workflow at the sha.
const DEPLOYMENT_OF_A_SHA: ClaimOverrides = {
  event_name: 'deployment',
  ref: '',
  ref_type: '',
  environment: 'production',
  job_workflow_ref: `acme/infra/.github/workflows/deploy.yml@${SHA}`,
  workflow_ref: `acme/infra/.github/workflows/deploy.yml@${SHA}`,
};

describe('a job with no branch or tag (a deployment created for a commit sha)', () => {
  it('is exchanged under a policy that names no ref, and the dry run says so', async () => {
    await createPolicy({ repository: 'acme/infra', environment: 'production' });
    const got = await outcomes(DEPLOYMENT_OF_A_SHA);
    expect(got.exchange).toMatchObject({ status: 200, code: 'exchanged' });
    expect(got.dryRun).toMatchObject({ status: 200, decision: { allowed: true, policy: 'p' } });
  });

  it('matches a workflow named without @ref, the sha standing where the ref would', async () => {
    await createPolicy({
      repository: 'acme/infra',
      job_workflow_ref: 'acme/infra/.github/workflows/deploy.yml',
    });
    expect((await outcomes(DEPLOYMENT_OF_A_SHA)).exchange.status).toBe(200);
  });

  it('never matches a policy that requires a ref, in the exchange or the dry run', async () => {
    await createPolicy({ repository: 'acme/infra', ref: 'refs/heads/main' });
    const got = await outcomes(DEPLOYMENT_OF_A_SHA);
    expect(got.exchange).toMatchObject({
      status: 403,
      code: 'no_matching_policy',
      detail: `no trust policy matches acme/infra (no ref, workflow acme/infra/.github/workflows/deploy.yml@${SHA}, environment production)`,
    });
    expect(got.dryRun).toMatchObject({
      status: 200,
      decision: { allowed: false, reason: 'no_matching_policy' },
    });
  });

  it('typed into the dry run, its empty ref is not a token the exchange would refuse', async () => {
    await createPolicy({ repository: 'acme/infra' });
    const res = await f.t.request('POST', '/v1/oidc/policies/evaluate', {
      key: f.key,
      json: { claims: { repository_owner: 'acme', repository: 'acme/infra', ref: '' } },
    });
    const body = (await res.json()) as Body;
    expect(res.status).toBe(200);
    expect(body).toMatchObject({ decision: { allowed: true, policy: 'p' } });
  });

  it('a ref that is absent, or not a string, is still refused as no token GitHub issues', async () => {
    await createPolicy({ repository: 'acme/infra' });
    for (const ref of [undefined, null, 0]) {
      const got = await outcomes({ ref });
      expect(got.exchange).toMatchObject({ status: 401, code: 'invalid_token' });
      expect(got.dryRun.status).toBe(400);
    }
  });
});

describe('a workflow file whose name has spaces (GitHub runs .github/workflows/Build and Deploy.yml)', () => {
  const WORKFLOW = 'acme/infra/.github/workflows/Build and Deploy.yml';

  it('can be pinned by a policy, whose jobs then exchange their tokens; another file cannot', async () => {
    await createPolicy({ repository: 'acme/infra', job_workflow_ref: `${WORKFLOW}@refs/heads/main` });
    const pinned = await outcomes({ job_workflow_ref: `${WORKFLOW}@refs/heads/main` });
    expect(pinned.exchange).toMatchObject({ status: 200, code: 'exchanged' });
    expect(pinned.dryRun).toMatchObject({ decision: { allowed: true, policy: 'p' } });
    for (const other of ['Build and Deploy 2.yml', 'Build  and Deploy.yml', 'BuildandDeploy.yml']) {
      const got = await outcomes({
        job_workflow_ref: `acme/infra/.github/workflows/${other}@refs/heads/main`,
      });
      expect(got.exchange).toMatchObject({ status: 403, code: 'no_matching_policy' });
      expect(got.dryRun).toMatchObject({ decision: { allowed: false, reason: 'no_matching_policy' } });
    }
  });
});

const JWR = 'acme/infra/.github/workflows/deploy.yml';
type Row = [name: string, policy: Record<string, unknown>, token: ClaimOverrides, exchanged: boolean];

/** GitHub's naming rules against the broker's: the exchange and the dry run give each job one answer. */
const NAMING: Row[] = [
  ['a policy in other case finds the repository', { repository: 'Acme/INFRA' }, {}, true],
  ['an owner policy in other case', { repository_owner: 'ACME' }, { repository: 'acme/app' }, true],
  ['an environment in other ASCII case', { environment: 'Production' }, { environment: 'PRODUCTION' }, true],
  ['the Kelvin sign for K in an environment', { environment: 'keys' }, { environment: '\u212Aeys' }, false],
  [
    'a dotted capital I for i in an environment',
    { environment: 'stage-i' },
    { environment: 'stage-\u0130' },
    false,
  ],
  ['ss for ß in an environment', { environment: 'straße' }, { environment: 'STRASSE' }, false],
  ['a decomposed é for a composed one', { environment: 'caf\u00e9' }, { environment: 'cafe\u0301' }, false],
  [
    'a zero-width space in the environment',
    { environment: 'production' },
    { environment: 'produc\u200Btion' },
    false,
  ],
  [
    'a Cyrillic р in the environment',
    { environment: 'production' },
    { environment: '\u0440roduction' },
    false,
  ],
  ['an empty environment', { environment: 'production' }, { environment: '' }, false],
  ['no environment', { environment: 'production' }, { environment: undefined }, false],
  [
    'a branch named as the policy ref plus -evil',
    { ref: 'refs/heads/main' },
    { ref: 'refs/heads/main-evil' },
    false,
  ],
  [
    'a branch the policy ref is a prefix of',
    { ref: 'refs/heads/main' },
    { ref: 'refs/heads/mainline' },
    false,
  ],
  ['a branch named as the policy tag', { ref: 'refs/tags/v1' }, { ref: 'refs/heads/v1' }, false],
  [
    'a merge queue branch for main',
    { ref: 'refs/heads/main' },
    {
      event_name: 'merge_group',
      ref: 'refs/heads/gh-readonly-queue/main/pr-12-30bace97d4fbcd657d31d2de06068ab14b491473',
    },
    false,
  ],
  [
    'the workflow at a sha, for a policy at a branch',
    { job_workflow_ref: `${JWR}@refs/heads/main` },
    { job_workflow_ref: `${JWR}@${SHA}` },
    false,
  ],
  [
    'the workflow at a tag, for a policy at a branch',
    { job_workflow_ref: `${JWR}@refs/heads/v1` },
    { job_workflow_ref: `${JWR}@refs/tags/v1` },
    false,
  ],
  [
    'a re-created repository of the same name',
    { repository_id: '632596897' },
    { repository_id: '732596897' },
    false,
  ],
  [
    'a re-registered owner of the same name',
    { repository_owner_id: '131804563' },
    { repository_owner_id: '231804563' },
    false,
  ],
  ['pull_request_target', {}, { event_name: 'pull_request_target' }, false],
  ['a pull request from a fork', {}, { event_name: 'pull_request', ref: 'refs/pull/12/merge' }, true],
];

describe('GitHub names, through the exchange and the dry run alike', () => {
  it.each(NAMING)('%s', async (_name, claims, token, exchanged) => {
    await createPolicy({ repository_owner: 'acme', ...claims });
    const got = await outcomes(token);
    expect(got.exchange).toMatchObject(
      exchanged ? { status: 200, code: 'exchanged' } : { status: 403, code: 'no_matching_policy' },
    );
    expect(got.dryRun).toMatchObject({
      status: 200,
      decision: exchanged ? { allowed: true, policy: 'p' } : { allowed: false, reason: 'no_matching_policy' },
    });
  });
});
