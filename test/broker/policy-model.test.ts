// DESIGN §4 as a model: a small reference implementation of matching and selection, written from DESIGN.md and
// the README alone, against the broker's exchange and its dry run on seeded random policy sets and GitHub jobs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DESIGN_READS } from '../support/design-catalogue.js';
import { type Federation, startFederation } from '../support/federation.js';
import { GITHUB_ISSUER } from '../support/local-issuer.js';
import { Gen } from '../support/seeded.js';

const GHES = 'https://ghe.example.com/_services/token';
const DEFAULT_SESSION = 900;

let f: Federation;

beforeAll(async () => {
  f = await startFederation({ env: { BROKER_RATE_LIMIT_BURST: '100000' }, alsoTrusted: [GHES] });
});
afterAll(() => f.close());

// ---- The model (DESIGN §4, README "How matching works", "Selection") ----

const FIELDS = [
  'repository_owner',
  'repository',
  'job_workflow_ref',
  'ref',
  'environment',
  'repository_owner_id',
  'repository_id',
] as const;
type Field = (typeof FIELDS)[number];

interface ModelPolicy {
  name: string;
  issuer?: string;
  claims: Partial<Record<Field, string>>;
  permissions: string[];
  max_session_duration_seconds: number;
  allow_pull_request_target: boolean;
}

/** The trust-relevant claims of a job, as GitHub puts them in its token (absent: undefined). */
type Job = Partial<Record<Field | 'iss' | 'event_name', string>>;

interface ModelRequest {
  permissions?: string[];
  policy?: string;
  duration_seconds?: number;
}

type Outcome =
  | { status: 200; policy: string; permissions: string[]; expires_in: number }
  | { status: 403; code: 'no_matching_policy' }
  | { status: 403; code: 'permission_not_allowed'; allowedAfterDropping: string[][] }
  | { status: 409; code: 'ambiguous_policy'; policies: string[] };

// Only A–Z fold (README: owner and repository names are ASCII; other letters match only themselves).
const fold = (s: string) => s.replace(/[A-Z]/g, (c) => c.toLowerCase());
const CASELESS: ReadonlySet<Field> = new Set(['repository_owner', 'repository', 'environment']);

/** The workflow file of a job_workflow_ref: what comes before the `@` that starts its ref (refs/… or a sha). */
function workflowFile(jwr: string): string {
  const at = jwr.search(/@(refs\/|[0-9a-f]{40}$)/);
  return at < 0 ? jwr : jwr.slice(0, at);
}

function mismatchedFields(p: ModelPolicy, job: Job): string[] {
  const out: string[] = [];
  if ((p.issuer ?? GITHUB_ISSUER) !== job.iss) out.push('issuer');
  for (const field of FIELDS) {
    const want = p.claims[field];
    if (want === undefined) continue;
    const have = job[field];
    const equal =
      have !== undefined &&
      (CASELESS.has(field)
        ? fold(want) === fold(have)
        : field === 'job_workflow_ref' && !want.includes('@')
          ? want === workflowFile(have)
          : want === have);
    if (!equal) out.push(field);
  }
  if (job.event_name === 'pull_request_target' && !p.allow_pull_request_target) out.push('event_name');
  return out;
}

// DESIGN §2: every category has :read; `read-all` stands for all of them (every category is enabled here).
const READS = DESIGN_READS;

const specificity = (p: ModelPolicy) => Object.keys(p.claims).length;

// write implies read
function allows(p: ModelPolicy, permission: string): boolean {
  return (
    p.permissions.includes(permission) ||
    (permission.endsWith(':read') && p.permissions.includes(permission.replace(/:read$/, ':write')))
  );
}

/** The permissions a grant carries: each :write with the :read it implies. */
function withReads(permissions: readonly string[]): string[] {
  return [
    ...new Set(permissions.flatMap((p) => (p.endsWith(':write') ? [p, p.replace(/:write$/, ':read')] : [p]))),
  ];
}

/** The requested permissions, `read-all` standing for every :read. */
function requestedOf(request: ModelRequest): string[] {
  return [...new Set((request.permissions ?? []).flatMap((p) => (p === 'read-all' ? READS : [p])))];
}

function model(policies: ModelPolicy[], job: Job, request: ModelRequest): Outcome {
  const considered = request.policy
    ? policies.filter((p) => p.name.toLowerCase() === request.policy!.toLowerCase())
    : policies;
  const matching = considered.filter((p) => mismatchedFields(p, job).length === 0);
  if (matching.length === 0) return { status: 403, code: 'no_matching_policy' };
  const requested = requestedOf(request);
  const candidates = matching.filter((p) => requested.every((r) => allows(p, r)));
  if (candidates.length === 0) {
    // Any matching policy's shortfall is a fair answer; the broker names the smallest.
    const shortfalls = matching.map((p) => requested.filter((r) => !allows(p, r)));
    return { status: 403, code: 'permission_not_allowed', allowedAfterDropping: shortfalls };
  }
  const top = Math.max(...candidates.map(specificity));
  const tied = candidates.filter((p) => specificity(p) === top);
  if (tied.length > 1) return { status: 409, code: 'ambiguous_policy', policies: tied.map((p) => p.name) };
  const chosen = tied[0]!;
  const cap = Math.min(chosen.max_session_duration_seconds || DEFAULT_SESSION, 3600);
  return {
    status: 200,
    policy: chosen.name,
    permissions: withReads(requested.length > 0 ? requested : chosen.permissions),
    expires_in: Math.min(request.duration_seconds ?? cap, cap),
  };
}

// ---- A seeded generator of GitHub-shaped worlds ----

class WorldGen extends Gen {
  /** The same name in another case, as a GitHub name may be typed. */
  recase(s: string): string {
    return this.pick([s, s.toUpperCase(), s.charAt(0).toUpperCase() + s.slice(1)]);
  }
}

/**
 * Repositories as they are now. acme/infra (id 11) was renamed from acme/infrastructure, another acme/infra was
 * deleted and re-created (id 99 belongs to the old one, so no job carries it), newco/infra is acme/infra
 * transferred to another owner (the same repository id, another owner id), and acme-inc/web is acme/web after
 * its owner was renamed (the same ids).
 */
const REPOS = [
  { repository: 'acme/infra', owner: 'acme', ownerId: '1001', id: '11' },
  { repository: 'acme/web', owner: 'acme', ownerId: '1001', id: '12' },
  { repository: 'acme/infra-v2', owner: 'acme', ownerId: '1001', id: '11' }, // renamed
  { repository: 'newco/infra', owner: 'newco', ownerId: '3003', id: '11' }, // transferred
  { repository: 'acme-inc/web', owner: 'acme-inc', ownerId: '1001', id: '12' }, // its owner renamed
  { repository: 'globex/infra', owner: 'globex', ownerId: '2002', id: '21' },
] as const;
const POLICY_REPOS = ['acme/infra', 'acme/web', 'acme/infrastructure', 'newco/infra', 'globex/infra'];
const OWNERS = [
  ['acme', '1001'],
  ['newco', '3003'],
  ['globex', '2002'],
  ['acme-inc', '1001'],
] as const;
const REFS = ['refs/heads/main', 'refs/heads/dev', 'refs/tags/main', 'refs/tags/v1', 'refs/pull/7/merge'];
const FILES = ['deploy.yml', 'release.yml', 'deploy.yml@x.yml'];
// Letters outside A–Z match only themselves: ÜBERGABE is not Übergabe, STRASSE is not Straße.
const ENVIRONMENTS = ['production', 'staging', 'übergabe', 'straße'];
const EVENTS = ['push', 'pull_request', 'pull_request_target', 'workflow_dispatch', 'release'];
const SHA = '30bace97d4fbcd657d31d2de06068ab14b491473';
const PERMISSIONS = ['harden-runner:read', 'harden-runner:write', 'audit-log:read', 'secure-registry:read'];

function randomJob(g: WorldGen): Job {
  const repo = g.pick(REPOS);
  // GitHub spells a name as its owner does; a job may see it in any case the account was registered with.
  const ownerSpelling = g.chance(0.2) ? g.recase(repo.owner) : repo.owner;
  const repository = `${ownerSpelling}/${repo.repository.split('/')[1]}`;
  const ref = g.chance(0.1) ? '' : g.pick(REFS);
  // The job's own workflow, or a reusable one of acme/shared, at its ref or pinned to a sha.
  const workflowRepo = g.chance(0.8) ? repository : 'acme/shared';
  const at = ref === '' || g.chance(0.1) ? SHA : workflowRepo === repository ? ref : 'refs/heads/main';
  return {
    iss: g.chance(0.9) ? GITHUB_ISSUER : GHES,
    repository_owner: ownerSpelling,
    repository_owner_id: repo.ownerId,
    repository,
    repository_id: repo.id,
    ref,
    job_workflow_ref: `${workflowRepo}/.github/workflows/${g.pick(FILES)}@${at}`,
    environment: g.chance(0.4) ? undefined : g.recase(g.pick(ENVIRONMENTS)),
    event_name: g.chance(0.05) ? undefined : g.pick(EVENTS),
  };
}

/** A policy written with the job in mind most of the time, so that matches, ties and near misses are common. */
function randomPolicy(g: WorldGen, name: string, job: Job): ModelPolicy {
  const near = g.chance(0.7);
  const value = (own: string | undefined, others: readonly string[]) =>
    near && own !== undefined && own !== '' && g.chance(0.75) ? own : g.pick(others);
  const claims: Partial<Record<Field, string>> = {};
  const repository = value(job.repository, POLICY_REPOS);
  const owner = repository.split('/')[0]!;
  const which = g.int(3); // owner only, repository only, or both
  if (which !== 1) claims.repository_owner = g.recase(owner);
  if (which !== 0) claims.repository = g.recase(repository);
  if (g.chance(0.35)) claims.ref = value(job.ref, REFS);
  if (g.chance(0.25)) {
    const jobFile = job.job_workflow_ref === undefined ? undefined : workflowFile(job.job_workflow_ref);
    // A policy cannot name a workflow file holding `@` (it would read as the start of the ref).
    const file =
      near && jobFile && !jobFile.includes('@') && g.chance(0.7)
        ? jobFile
        : `${g.chance(0.8) ? repository : 'acme/shared'}/.github/workflows/${g.pick(FILES.slice(0, 2))}`;
    const at = g.chance(0.5)
      ? ''
      : `@${value(job.job_workflow_ref?.slice(jobFile!.length + 1), [...REFS, SHA])}`;
    claims.job_workflow_ref = `${file}${at}`;
  }
  if (g.chance(0.3)) claims.environment = g.recase(value(job.environment?.toLowerCase(), ENVIRONMENTS));
  const ownerId = OWNERS.find(([o]) => o === owner.toLowerCase())![1];
  if (g.chance(0.2)) claims.repository_owner_id = ownerId;
  if (g.chance(0.2)) claims.repository_id = value(job.repository_id, ['11', '12', '21', '99']);
  const permissions = g.subset(PERMISSIONS, 0.5);
  return {
    name,
    ...(g.chance(0.1) ? { issuer: GHES } : {}),
    claims,
    permissions: permissions.length > 0 ? permissions : [g.pick(PERMISSIONS)],
    max_session_duration_seconds: g.pick([0, 0, 60, 600, 3600]),
    allow_pull_request_target: g.chance(0.3),
  };
}

interface Case {
  seed: number;
  policies: ModelPolicy[];
  job: Job;
  request: ModelRequest;
}

function randomCase(seed: number): Case {
  const g = new WorldGen(seed);
  const job = randomJob(g);
  const policies = Array.from({ length: 1 + g.int(4) }, (_, i) => randomPolicy(g, `policy-${i}`, job));
  const request: ModelRequest = {};
  if (g.chance(0.5)) {
    const wanted = g.subset(
      PERMISSIONS.filter((p) => p !== 'secure-registry:read'),
      0.4,
    );
    if (g.chance(0.1)) wanted.push('read-all');
    if (wanted.length > 0) request.permissions = wanted;
  }
  if (g.chance(0.25)) request.policy = g.recase(g.chance(0.9) ? g.pick(policies).name : 'nope');
  if (g.chance(0.4)) request.duration_seconds = g.pick([30, 900, 3600]);
  return { seed, policies, job, request };
}

// ---- The broker, through its HTTP API ----

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

async function call(method: string, path: string, json: unknown): Promise<Answer> {
  const res = await f.t.request(method, path, { key: f.key, json });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const sorted = (items: readonly string[]) => [...items].sort();

/** What the model expects, in the shape the exchange answers. */
function expectExchange(outcome: Outcome, answer: Answer, label: string): void {
  const { status, body } = answer;
  expect({ status, code: body.code }, label).toEqual({
    status: outcome.status,
    code: outcome.status === 200 ? undefined : outcome.code,
  });
  switch (outcome.status) {
    case 200:
      expect(
        {
          policy: body.policy,
          permissions: sorted(body.permissions as string[]),
          expires_in: body.expires_in,
        },
        label,
      ).toEqual({
        policy: outcome.policy,
        permissions: sorted(outcome.permissions),
        expires_in: outcome.expires_in,
      });
      return;
    case 409:
      expect(sorted(body.policies as string[]), label).toEqual(sorted(outcome.policies));
      return;
    default:
      if (outcome.code === 'permission_not_allowed') {
        // One matching policy's shortfall, and the smallest there is.
        const named = sorted(body.not_allowed as string[]);
        const shortfalls = outcome.allowedAfterDropping.map(sorted);
        expect(shortfalls, label).toContainEqual(named);
        expect(named.length, label).toBe(Math.min(...shortfalls.map((s) => s.length)));
      }
      // A denial names no policy (DESIGN §5: never another policy's values).
      expect(body, label).not.toHaveProperty('policies');
  }
}

/** The dry run's decision, in the exchange's shape, for comparing the two. */
function decisionAsExchange(decision: Record<string, unknown>): Record<string, unknown> {
  if (decision.allowed) {
    return {
      policy: decision.policy,
      permissions: sorted(decision.permissions as string[]),
      expires_in: decision.duration_seconds,
    };
  }
  return {
    code: decision.reason,
    ...(decision.not_allowed ? { not_allowed: sorted(decision.not_allowed as string[]) } : {}),
    ...(decision.tied_policies ? { policies: sorted(decision.tied_policies as string[]) } : {}),
  };
}

function exchangeView(answer: Answer): Record<string, unknown> {
  const { body } = answer;
  if (answer.status === 200) {
    return {
      policy: body.policy,
      permissions: sorted(body.permissions as string[]),
      expires_in: body.expires_in,
    };
  }
  return {
    code: body.code,
    ...(body.not_allowed ? { not_allowed: sorted(body.not_allowed as string[]) } : {}),
    ...(body.policies ? { policies: sorted(body.policies as string[]) } : {}),
  };
}

interface DryRunPolicy {
  name: string;
  matched: boolean;
  mismatches: { field: string }[];
  specificity: number;
  missing_permissions: string[];
  considered: boolean;
  selected: boolean;
}

async function runCase(c: Case): Promise<void> {
  const label = `seed ${c.seed}: ${JSON.stringify({ policies: c.policies, job: c.job, request: c.request })}`;
  // Through the admin API, so that every generated policy is one its validation accepts; in parallel, since each
  // write waits for a group commit.
  const previous = (await call('GET', '/v1/oidc/policies', undefined)).body.policies as { id: string }[];
  await Promise.all(previous.map((p) => f.t.request('DELETE', `/v1/oidc/policies/${p.id}`, { key: f.key })));
  const created = await Promise.all(c.policies.map((p) => call('POST', '/v1/oidc/policies', p)));
  for (const answer of created) expect(answer.status, `${label}\n${JSON.stringify(answer.body)}`).toBe(201);
  const outcome = model(c.policies, c.job, c.request);

  // Every policy's verdict in the dry run is the model's, field by field.
  const claims = Object.fromEntries(Object.entries(c.job).filter(([, v]) => v !== undefined));
  const dry = await call('POST', '/v1/oidc/policies/evaluate', { claims, ...c.request });
  expect(dry.status, `${label}\n${JSON.stringify(dry.body)}`).toBe(200);
  const reported = dry.body.policies as DryRunPolicy[];
  const byName = (name: string) => reported.find((r) => r.name === name)!;
  for (const p of c.policies) {
    const r = byName(p.name);
    const considered = !c.request.policy || p.name.toLowerCase() === c.request.policy.toLowerCase();
    expect(
      {
        name: p.name,
        mismatched: sorted(r.mismatches.map((m) => m.field)),
        specificity: r.specificity,
        missing: sorted(r.missing_permissions),
        considered: r.considered,
      },
      label,
    ).toEqual({
      name: p.name,
      mismatched: sorted(mismatchedFields(p, c.job)),
      specificity: specificity(p),
      missing: sorted(requestedOf(c.request).filter((wanted) => !allows(p, wanted))),
      considered,
    });
    expect(r.matched, label).toBe(mismatchedFields(p, c.job).length === 0);
    expect(r.selected, label).toBe(outcome.status === 200 && outcome.policy === p.name);
  }

  // The exchange answers as the model says; the dry run, with claims or with the token, says the same.
  const token = f.issuer.sign({ ...c.job, sub: `repo:${c.job.repository}:ref:${c.job.ref}` });
  const dryToken = await call('POST', '/v1/oidc/policies/evaluate', { oidc_token: token, ...c.request });
  const res = await f.exchange(token, { ...c.request });
  const exchanged = { status: res.status, body: (await res.json()) as Record<string, unknown> };
  expectExchange(outcome, exchanged, `${label}\n${JSON.stringify(exchanged.body)}`);
  const view = exchangeView(exchanged);
  expect(decisionAsExchange(dry.body.decision as Record<string, unknown>), label).toEqual(view);
  expect(decisionAsExchange(dryToken.body.decision as Record<string, unknown>), label).toEqual(view);
  if (outcome.status !== 200) await expectAudited(c, token, label);
}

/**
 * A refusal's audit event lists, with each mismatched field, the policies considered: the one the job names,
 * whatever it is written for, or else the policies of the job's issuer written for its repository or its whole
 * owner (README, "Why was my workflow denied?").
 */
async function expectAudited(c: Case, token: string, label: string): Promise<void> {
  const res = await f.t.request('GET', '/v1/audit-events?type=token.exchange_denied&limit=1', { key: f.key });
  const [event] = ((await res.json()) as { events: { details: Record<string, unknown> }[] }).events;
  const { jti } = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { jti: string };
  expect(event?.details.oidc_jti, label).toBe(jti);
  const audited = event!.details.policies as { name: string; mismatches: { field: string }[] }[];
  const ownerOf = (p: ModelPolicy) => p.claims.repository_owner ?? p.claims.repository!.split('/')[0]!;
  const considered = c.request.policy
    ? c.policies.filter((p) => p.name.toLowerCase() === c.request.policy!.toLowerCase())
    : c.policies.filter(
        (p) =>
          (p.issuer ?? GITHUB_ISSUER) === c.job.iss &&
          fold(ownerOf(p)) === fold(c.job.repository_owner!) &&
          (p.claims.repository === undefined || fold(p.claims.repository) === fold(c.job.repository!)),
      );
  expect(
    sorted(audited.map((a) => `${a.name}: ${sorted(a.mismatches.map((m) => m.field)).join(' ')}`)),
    label,
  ).toEqual(sorted(considered.map((p) => `${p.name}: ${sorted(mismatchedFields(p, c.job)).join(' ')}`)));
}

describe('the broker selects as the model of DESIGN §4 does', () => {
  it('on seeded random policy sets and jobs: the exchange, the dry run of claims and of the token agree', async () => {
    for (let seed = 1; seed <= 200; seed++) await runCase(randomCase(seed));
  });
});
